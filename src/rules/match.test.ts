import { describe, expect, it } from 'vitest'
import { parseRulesText } from './load.ts'
import { compileRules, fieldsFromKey, globRegExp } from './match.ts'

const rules = (yaml: string) => compileRules(parseRulesText('t.yml', yaml))
const req = (path: string, extra: { host?: string; method?: string; headers?: Record<string, string> } = {}) => ({ scheme: 'https', host: extra.host ?? 'www.example.com', method: extra.method ?? 'GET', path, headers: extra.headers ?? {} })

describe('rule matching', () => {
  it('globs: * one segment, ** any, :name captured', () => {
    expect(globRegExp('/blog/:slug').exec('/blog/hello')?.groups).toEqual({ slug: 'hello' })
    expect(globRegExp('/blog/:slug').test('/blog/a/b')).toBe(false)
    expect(globRegExp('/a/*.css').test('/a/x.css')).toBe(true)
    expect(globRegExp('/a/*.css').test('/a/b/x.css')).toBe(false)
    expect(globRegExp('/assets/**').test('/assets/a/b/c.js')).toBe(true)
    expect(globRegExp('/x.y').test('/xzy')).toBe(false)
  })

  it('without rules, each request gets its own URL as key, one after another', () => {
    const set = rules('origin: http://127.0.0.1:1\n')
    expect(set.match(req('/a')).key).toBe('https://www.example.com/a')
    expect(set.match(req('/a')).key).toBe('https://www.example.com/a')
    expect(set.match(req('/b')).key).toBe('https://www.example.com/b')
    expect(set.match(req('/b', { host: 'other.example.com' })).key).toBe('https://other.example.com/b')
    expect(set.match({ ...req('/b', { host: 'other.example.com' }), scheme: 'http' }).key).toBe('http://other.example.com/b')
  })

  it('the first matching rule decides; continue adds; conditions are all required', () => {
    const set = rules(`
rules:
  - { name: keys, cache_key: { drop_query: [utm_*] }, continue: true }
  - { name: api, match: { path: /api/, method: [POST, GET], header: x-api }, bypass: true }
  - { name: hosts, match: { host: "*.example.com", path_regex: "^/v[0-9]+/" }, edge_ttl: { seconds: 9, mode: force } }
  - { name: never, match: { path: /v1/ }, edge_ttl: { seconds: 1, mode: force } }
`)
    expect(set.match(req('/api/x')).matched).toEqual(['keys'])
    expect(set.match(req('/api/x', { headers: { 'x-api': '1' } }))).toMatchObject({ rule: 'api', bypass: true })
    expect(set.match(req('/api/x', { method: 'HEAD', headers: { 'x-api': '1' } }))).toMatchObject({ rule: 'api' })
    const v1 = set.match(req('/v1/a?utm_x=1&b=2', { host: 'a.b.example.com' }))
    expect(v1).toMatchObject({ rule: 'hosts', matched: ['keys', 'hosts'], key: 'https://a.b.example.com/v1/a?b=2', keyChanged: true })
    expect(v1.response(200, 'text/html')).toMatchObject({ rule: 'hosts', store: { ttl: { seconds: 9, mode: 'force' } } })
    expect(set.match(req('/v1/a', { host: 'example.com' })).rule).toBe('never')
  })

  it('response conditions are resolved with the response, in order', () => {
    const set = rules(`
rules:
  - { name: err, match: { status: ["500-504", 404] }, status_ttl: { "404": 60, "500-504": 5 } }
  - { name: img, match: { content_type: [image/*] }, browser_ttl: 99 }
  - { name: rest, edge_ttl: { seconds: 7, mode: default } }
`)
    const m = set.match(req('/x'))
    expect(m.response(404, undefined)).toMatchObject({ rule: 'err', store: { ttl: { seconds: 60, mode: 'force' } } })
    expect(m.response(503, undefined)).toMatchObject({ rule: 'err', store: { ttl: { seconds: 5 } } })
    expect(m.response(200, 'image/png; q=1')).toMatchObject({ rule: 'img', browserTtl: 99, store: undefined })
    expect(m.response(200, 'text/html')).toMatchObject({ rule: 'rest', store: { ttl: { seconds: 7, mode: 'default' } } })
  })

  it('cache keys: ignore, sort (stable for repeated names), drop, header and cookie values; purge URLs map the same way', () => {
    const set = rules(`
rules:
  - { name: q, match: { path: /q }, cache_key: { sort_query: true, drop_query: [fbclid, "utm_*"], cookies: [currency] } }
  - { name: none, match: { path: /n }, cache_key: { ignore_query: true, headers: [X-Device] } }
`)
    expect(set.match(req('/q?b=1&a=2&a=1&utm_source=x&fbclid=y', { headers: { cookie: 'currency=EUR; session=s' } })).key).toBe('https://www.example.com/q?a=2&a=1&b=1#c:currency=EUR')
    expect(set.match(req('/n?x=1', { headers: { 'x-device': 'mobile' } })).key).toBe('https://www.example.com/n#h:x-device=mobile')
    expect(set.purgeUrl('https://www.example.com/q?utm_medium=z&b=1')).toBe('https://www.example.com/q?b=1')
    expect(set.match(req('/other?utm_a=1')).keyChanged).toBe(false)
    // populate refetches a key with the fields its '#' part stands for, and lands on the same key.
    const key = set.match(req('/n', { headers: { 'x-device': 'tablet 10"' } })).key
    const headers = fieldsFromKey(new URL(key).hash)
    expect(headers).toEqual({ 'x-device': 'tablet 10"' })
    expect(set.match(req('/n', { headers })).key).toBe(key)
    expect(fieldsFromKey(new URL(set.match(req('/q?a=1', { headers: { cookie: 'currency=CHF' } })).key).hash)).toEqual({ cookie: 'currency=CHF' })
  })

  it('remembers matches, and matches long paths afresh without remembering them', () => {
    const set = rules(`
rules:
  - { name: long, match: { path_glob: "/l/:id" }, tags: ["id-:id"] }
  - { name: other, match: { header: x-a }, bypass: true }
`)
    expect(set.match(req('/l/a'))).toBe(set.match(req('/l/a')))
    expect(set.match(req('/l/a', { headers: { 'x-a': '1' } }))).not.toBe(set.match(req('/l/a')))
    const long = `/l/${'x'.repeat(2000)}`
    expect(set.match(req(long))).not.toBe(set.match(req(long)))
    expect(set.match(req(long)).response(200, undefined).tags).toEqual([`id-${'x'.repeat(2000)}`])
  })

  it('the memo tells requests apart by every field and cookie the rules read, by presence or by the value a key holds', () => {
    const set = rules(`
rules:
  - { name: preview, match: { header: [X-Preview] }, bypass: true }
  - { name: logged-in, match: { cookie: session }, bypass: true }
  - { name: keyed, cache_key: { headers: [x-device, X-Tenant], cookies: [currency] } }
`)
    const key = (headers: Record<string, string>) => set.match(req('/p', { headers })).key
    expect(key({})).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=&c:currency=')
    expect(key({ 'x-tenant': 'acme' })).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=acme&c:currency=')
    expect(key({ 'x-tenant': 'globex' })).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=globex&c:currency=')
    expect(key({ 'x-device': 'mobile', 'x-tenant': 'acme' })).toBe('https://www.example.com/p#h:x-device=mobile&h:x-tenant=acme&c:currency=')
    expect(key({ cookie: 'currency=EUR' })).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=&c:currency=EUR')
    expect(key({ cookie: 'currency=CHF; a=1' })).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=&c:currency=CHF')
    // Asked again in another order: the same answers.
    expect(key({ 'x-tenant': 'acme' })).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=acme&c:currency=')
    expect(key({})).toBe('https://www.example.com/p#h:x-device=&h:x-tenant=&c:currency=')
    // Presence decides a condition: any value of X-Preview, and the session cookie but not a name that contains it.
    expect(set.match(req('/p', { headers: { 'x-preview': '1' } })).rule).toBe('preview')
    expect(set.match(req('/p', { headers: { 'x-preview': '' } })).rule).toBe('preview')
    expect(set.match(req('/p', { headers: { cookie: 'session=s' } })).rule).toBe('logged-in')
    expect(set.match(req('/p', { headers: { cookie: 'xsession=s; session_id=2' } })).rule).toBe('keyed')
    expect(set.match(req('/p')).rule).toBe('keyed')
  })

  it('sites: exact hosts before patterns, their rules before the global ones, origins per site', () => {
    const set = rules(`
origin: http://10.0.0.1
sites:
  - { host: [a.test], origin: "http://10.0.0.2", rules: [{ name: a-only, bypass: true }] }
  - { host: ["*.b.test"], rules: [{ name: b-only, match: { path: /b }, bypass: true }] }
rules:
  - { name: all, edge_ttl: { seconds: 1, mode: force } }
`)
    expect(set.origin('a.test')?.href).toBe('http://10.0.0.2/')
    expect(set.origin('x.b.test')).toBeUndefined()
    expect(set.defaultOrigin?.href).toBe('http://10.0.0.1/')
    expect(set.match(req('/', { host: 'a.test' })).rule).toBe('a-only')
    expect(set.match(req('/b', { host: 'x.b.test' })).rule).toBe('b-only')
    expect(set.match(req('/c', { host: 'x.b.test' })).rule).toBe('all')
    expect(set.match(req('/', { host: 'c.test' })).rule).toBe('all')
    expect(set.siteName('x.b.test')).toBe('*.b.test')
  })
})
