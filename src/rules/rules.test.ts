// The rules file through a real caje process (src/main.ts): each rule kind, the
// explain API, SIGHUP reload, and refusal to start on a file with mistakes.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startOrigin, tempDir, waitFor, type TestOrigin } from '../test-support/servers.ts'
import { untilPrinted } from '../test-support/caje-process.ts'

const TOKEN = 'rules-test-token-0123456789abcdef'
const auth = { authorization: `Bearer ${TOKEN}`, accept: 'application/json' }

interface Caje {
  child: ChildProcessWithoutNullStreams
  out: () => string
  url: string
}

async function startCaje(env: Record<string, string>): Promise<Caje> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { env: { ...process.env, PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_NODE_ID: 'rules-test', CAJE_POPULATE_INTERVAL: '0', CAJE_API_TOKEN: TOKEN, CAJE_ADMIN_PASSWORD: 'correct horse battery', ...env } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  await untilPrinted(child, () => /caje is listening on (http:\/\/\S+)/.test(out))
  return { child, out: () => out, url: /caje is listening on (http:\/\/\S+)/.exec(out)?.[1] ?? '' }
}

async function stop(c: Caje | undefined): Promise<void> {
  if (!c || c.child.exitCode !== null) return
  const exited = new Promise((resolve) => c.child.once('exit', resolve))
  c.child.kill('SIGTERM')
  await exited
}

/** GET, body read; returns status, Cache-Status and Cache-Control. */
async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; cacheStatus: string; cacheControl: string | null; body: string }> {
  const res = await fetch(url, { headers })
  const body = await res.text()
  return { status: res.status, cacheStatus: res.headers.get('cache-status') ?? '', cacheControl: res.headers.get('cache-control'), body }
}

/** Request the URL until it is answered from cache (a store commits after its response). */
async function untilHit(url: string, headers: Record<string, string> = {}): Promise<string> {
  let last = ''
  await waitFor(async () => /; hit/.test((last = (await get(url, headers)).cacheStatus)), `a hit for ${url}`)
  return last
}

const RULES = (origin: string) => `# yaml-language-server: $schema=../caje.schema.json
origin: ${origin}
sites:
  - host: www.site.test
    origin: ${origin}/
    rules:
      - name: site-api
        match: { path: /api/ }
        bypass: true
rules:
  - name: tracking
    cache_key: { drop_query: [utm_*, fbclid], sort_query: true }
    continue: true
  - name: logged-in
    match: { cookie: session }
    bypass: true
  - name: api
    match: { path: /api/ }
    bypass: true
  - name: forced
    match: { path: /forced }
    edge_ttl: { seconds: 600, mode: force }
  - name: defaulted
    match: { path: [/default] }
    edge_ttl: { seconds: 600, mode: default }
  - name: browser
    match: { path: /browser }
    browser_ttl: 30
  - name: images
    match: { path_glob: /img/*, content_type: image/* }
    edge_ttl: { seconds: 600, mode: force }
  - name: errors
    match: { status: [404, "500-504"] }
    status_ttl: { "404": 60, "500-504": 5 }
  - name: swr
    match: { path: /swr }
    stale_while_revalidate: 60
  - name: sie
    match: { path: /sie }
    stale_if_error: 600
  - name: by-lang
    match: { path: /lang }
    cache_key: { headers: [x-lang], ignore_query: true }
  - name: blog
    match: { path_glob: /blog/:slug, method: GET }
    tags: [blog, "post-:slug"]
  - name: get-keyed
    match: { path: /getkey, method: GET }
    cache_key: { ignore_query: true }
`

