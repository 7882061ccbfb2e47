import { describe, expect, it } from 'vitest'
import { parseRulesText } from './load.ts'
import { compileRules, NO_RULES, type RuleSet } from './match.ts'
import { needsDemoOrigin, originResolver, type OriginSettings } from './origins.ts'

const rules = (yaml: string) => compileRules(parseRulesText('t.yml', yaml))
const url = (s: string) => new URL(s)

describe('the origin for a host', () => {
  // The rules file names a site of its own (a.test) and a default for every other host.
  const file = rules(`
origin: http://file-default.test
sites:
  - { host: [a.test, b.test], origin: "http://file-site.test" }
  - { host: [c.test] }
`)
  const env: OriginSettings = { sites: new Map([['b.test', url('http://env-site.test')]]), origin: url('http://env-default.test') }
  const demo = url('http://demo.test')
  const origin = (settings: OriginSettings, set: RuleSet, host: string, withDemo = true) => originResolver(settings, () => set, withDemo ? demo : undefined)(host)?.host

  it('is CAJE_SITES first, then the file\'s site, then CAJE_ORIGIN, then the file\'s default, then the demo origin', () => {
    expect(origin(env, file, 'b.test')).toBe('env-site.test')
    expect(origin(env, file, 'a.test')).toBe('file-site.test')
    // c.test is a site of the file without an origin of its own: the defaults decide, the environment's first.
    expect(origin(env, file, 'c.test')).toBe('env-default.test')
    expect(origin({ sites: new Map(), origin: undefined }, file, 'c.test')).toBe('file-default.test')
    expect(origin({ sites: new Map(), origin: undefined }, NO_RULES, 'c.test')).toBe('demo.test')
    expect(origin({ sites: new Map(), origin: undefined }, NO_RULES, 'c.test', false)).toBeUndefined()
  })

  it('follows the rules in force at each request (a reload swaps them)', () => {
    let current: RuleSet = NO_RULES
    const resolve = originResolver({ sites: new Map(), origin: undefined }, () => current)
    expect(resolve('a.test')).toBeUndefined()
    current = file
    expect(resolve('a.test')?.host).toBe('file-site.test')
  })

  it('needs the demo origin only when neither the environment nor the file names one', () => {
    expect(needsDemoOrigin({ sites: new Map(), origin: undefined }, NO_RULES)).toBe(true)
    expect(needsDemoOrigin({ sites: new Map(), origin: url('http://o.test') }, NO_RULES)).toBe(false)
    expect(needsDemoOrigin({ sites: new Map([['a.test', url('http://o.test')]]), origin: undefined }, NO_RULES)).toBe(false)
    expect(needsDemoOrigin({ sites: new Map(), origin: undefined }, file)).toBe(false)
  })
})
