import { describe, expect, it } from 'vitest'
import { parseTargetedField } from './cdn-cache-control.ts'
import { decideStore, targetedDirectives } from './policy.ts'

const T = Date.parse('2026-01-01T00:00:00Z')
const parsed = (v: string) => {
  const d = parseTargetedField(v)
  return d && Object.fromEntries(d)
}

describe('CDN-Cache-Control as a Structured Field Dictionary (RFC 9213 §2.1, RFC 8941)', () => {
  it('reads directives of the right type; unknown ones and parameters are ignored', () => {
    expect(parsed('max-age=60, stale-while-revalidate=30, must-revalidate')).toEqual({ 'max-age': '60', 'stale-while-revalidate': '30', 'must-revalidate': true })
    expect(parsed('foobar, max-age=3600')).toEqual({ foobar: true, 'max-age': '3600' })
    expect(parsed('max-age=60;foo=bar')).toEqual({ 'max-age': '60' })
    expect(parsed('private="set-cookie", no-cache')).toEqual({ private: 'set-cookie', 'no-cache': true })
    // A field with no directive caje knows still replaces Cache-Control (RFC 9213 §3.1's `none`).
    expect(parsed('none')).toEqual({ none: true })
    // delta-seconds saturate at 2^31 (RFC 9111 §1.2.2).
    expect(parsed('max-age=99999999999')).toEqual({ 'max-age': '2147483648' })
  })

  it.each([
    ['not a Dictionary (unknown type)', 'max-age=10000, &&&&&'],
    ['a String for an Integer', 'max-age="10000"'],
    ['a Token for an Integer', 'max-age=abc'],
    ['a Decimal for an Integer', 'max-age=1.5'],
    ['a Decimal with a zero fraction', 'max-age=60.0'],
    ['a negative Integer', 'max-age=-1'],
    ['a value for a directive that takes none', 'no-store=1'],
    ['false for a directive that takes none', 'no-store=?0'],
    ['an Inner List', 'max-age=(1 2)'],
    ['upper case keys', 'MaX-aGe=3600'],
    ['a space before =', 'max-age =100'],
    ['a space after =', 'max-age= 100'],
    ['nothing at all', ''],
    ['a trailing comma', 'max-age=60,'],
  ])('ignores the whole field with %s', (_name, value) => {
    expect(parseTargetedField(value)).toBeUndefined()
  })

  it('falls back to Cache-Control when the targeted field is ignored', () => {
    expect(targetedDirectives({ 'cdn-cache-control': 'max-age="10000"', 'cache-control': 'no-store' })).toMatchObject({ source: 'cache-control' })
    const decide = (headers: Record<string, string>) =>
      decideStore(
        { method: 'GET', url: 'http://h/x', headers: { host: 'h' }, requestTime: T },
        { status: 200, headers: { date: new Date(T).toUTCString(), ...headers }, hasSetCookie: false, responseTime: T },
        { cacheSetCookie: false, heuristicFreshness: false },
      )
    expect(decide({ 'cdn-cache-control': 'max-age=10000, &&&&&', 'cache-control': 'no-store' })).toMatchObject({ store: false, reason: 'no-store' })
    expect(decide({ 'cdn-cache-control': 'max-age="10000"', 'cache-control': 'no-store' })).toMatchObject({ store: false, reason: 'no-store' })
    expect(decide({ 'cdn-cache-control': 'max-age =100', 'cache-control': 'max-age=1' })).toMatchObject({ store: true, policy: { lifetime: 1, source: 'cache-control' } })
    expect(decide({ 'cdn-cache-control': 'max-age=3600', 'cache-control': 'no-store' })).toMatchObject({ store: true, policy: { lifetime: 3600, source: 'cdn-cache-control' } })
    expect(decide({ 'cdn-cache-control': 'max-age=1', 'cache-control': 'max-age=3600' })).toMatchObject({ store: true, policy: { lifetime: 1 } })
  })
})