describe('rules file, through a real caje process', () => {
  let origin: TestOrigin
  let caje: Caje | undefined
  let dir: string
  let sieFails = false

  beforeAll(async () => {
    origin = await startOrigin((req, res) => {
      const p = new URL(req.url ?? '/', 'http://x').pathname
      const send = (status: number, headers: Record<string, string>, body = `${p} ${req.headers['x-lang'] ?? ''}`) => {
        res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers })
        res.end(body)
      }
      if (p.startsWith('/api/') || p === '/search' || p.startsWith('/blog/') || p.startsWith('/lang') || p === '/getkey') return send(200, { 'cache-control': 'max-age=600' })
      if (p === '/forced') return send(200, { 'cache-control': 'private, no-store' })
      if (p === '/default') return send(200, {})
      if (p === '/default-no-store') return send(200, { 'cache-control': 'no-store' })
      if (p === '/browser') return send(200, { 'cache-control': 'max-age=600' })
      if (p === '/browser-etag') return send(200, { 'cache-control': 'max-age=600', etag: '"b1"' })
      if (p === '/img/a.png') return send(200, { 'content-type': 'image/png' })
      if (p === '/img/a.html') return send(200, { 'content-type': 'text/html' })
      if (p === '/missing') return send(404, {})
      if (p === '/broken') return send(503, {})
      if (p === '/swr') return send(200, { 'cache-control': 'max-age=0' })
      if (p === '/sie') return sieFails ? send(500, {}) : send(200, { 'cache-control': 'max-age=0', etag: '"v1"' })
      send(200, {})
    })
    dir = await tempDir()
    await fs.writeFile(path.join(dir, 'caje.yml'), RULES(origin.url))
    caje = await startCaje({ CAJE_CONFIG: path.join(dir, 'caje.yml'), CAJE_DATA_DIR: path.join(dir, 'data') })
    expect(caje.url, caje.out()).not.toBe('')
  }, 40_000)

  afterAll(async () => {
    await stop(caje)
    await origin?.close()
  })

  it('bypass: by path and by cookie, never stored or served from cache, named in Cache-Status', async () => {
    const a = await get(`${caje!.url}/api/x`)
    expect(a.cacheStatus).toBe('caje; fwd=bypass; fwd-status=200; detail=rule:api')
    await get(`${caje!.url}/api/x`)
    expect(origin.count('/api/x')).toBe(2)
    // The same page is cached without the cookie, bypassed with it.
    await untilHit(`${caje!.url}/blog/hello`)
    const before = origin.count('/blog/hello')
    const withCookie = await get(`${caje!.url}/blog/hello`, { cookie: 'theme=dark; session=abc' })
    expect(withCookie.cacheStatus).toBe('caje; fwd=bypass; fwd-status=200; detail=rule:logged-in')
    expect(origin.count('/blog/hello')).toBe(before + 1)
  })

  it('edge TTL: force stores whatever the origin says; default only fills in a missing lifetime', async () => {
    const first = await get(`${caje!.url}/forced`)
    expect(first.cacheStatus).toMatch(/fwd=uri-miss; fwd-status=200; stored; detail=rule:forced$/)
    // The browser still gets the origin's own Cache-Control.
    expect(first.cacheControl).toBe('private, no-store')
    expect(await untilHit(`${caje!.url}/forced`)).toMatch(/^caje; hit; (collapsed; )?ttl=\d+; detail=rule:forced$/)

    expect((await get(`${caje!.url}/default`)).cacheStatus).toMatch(/stored; detail=rule:defaulted/)
    await untilHit(`${caje!.url}/default`)
    // default mode keeps the origin's no-store.
    expect((await get(`${caje!.url}/default-no-store`)).cacheStatus).toBe('caje; fwd=uri-miss; fwd-status=200; detail="rule:defaulted no-store"')
  })

  it('browser TTL replaces the Cache-Control sent to clients, from the origin and from cache', async () => {
    const first = await get(`${caje!.url}/browser`)
    expect(first.cacheControl).toBe('max-age=30')
    await untilHit(`${caje!.url}/browser`)
    expect((await get(`${caje!.url}/browser`)).cacheControl).toBe('max-age=30')
  })

  it("a client's If-None-Match answered on a miss gets a 304 with the origin's Cache-Control; the 200 gets the browser TTL", async () => {
    const notModified = await get(`${caje!.url}/browser-etag?a`, { 'if-none-match': '"b1"' })
    expect(notModified.status).toBe(304)
    expect(notModified.cacheStatus).toMatch(/^caje; fwd=uri-miss; fwd-status=200; stored; detail=rule:browser$/)
    expect(notModified.cacheControl).toBe('max-age=600')
    const full = await get(`${caje!.url}/browser-etag?b`)
    expect(full.status).toBe(200)
    expect(full.cacheControl).toBe('max-age=30')
  })

  it('TTL by status keeps 404s and 5xx for their own seconds; content type decides with the response', async () => {
    expect((await get(`${caje!.url}/missing`)).cacheStatus).toMatch(/fwd-status=404; stored; detail=rule:errors/)
    expect(await untilHit(`${caje!.url}/missing`)).toMatch(/ttl=(59|60); detail=rule:errors/)
    expect((await get(`${caje!.url}/broken`)).cacheStatus).toMatch(/fwd-status=503; stored; detail=rule:errors/)
    expect(await untilHit(`${caje!.url}/broken`)).toMatch(/ttl=[45]; detail=rule:errors/)

    expect((await get(`${caje!.url}/img/a.png`)).cacheStatus).toMatch(/stored; detail=rule:images/)
    const html = await get(`${caje!.url}/img/a.html`)
    expect(html.cacheStatus).toBe('caje; fwd=uri-miss; fwd-status=200; detail=no-explicit-freshness')
  })

  it('stale-while-revalidate and stale-if-error defaults where the origin sends none', async () => {
    expect((await get(`${caje!.url}/swr`)).cacheStatus).toMatch(/stored; detail=rule:swr/)
    expect(await untilHit(`${caje!.url}/swr`)).toMatch(/^caje; hit; ttl=-?\d+; detail="rule:swr stale-while-revalidate"/)

    expect((await get(`${caje!.url}/sie`)).cacheStatus).toMatch(/stored/)
    await waitFor(async () => (await fetch(`${caje!.url}/_caje/explain?url=${encodeURIComponent(`${caje!.url}/sie`)}`, { headers: auth }).then((r) => r.json() as Promise<{ thisNode: unknown[] }>)).thisNode.length === 1, '/sie stored')
    sieFails = true
    const served = await get(`${caje!.url}/sie`)
    expect(served.status).toBe(200)
    expect(served.cacheStatus).toMatch(/fwd=stale; fwd-status=500; ttl=-?\d+; detail="rule:sie stale-if-error"/)
  })

  it('cache key: tracking parameters dropped, the query sorted, a header added; purge by URL matches the key the rule made', async () => {
    const first = await get(`${caje!.url}/search?q=1&utm_source=news&fbclid=x&a=2`)
    const host = new URL(caje!.url).host
    expect(first.cacheStatus).toContain(`key="http://${host}/search?a=2&q=1"`)
    // A rule with `continue` shapes the key without deciding: Cache-Status shows the key, not a rule.
    expect(await untilHit(`${caje!.url}/search?a=2&utm_medium=mail&q=1`)).toMatch(new RegExp(`^caje; hit; (collapsed; )?ttl=\\d+; key="http://${host}/search\\?a=2&q=1"$`))
    expect(origin.count()).toBeGreaterThan(0)
    const fetched = origin.requests.filter((r) => r.url.startsWith('/search')).length
    expect(fetched).toBe(1)
    // The origin still got the parameters the client sent.
    expect(origin.requests.find((r) => r.url.startsWith('/search'))!.url).toContain('utm_source=news')

    const purge = await fetch(`${caje!.url}/_caje/purge`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ url: `${caje!.url}/search?utm_campaign=z&q=1&a=2` }) })
    expect(purge.status).toBe(200)
    expect((await purge.json()) as { removed: number }).toMatchObject({ removed: 1 })
    expect((await get(`${caje!.url}/search?q=1&a=2`)).cacheStatus).toMatch(/fwd=uri-miss/)

    const fr = await get(`${caje!.url}/lang?x=1`, { 'x-lang': 'fr' })
    expect(fr.cacheStatus).toContain(`key="http://${host}/lang#h:x-lang=fr"`)
    await untilHit(`${caje!.url}/lang?y=2`, { 'x-lang': 'fr' })
    const de = await get(`${caje!.url}/lang`, { 'x-lang': 'de' })
    expect(de.cacheStatus).toMatch(/fwd=uri-miss/)
    expect(de.body).toBe('/lang de')
  })

  it('a successful POST invalidates every entry of its URL, however a rule keyed them', async () => {
    const post = async (target: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`${caje!.url}${target}`, { method: 'POST', headers, body: 'changed' })
      await res.text()
      expect(res.headers.get('cache-status')).toBe('caje; fwd=method; fwd-status=200')
    }
    // Keyed by a header: the POST carries one value, and the URL's entries for the others go too.
    await untilHit(`${caje!.url}/lang/post`, { 'x-lang': 'fr' })
    await untilHit(`${caje!.url}/lang/post`, { 'x-lang': 'de' })
    await post('/lang/post', { 'x-lang': 'fr' })
    expect((await get(`${caje!.url}/lang/post`, { 'x-lang': 'de' })).cacheStatus).toMatch(/fwd=uri-miss/)
    expect((await get(`${caje!.url}/lang/post`, { 'x-lang': 'fr' })).cacheStatus).toMatch(/fwd=uri-miss/)
    // Keyed by a rule for GET only (the query ignored): the POST finds what a GET of it is stored under.
    await untilHit(`${caje!.url}/getkey?v=2`)
    await post('/getkey?v=2')
    expect((await get(`${caje!.url}/getkey?v=2`)).cacheStatus).toMatch(/fwd=uri-miss/)
  })

  it('tags from the path: purge by a derived tag', async () => {
    await get(`${caje!.url}/blog/tagged`)
    await untilHit(`${caje!.url}/blog/tagged`)
    const purge = await fetch(`${caje!.url}/_caje/purge`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ tag: 'post-tagged' }) })
    expect(((await purge.json()) as { removed: number }).removed).toBe(1)
    expect((await get(`${caje!.url}/blog/tagged`)).cacheStatus).toMatch(/fwd=uri-miss/)
  })

  it('sites: a host in the file gets its own origin and rules (before the global ones)', async () => {
    const res = await new Promise<{ status: number; cacheStatus: string }>((resolve, reject) => {
      const u = new URL(caje!.url)
      http
        .get({ host: u.hostname, port: u.port, path: '/api/site', headers: { host: 'www.site.test' } }, (r) => {
          r.resume()
          resolve({ status: r.statusCode ?? 0, cacheStatus: String(r.headers['cache-status']) })
        })
        .on('error', reject)
    })
    expect(res).toEqual({ status: 200, cacheStatus: 'caje; fwd=bypass; fwd-status=200; detail=rule:site-api' })
  })

  it('explain: the site, the matching rules, the key, what would be stored, the variants held', async () => {
    await get(`${caje!.url}/blog/explained`)
    await untilHit(`${caje!.url}/blog/explained`)
    const res = await fetch(`${caje!.url}/_caje/explain?url=${encodeURIComponent(`${caje!.url}/blog/explained?utm_source=x`)}`, { headers: auth })
    expect(res.status).toBe(200)
    const e = (await res.json()) as Record<string, unknown>
    const host = new URL(caje!.url).host
    expect(e).toMatchObject({
      matched: ['tracking', 'errors', 'blog'],
      rule: 'blog',
      bypass: false,
      key: `http://${host}/blog/explained`,
      keyChanged: true,
      origin: `${origin.url}/`,
      onOk: { rule: 'blog', tags: ['blog', 'post-explained'] },
      thisNode: [expect.objectContaining({ status: 200, tags: ['blog', 'post-explained'] })],
      rules: { ruleCount: 14, lastError: null },
      lastCacheStatus: { cacheStatus: expect.stringMatching(/^caje; hit/), at: expect.any(Number) },
    })
    await waitFor(async () => ((await (await fetch(res.url, { headers: auth })).json()) as { manifest: unknown[] }).manifest.length === 1, 'the manifest row')
    const site = (await (await fetch(`${caje!.url}/_caje/explain?url=${encodeURIComponent('https://www.site.test/api/x')}`, { headers: auth })).json()) as Record<string, unknown>
    expect(site).toMatchObject({ site: 'www.site.test', matched: ['site-api'], bypass: true })
    const bad = await fetch(`${caje!.url}/_caje/explain?url=not-a-url`, { headers: auth })
    expect(bad.status).toBe(400)
    expect(await bad.text()).toContain('is not an absolute URL')
  })

  it('SIGHUP reloads the file without dropping a connection; a file with mistakes keeps the old rules and says why', async () => {
    // A keep-alive connection opened before the reload keeps working after it.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const u = new URL(caje!.url)
    const viaAgent = () =>
      new Promise<{ cacheStatus: string; socket: unknown }>((resolve, reject) => {
        const req = http.get({ host: u.hostname, port: u.port, path: '/api/keep', agent }, (r) => {
          r.resume()
          r.on('end', () => resolve({ cacheStatus: String(r.headers['cache-status']), socket: req.socket }))
        })
        req.on('error', reject)
      })
    const before = await viaAgent()
    expect(before.cacheStatus).toContain('rule:api')

    const file = path.join(dir, 'caje.yml')
    await fs.writeFile(file, RULES(origin.url).replace('name: api\n', 'name: api-v2\n'))
    caje!.child.kill('SIGHUP')
    expect(await untilPrinted(caje!.child, () => caje!.out().includes('"msg":"rules reloaded"'))).toBe(true)
    const after = await viaAgent()
    expect(after.cacheStatus).toContain('detail=rule:api-v2')
    expect(after.socket).toBe(before.socket)

    await fs.writeFile(file, RULES(origin.url).replace('name: api\n', 'name: api-v3\n').replace('bypass: true\n  - name: forced', 'bypass: maybe\n  - name: forced'))
    caje!.child.kill('SIGHUP')
    expect(await untilPrinted(caje!.child, () => caje!.out().includes('rules reload refused'))).toBe(true)
    expect(caje!.out()).toMatch(/caje\.yml:\d+:\d+: rules\[2\]\.bypass: is \\"maybe\\"; write true or false/)
    expect((await viaAgent()).cacheStatus).toContain('detail=rule:api-v2')
    const status = (await (await fetch(`${caje!.url}/_caje/explain?url=${encodeURIComponent(caje!.url + '/')}`, { headers: auth })).json()) as { rules: { lastError: string } }
    expect(status.rules.lastError).toMatch(/rules\[2\]\.bypass/)

    // The admin's reload button does the same as SIGHUP.
    await fs.writeFile(file, RULES(origin.url))
    const button = await fetch(`${caje!.url}/_caje/rules/reload`, { method: 'POST', headers: auth })
    expect(await button.json()).toMatchObject({ ok: true, ruleCount: 14 })
    expect((await viaAgent()).cacheStatus).toContain('detail=rule:api')
    agent.destroy()
  })
})

describe('a rules file with mistakes', () => {
  it('stops caje at start, naming the file, line and key of each mistake', async () => {
    const dir = await tempDir()
    const file = path.join(dir, 'caje.yml')
    await fs.writeFile(file, 'rules:\n  - name: a\n    match: { paht: /x }\n    edge_ttl: { seconds: -1 }\n')
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { env: { ...process.env, PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_CONFIG: file, CAJE_DATA_DIR: path.join(dir, 'data') } })
    let out = ''
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    expect(code).toBe(2)
    expect(out).toContain(`caje: configuration error: CAJE_CONFIG: ${file}: 2 mistakes:`)
    expect(out).toContain(`${file}:3:14: rules[0].match.paht: unknown key "paht"; did you mean "path"?`)
    expect(out).toContain(`${file}:4:26: rules[0].edge_ttl.seconds: -1 is out of range; write a number from 0 to 2147483647`)
  }, 30_000)
})
