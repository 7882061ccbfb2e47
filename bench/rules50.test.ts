import { describe, expect, it } from 'vitest'
import { parseRulesText } from '../src/rules/load.ts'
import { compileRules } from '../src/rules/match.ts'
import { RULES50_DECIDING_RULE, rules50 } from './rules50.ts'

describe('the 50-rule bench file', () => {
  it('is valid, has 50 rules, and a /1k hit walks all of them to the last', () => {
    const set = compileRules(parseRulesText('rules50.yml', rules50()))
    expect(set.ruleCount).toBe(50)
    const m = set.match({ scheme: 'http', host: '127.0.0.1:8080', method: 'GET', path: '/1k', headers: { cookie: 'a=b' } })
    expect(m.matched).toEqual(['tracking', RULES50_DECIDING_RULE])
    expect(m.response(200, 'application/octet-stream').rule).toBe(RULES50_DECIDING_RULE)
  })
})
