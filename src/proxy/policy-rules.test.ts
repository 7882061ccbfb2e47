// decideStore with a rule's overrides (rules file): force, default, TTL 0, stale defaults.
import { describe, expect, it } from 'vitest'
import { decideStore, type StoreOverride } from './policy.ts'

const T = Date.parse('2026-01-01T00:00:00Z')

function store(headers: Record<string, string>, override: StoreOverride, opts: { req?: Record<string, string>; setCookie?: boolean; status?: number } = {}) {
  return decideStore(
    { method: 'GET', url: 'http://h/x', headers: { host: 'h', ...opts.req }, requestTime: T },
    { status: opts.status ?? 200, headers: { date: new Date(T).toUTCString(), ...headers }, hasSetCookie: !!opts.setCookie, responseTime: T },
    { cacheSetCookie: false, heuristicFreshness: false },
    override,
  )
}

const force = (seconds: number): StoreOverride => ({ ttl: { seconds, mode: 'force' } })
const byDefault = (seconds: number): StoreOverride => ({ ttl: { seconds, mode: 'default' } })

describe('decideStore with a rule', () => {
  it('force: stores for the rule seconds whatever Cache-Control says, counted from receipt', () => {
    for (const cc of ['no-store', 'private', 'no-cache', 'max-age=5, must-revalidate', 's-maxage=1']) {
      expect(store({ 'cache-control': cc, age: '100' }, force(600)), cc).toMatchObject({ store: true, policy: { lifetime: 600, initialAge: 0, noCache: false, mustRevalidate: false, heuristic: false } })
    }
    expect(store({}, force(60), { status: 404 })).toMatchObject({ store: true, policy: { lifetime: 60 } })
  })

  it('force still protects users: Set-Cookie, Vary: *, Authorization without the origin’s consent, request no-store; 0 keeps nothing', () => {
    expect(store({}, force(60), { setCookie: true })).toMatchObject({ store: false, reason: 'set-cookie' })
    expect(store({ vary: '*' }, force(60))).toMatchObject({ store: false, reason: 'vary-star' })
    expect(store({}, force(60), { req: { authorization: 'Bearer x' } })).toMatchObject({ store: false, reason: 'authorization' })
    expect(store({}, force(60), { req: { 'cache-control': 'no-store' } })).toMatchObject({ store: false, reason: 'request-no-store' })
    expect(store({ 'cache-control': 'max-age=60' }, force(0))).toMatchObject({ store: false, reason: 'rule-ttl-0' })
  })

  it('default: fills in a lifetime the origin left out, keeps the origin’s where it gave one, honours no-store and private', () => {
    expect(store({}, byDefault(300))).toMatchObject({ store: true, policy: { lifetime: 300, heuristic: false } })
    expect(store({ etag: '"a"' }, byDefault(300), { req: { cookie: 'a=1' } })).toMatchObject({ store: true, policy: { lifetime: 300 } })
    expect(store({ 'cache-control': 'max-age=30' }, byDefault(300))).toMatchObject({ store: true, policy: { lifetime: 30 } })
    expect(store({ 'cache-control': 'no-store' }, byDefault(300))).toMatchObject({ store: false, reason: 'no-store' })
    expect(store({ 'cache-control': 'private' }, byDefault(300))).toMatchObject({ store: false, reason: 'private' })
  })

  it('stale-while-revalidate / stale-if-error defaults apply only where the origin sends none (RFC 5861)', () => {
    const d = store({ 'cache-control': 'max-age=0' }, { staleWhileRevalidate: 30, staleIfError: 600 })
    expect(d).toMatchObject({ store: true, policy: { staleWhileRevalidate: 30, staleIfError: 600 } })
    expect(d.store && d.deleteAt).toBe(T + 600_000)
    expect(store({ 'cache-control': 'max-age=60, stale-while-revalidate=5' }, { staleWhileRevalidate: 30 })).toMatchObject({ policy: { staleWhileRevalidate: 5 } })
    // Without the rule, max-age=0 and no validator is not worth keeping.
    expect(store({ 'cache-control': 'max-age=0' }, {})).toMatchObject({ store: false })
  })
})
