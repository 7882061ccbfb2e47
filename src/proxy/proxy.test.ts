import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, waitFor, whenReached, type TestNode, type TestOrigin } from '../test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function setup(handler: Parameters<typeof startOrigin>[0], env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin(handler)
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}


/** Raw GET without fetch's decompression. */
function rawGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

describe('storing and serving', () => {
  it('serves a cacheable response from cache the second time', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain' })
      res.end('hello')
    })
    const first = await node.get('/a')
    expect(first.status).toBe(200)
    expect(await first.text()).toBe('hello')
    expect(first.headers.get('cache-status')).toBe('caje; fwd=uri-miss; fwd-status=200; stored')
    await node.stored('/a')
    const second = await node.get('/a')
    expect(await second.text()).toBe('hello')
    expect(second.headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)
    expect(second.headers.get('age')).toMatch(/^\d+$/)
    expect(second.headers.get('via')).toContain('caje')
    expect(origin.count('/a')).toBe(1)
  })

  it.each([
    ['no-store', { 'cache-control': 'no-store' }, 'no-store'],
    ['private', { 'cache-control': 'private, max-age=60' }, 'private'],
    ['set-cookie', { 'cache-control': 'max-age=60', 'set-cookie': 'sid=1' }, 'set-cookie'],
  ])('does not share %s responses', async (_name, headers, detail) => {
    let n = 0
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, headers as Record<string, string>)
      res.end(`body ${++n}`)
    })
    const a = await node.get('/x')
    expect(a.headers.get('cache-status')).toBe(`caje; fwd=uri-miss; fwd-status=200; detail=${detail}`)
    expect(await a.text()).toBe('body 1')
    const b = await node.get('/x')
    expect(await b.text()).toBe('body 2')
    expect(origin.count('/x')).toBe(2)
  })

  it('does not share a response to a request with Authorization unless the response allows it', async () => {
    const { origin, node } = await setup((req, res) => {
      res.writeHead(200, { 'cache-control': req.url === '/public' ? 'public, max-age=60' : 'max-age=60' })
      res.end(`for ${req.headers.authorization}`)
    })
    await (await node.get('/secret', { headers: { authorization: 'Bearer alice' } })).text()
    const bob = await node.get('/secret', { headers: { authorization: 'Bearer bob' } })
    expect(await bob.text()).toBe('for Bearer bob')
    expect(origin.count('/secret')).toBe(2)
    // `public` explicitly allows a shared cache to store it (RFC 9111 §3.5).
    await (await node.get('/public', { headers: { authorization: 'Bearer alice' } })).text()
    await node.stored('/public')
    const again = await node.get('/public')
    expect(again.headers.get('cache-status')).toMatch(/hit/)
    expect(origin.count('/public')).toBe(1)
  })

  it('keeps Vary variants apart and normalises Accept-Encoding', async () => {
    const { origin, node } = await setup((req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Accept-Language, Accept-Encoding' })
      res.end(`lang=${req.headers['accept-language']}`)
    })
    const get = (lang: string, enc: string) => rawGet(node.url + '/v', { 'accept-language': lang, 'accept-encoding': enc })
    expect((await get('en', 'gzip, br')).body.toString()).toBe('lang=en')
    await node.stored('/v')
    expect((await get('fr', 'gzip, br')).body.toString()).toBe('lang=fr')
    await node.stored('/v', 2)
    const en = await get('en', 'br,gzip')
    expect(en.body.toString()).toBe('lang=en')
    expect(en.headers['cache-status']).toMatch(/^caje; hit/)
    const fr = await get('fr', 'br, gzip')
    expect(fr.body.toString()).toBe('lang=fr')
    expect(fr.headers['cache-status']).toMatch(/^caje; hit/)
    const de = await get('de', 'gzip')
    expect(de.headers['cache-status']).toMatch(/fwd=vary-miss/)
    expect(origin.count('/v')).toBe(3)
  })

  it('answers HEAD from the GET entry', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
      res.end('0123456789')
    })
    await (await node.get('/h')).text()
    await node.stored('/h')
    const head = await node.get('/h', { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe('10')
    expect(head.headers.get('cache-status')).toMatch(/hit/)
    expect(await head.text()).toBe('')
    expect(origin.count('/h')).toBe(1)
  })

  it('answers Range requests with 206 from the cached body', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"r1"' })
      res.end('0123456789')
    })
    await (await node.get('/r')).text()
    await node.stored('/r')
    const part = await node.get('/r', { headers: { range: 'bytes=2-5' } })
    expect(part.status).toBe(206)
    expect(part.headers.get('content-range')).toBe('bytes 2-5/10')
    expect(await part.text()).toBe('2345')
    const suffix = await node.get('/r', { headers: { range: 'bytes=-3' } })
    expect(await suffix.text()).toBe('789')
    const bad = await node.get('/r', { headers: { range: 'bytes=50-60' } })
    expect(bad.status).toBe(416)
    expect(bad.headers.get('content-range')).toBe('bytes */10')
    // rawGet: fetch() would add Cache-Control: no-cache to a request with If-Range.
    const staleIfRange = await rawGet(node.url + '/r', { range: 'bytes=0-1', 'if-range': '"other"' })
    expect(staleIfRange.status).toBe(200)
    expect(staleIfRange.body.toString()).toBe('0123456789')
    const matchingIfRange = await rawGet(node.url + '/r', { range: 'bytes=0-1', 'if-range': '"r1"' })
    expect(matchingIfRange.status).toBe(206)
    expect(origin.count('/r')).toBe(1)
  })

  it('passes gzip bodies through byte-identical with their Content-Encoding', async () => {
    const gz = gzipSync(Buffer.from('compressed body '.repeat(100)))
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-encoding': 'gzip', vary: 'Accept-Encoding', 'content-length': String(gz.length) })
      res.end(gz)
    })
    const miss = await rawGet(node.url + '/gz', { 'accept-encoding': 'gzip' })
    expect(miss.headers['content-encoding']).toBe('gzip')
    expect(miss.body.equals(gz)).toBe(true)
    await node.stored('/gz')
    const hit = await rawGet(node.url + '/gz', { 'accept-encoding': 'gzip' })
    expect(hit.headers['cache-status']).toMatch(/hit/)
    expect(hit.headers['content-encoding']).toBe('gzip')
    expect(hit.body.equals(gz)).toBe(true)
    expect(origin.count('/gz')).toBe(1)
  })

  it('honours CDN-Cache-Control over Cache-Control for its own storage, and passes Cache-Control on', async () => {
    const { origin, node } = await setup((req, res) => {
      if (req.url === '/cdn-only') res.writeHead(200, { 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=60' })
      else res.writeHead(200, { 'cache-control': 'max-age=60', 'cdn-cache-control': 'no-store' })
      res.end('x')
    })
    await (await node.get('/cdn-only')).text()
    await node.stored('/cdn-only')
    const hit = await node.get('/cdn-only')
    expect(hit.headers.get('cache-status')).toMatch(/hit/)
    expect(hit.headers.get('cache-control')).toBe('no-store')
    expect(origin.count('/cdn-only')).toBe(1)

    await (await node.get('/browser-only')).text()
    const again = await node.get('/browser-only')
    expect(again.headers.get('cache-status')).toMatch(/detail=no-store/)
    expect(origin.count('/browser-only')).toBe(2)
  })
})

describe('revalidation and stale content', () => {
  it('revalidates a stale entry with If-None-Match and a 304 refreshes it', async () => {
    let version = 0
    const { origin, node } = await setup((req, res) => {
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=60', 'x-refreshed': 'yes' })
        return res.end()
      }
      version++
      // Age equal to max-age: stored already stale, so the next request must revalidate.
      res.writeHead(200, { 'cache-control': 'max-age=10', age: '10', etag: '"v1"', 'x-refreshed': 'no' })
      res.end(`body v${version}`)
    })
    await (await node.get('/s')).text()
    await node.stored('/s')
    const revalidated = await node.get('/s')
    expect(await revalidated.text()).toBe('body v1')
    expect(revalidated.headers.get('cache-status')).toMatch(/^caje; fwd=stale; fwd-status=304/)
    expect(revalidated.headers.get('x-refreshed')).toBe('yes')
    expect(origin.requests[1]!.headers['if-none-match']).toBe('"v1"')
    const hit = await node.get('/s')
    expect(hit.headers.get('cache-status')).toMatch(/^caje; hit/)
    expect(await hit.text()).toBe('body v1')
    expect(origin.count('/s')).toBe(2)
  })

  it('answers a client If-None-Match on a hit with 304 from cache', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"abc"', 'content-type': 'text/plain' })
      res.end('body')
    })
    await (await node.get('/c')).text()
    await node.stored('/c')
    // rawGet: fetch() would add Cache-Control: no-cache to a conditional request.
    const nm = await rawGet(node.url + '/c', { 'if-none-match': 'W/"abc"' })
    expect(nm.status).toBe(304)
    expect(nm.headers.etag).toBe('"abc"')
    expect(nm.headers['cache-status']).toMatch(/hit/)
    expect(nm.body.length).toBe(0)
    const other = await rawGet(node.url + '/c', { 'if-none-match': '"zzz"' })
    expect(other.status).toBe(200)
    expect(other.body.toString()).toBe('body')
    expect(origin.count('/c')).toBe(1)
  })

  it('serves stale-while-revalidate immediately and refreshes once in the background', async () => {
    let n = 0
    // The revalidation's answer waits for `release`: stale answers must arrive while it is held.
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    const { origin, node } = await setup((_req, res) => {
      n++
      const answer = () => {
        res.writeHead(200, { 'cache-control': 'max-age=10, stale-while-revalidate=60', age: n === 1 ? '11' : '0' })
        res.end(`render ${n}`)
      }
      if (n === 1) answer()
      else void held.then(answer)
    })
    await (await node.get('/swr')).text()
    await node.stored('/swr')
    const key = `http://${new URL(node.url).host}/swr`
    const [first] = await node.store.variants(key)
    // Should serving stale wait for the revalidation, the stale answers never come (the
    // revalidation is held until they are in) and the test fails at its timeout.
    const stale = await Promise.all([node.get('/swr'), node.get('/swr'), node.get('/swr')])
    for (const r of stale) {
      expect(await r.text()).toBe('render 1')
      expect(r.headers.get('cache-status')).toMatch(/hit; ttl=-\d+; detail=stale-while-revalidate/)
    }
    release()
    // One background revalidation for the three stale hits; its answer replaces the entry.
    await whenReached(node.store, async () => (await node.store.variants(key))[0]?.storedAt !== first!.storedAt)
    await node.proxy.idle()
    expect(origin.count('/swr')).toBe(2)
    const fresh = await node.get('/swr')
    expect(await fresh.text()).toBe('render 2')
    expect(fresh.headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)
  })

  it('serves stale-if-error when the origin is down, and 502 when the window is over', async () => {
    const origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'cache-control': req.url === '/sie' ? 'max-age=10, stale-if-error=600' : 'max-age=10', age: '11', etag: '"e"' })
      res.end('still here')
    })
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    await (await node.get('/sie')).text()
    await (await node.get('/plain')).text()
    await origin.close()
    const stale = await node.get('/sie')
    expect(stale.status).toBe(200)
    expect(await stale.text()).toBe('still here')
    expect(stale.headers.get('cache-status')).toMatch(/fwd=stale.*detail=stale-if-error/)
    const down = await node.get('/plain')
    expect(down.status).toBe(502)
    expect(await down.text()).toMatch(/502 Bad Gateway: origin 127\.0\.0\.1:\d+ refused the connection/)
  })

  /** An origin answering `good copy` with `headers` until `fail()`, then 503 `down`. */
  async function failingOrigin(headers: Record<string, string>) {
    let failing = false
    const { node } = await setup((_req, res) => {
      res.writeHead(failing ? 503 : 200, failing ? {} : headers)
      res.end(failing ? 'down' : 'good copy')
    })
    return { node, fail: () => void (failing = true) }
  }

  it('serves stale-if-error when the origin answers 5xx', async () => {
    const { node, fail } = await failingOrigin({ 'cache-control': 'max-age=10, stale-if-error=600', age: '11' })
    await (await node.get('/e')).text()
    fail()
    const r = await node.get('/e')
    expect(r.status).toBe(200)
    expect(await r.text()).toBe('good copy')
    expect(r.headers.get('cache-status')).toMatch(/fwd-status=503.*stale-if-error/)
  })

  it('does not answer a no-cache request from the stored copy when the origin fails: the client asked for the origin', async () => {
    const { node, fail } = await failingOrigin({ 'cache-control': 'max-age=600, stale-if-error=600' })
    await (await node.get('/nc')).text()
    await node.stored('/nc')
    fail()
    for (const headers of [{ 'cache-control': 'no-cache' }, { pragma: 'no-cache' }] as Record<string, string>[]) {
      const r = await node.get('/nc', { headers })
      expect(r.status).toBe(503)
      expect(await r.text()).toBe('down')
      expect(r.headers.get('cache-status')).toBe('caje; fwd=request; fwd-status=503')
    }
    // Without the request's no-cache, the copy is fresh and served as it is.
    const hit = await node.get('/nc')
    expect(await hit.text()).toBe('good copy')
    expect(hit.headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)
  })

  it('a 304 that may not be stored for this request (its Authorization, a Set-Cookie) is served from the stored body once, and the shared entry stays', async () => {
    const { origin, node } = await setup((req, res) => {
      if (req.headers['if-none-match'] === '"e"') {
        res.writeHead(304, { etag: '"e"', 'cache-control': 'max-age=10', ...(req.url === '/cookie' ? { 'set-cookie': 'sess=refreshed; Path=/' } : {}) })
        return res.end()
      }
      res.writeHead(200, { 'cache-control': 'max-age=10', age: '11', etag: '"e"' })
      res.end(`shared ${req.url}`)
    })
    for (const p of ['/auth', '/cookie']) {
      await (await node.get(p)).text()
      await node.stored(p)
    }
    const bob = await node.get('/auth', { headers: { authorization: 'Bearer bob' } })
    expect(await bob.text()).toBe('shared /auth')
    expect(bob.headers.get('cache-status')).toBe('caje; fwd=stale; fwd-status=304; ttl=0')
    expect(origin.count('/auth')).toBe(2) // the fill and one conditional request, no refetch
    expect(await node.store.variants(`http://${new URL(node.url).host}/auth`)).toHaveLength(1)
    // Left as it was (stale): the next request without credentials revalidates it and refreshes it.
    const anon = await node.get('/auth')
    expect(anon.headers.get('cache-status')).toMatch(/^caje; fwd=stale; fwd-status=304; ttl=\d+$/)
    expect((await node.get('/auth')).headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)

    const withCookie = await node.get('/cookie')
    expect(await withCookie.text()).toBe('shared /cookie')
    expect(withCookie.headers.get('set-cookie')).toBe('sess=refreshed; Path=/')
    expect(withCookie.headers.get('cache-status')).toBe('caje; fwd=stale; fwd-status=304; ttl=0')
    // Not refreshed by an answer carrying a cookie, and not dropped: revalidated again, the cookie not replayed from cache.
    const next = await node.get('/cookie')
    expect(next.headers.get('cache-status')).toMatch(/fwd=stale; fwd-status=304/)
    expect(origin.count('/cookie')).toBe(3)
  })

  /** An origin whose first answer (ETag "e", already stale) is `cacheControl`, and whose 304 for it says no-store. */
  const noStoreOn304 = (cacheControl: string, age: string, body: string) =>
    setup((req, res) => {
      const revalidating = req.headers['if-none-match'] === '"e"'
      res.writeHead(revalidating ? 304 : 200, revalidating ? { etag: '"e"', 'cache-control': 'no-store' } : { 'cache-control': cacheControl, age, etag: '"e"' })
      res.end(revalidating ? undefined : body)
    })

  it('a 304 whose headers now forbid storing serves the stored body once, then the entry is gone', async () => {
    const { origin, node } = await noStoreOn304('max-age=10', '11', 'last copy')
    await (await node.get('/ns')).text()
    await node.stored('/ns')
    const once = await node.get('/ns')
    expect(await once.text()).toBe('last copy')
    expect(once.headers.get('cache-status')).toBe('caje; fwd=stale; fwd-status=304; ttl=0')
    expect(origin.count('/ns')).toBe(2)
    const after = await node.get('/ns')
    expect(after.headers.get('cache-status')).toMatch(/fwd=uri-miss/)
  })

  it('a background refresh whose 304 now forbids storing drops the entry', async () => {
    const { origin, node } = await noStoreOn304('max-age=1, stale-while-revalidate=600', '2', 'stale for a while')
    await (await node.get('/bg')).text()
    await node.stored('/bg')
    const stale = await node.get('/bg')
    expect(stale.headers.get('cache-status')).toMatch(/detail=stale-while-revalidate/)
    const key = `http://${new URL(node.url).host}/bg`
    await whenReached(node.store, async () => (await node.store.variants(key)).length === 0)
    expect(origin.count('/bg')).toBe(2)
  })

  it('answers only-if-cached with a 504 when the stored copy must be revalidated, without asking the origin', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=10', age: '11', etag: '"e"' })
      res.end('stale copy')
    })
    await (await node.get('/oic')).text()
    await node.stored('/oic')
    const r = await node.get('/oic', { headers: { 'cache-control': 'only-if-cached' } })
    expect(r.status).toBe(504)
    expect(r.headers.get('cache-status')).toBe('caje; fwd=stale; detail=only-if-cached')
    expect(origin.count('/oic')).toBe(1)
    // A stale copy the request accepts (max-stale) is a stored answer it may have.
    const accepted = await node.get('/oic', { headers: { 'cache-control': 'only-if-cached, max-stale=60' } })
    expect(accepted.status).toBe(200)
    expect(await accepted.text()).toBe('stale copy')
    expect(origin.count('/oic')).toBe(1)
  })

  it('revalidates a soft-purged entry on its next use (a 304 keeps the body), and still serves it under stale-if-error', async () => {
    let fail = false
    let conditional = 0
    const { origin, node } = await setup((req, res) => {
      if (fail) {
        res.writeHead(503)
        return res.end('down')
      }
      if (req.headers['if-none-match'] === '"s1"') {
        conditional++
        res.writeHead(304, { etag: '"s1"', 'cache-control': 'max-age=600, stale-if-error=600' })
        return res.end()
      }
      res.writeHead(200, { 'cache-control': 'max-age=600, stale-if-error=600', etag: '"s1"', 'content-type': 'text/plain' })
      res.end('kept body')
    })
    await (await node.get('/soft')).text()
    await node.stored('/soft')
    expect((await node.get('/soft')).headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)

    const key = `http://${new URL(node.url).host}/soft`
    expect(await node.actions.purge({ kind: 'url', value: key, soft: true })).toEqual({ removed: 1 })
    // Still stored, marked stale: the next request asks the origin with the stored validator.
    const revalidated = await node.get('/soft')
    expect(await revalidated.text()).toBe('kept body')
    expect(revalidated.headers.get('cache-status')).toMatch(/^caje; fwd=stale; fwd-status=304; ttl=\d+; detail=soft-purge$/)
    expect(conditional).toBe(1)
    expect(origin.count('/soft')).toBe(2)
    // The 304 ended the mark: a hit again, without the origin.
    const hit = await node.get('/soft')
    expect(hit.headers.get('cache-status')).toMatch(/^caje; hit; ttl=\d+$/)
    expect(origin.count('/soft')).toBe(2)

    // Soft-purged again, with the origin failing: stale-if-error serves the stored body.
    await node.actions.purge({ kind: 'prefix', value: key, soft: true })
    fail = true
    const stale = await node.get('/soft')
    expect(stale.status).toBe(200)
    expect(await stale.text()).toBe('kept body')
    expect(stale.headers.get('cache-status')).toMatch(/fwd=stale; fwd-status=503;.*detail=stale-if-error/)
  })

  it('a soft purge never serves a must-revalidate entry stale when the origin fails', async () => {
    let fail = false
    const { node } = await setup((_req, res) => {
      if (fail) {
        res.writeHead(500)
        return res.end('broken')
      }
      res.writeHead(200, { 'cache-control': 'max-age=600, must-revalidate, stale-if-error=600', etag: '"m"' })
      res.end('copy')
    })
    await (await node.get('/mr')).text()
    await node.stored('/mr')
    await node.actions.purge({ kind: 'all', soft: true })
    fail = true
    const r = await node.get('/mr')
    expect(r.status).toBe(500)
    expect(r.headers.get('cache-status')).toMatch(/fwd=stale; fwd-status=500; detail=soft-purge/)
  })

  it('never serves stale when must-revalidate forbids it', async () => {
    let fail = false
    const { node } = await setup((_req, res) => {
      if (fail) {
        res.writeHead(500)
        return res.end('broken')
      }
      res.writeHead(200, { 'cache-control': 'max-age=10, must-revalidate, stale-if-error=600', age: '11', etag: '"m"' })
      res.end('copy')
    })
    await (await node.get('/m')).text()
    fail = true
    const r = await node.get('/m')
    expect(r.status).toBe(500)
  })
})

describe('coalescing', () => {
  /**
   * An origin that holds its first answer until `waiters` requests wait for that fill (the
   * proxy's own count), so every request overlaps the first without a timer; later requests
   * are answered at once. `held` is the proxy's count when the first answer was released.
   */
  async function holdingFirstAnswer(waiters: number, answer: (res: http.ServerResponse, n: number) => void) {
    let node: TestNode | undefined
    let n = 0
    const seen: { held?: ReturnType<TestNode['proxy']['stats']> } = {}
    const { origin, node: started } = await setup((_req, res) => {
      const mine = ++n
      if (mine > 1) return answer(res, mine)
      waitFor(() => node?.proxy.stats().fillWaiters === waiters, `${waiters} requests waiting for the fill`, 20_000).then(
        () => {
          seen.held = node!.proxy.stats()
          answer(res, mine)
        },
        (err: Error) => {
          res.writeHead(500)
          res.end(err.message)
        },
      )
    })
    node = started
    return { origin, node, seen }
  }

  it('sends 100 concurrent misses on one URL to the origin once', async () => {
    const { origin, node, seen } = await holdingFirstAnswer(99, (res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('shared')
    })
    const responses = await Promise.all(Array.from({ length: 100 }, () => node.get('/hot')))
    const bodies = await Promise.all(responses.map((r) => r.text()))
    expect(bodies.every((b) => b === 'shared'), bodies.find((b) => b !== 'shared')).toBe(true)
    expect(origin.count('/hot')).toBe(1)
    expect(seen.held).toEqual({ fillsInFlight: 1, fillWaiters: 99 })
    // One request led the fill; the 99 others joined it while the origin was still answering.
    const statuses = responses.map((r) => r.headers.get('cache-status') ?? '')
    expect(statuses.filter((s) => s.includes('fwd=uri-miss')).length).toBe(1)
    expect(statuses.filter((s) => /^caje; hit/.test(s) && s.includes('collapsed')).length).toBe(99)
    expect(node.proxy.stats()).toEqual({ fillsInFlight: 0, fillWaiters: 0 })
    const health = (await (await node.get('/_caje/health')).json()) as { fills: unknown }
    expect(health.fills).toEqual({ fillsInFlight: 0, fillWaiters: 0 })
  })

  it('gives 100 concurrent misses on a Set-Cookie URL each their own response', async () => {
    const { origin, node, seen } = await holdingFirstAnswer(99, (res, mine) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'set-cookie': `session=${mine}` })
      res.end(`user ${mine}`)
    })
    const responses = await Promise.all(Array.from({ length: 100 }, () => node.get('/login')))
    const seenBodies = new Set<string>()
    for (const r of responses) {
      const body = await r.text()
      const cookie = r.headers.get('set-cookie')
      expect(cookie).toBe(`session=${body.slice(5)}`)
      seenBodies.add(body)
    }
    expect(seen.held).toEqual({ fillsInFlight: 1, fillWaiters: 99 })
    // The first answer was not shareable: each of the 99 that waited for it asked the origin itself.
    expect(seenBodies.size).toBe(100)
    expect(origin.count('/login')).toBe(100)
    expect(responses.filter((r) => r.headers.get('cache-status')?.includes('collapsed')).length).toBe(99)
  })
})

describe('unsafe methods', () => {
  it('forwards POST with its body and invalidates the URL and Location', async () => {
    const { origin, node } = await setup((req, res, body) => {
      if (req.method === 'POST') {
        res.writeHead(201, { location: '/items/2' })
        return res.end(`created from ${body}`)
      }
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end(`get ${req.url} #${origin.count(req.url)}`)
    })
    await (await node.get('/items')).text()
    await (await node.get('/items/2')).text()
    await node.stored('/items')
    await node.stored('/items/2')
    expect((await node.get('/items')).headers.get('cache-status')).toMatch(/hit/)
    const post = await node.get('/items', { method: 'POST', body: 'payload', headers: { 'content-type': 'text/plain' } })
    expect(post.status).toBe(201)
    expect(await post.text()).toBe('created from payload')
    expect(post.headers.get('cache-status')).toBe('caje; fwd=method; fwd-status=201')
    const after = await node.get('/items')
    expect(after.headers.get('cache-status')).toMatch(/fwd=uri-miss/)
    const item = await node.get('/items/2')
    expect(item.headers.get('cache-status')).toMatch(/fwd=uri-miss/)
  })

  it("never forwards caje's admin cookies to the origin", async () => {
    const { origin, node } = await setup((_req, res) => res.end('ok'))
    await (await node.get('/page', { headers: { cookie: '__Host-caje_session=secret1; theme=dark; caje_flash=x; caje_session=secret2' } })).text()
    await (await node.get('/other', { headers: { cookie: 'caje_session=only' } })).text()
    expect(origin.requests[0]!.headers.cookie).toBe('theme=dark')
    expect(origin.requests[1]!.headers.cookie).toBeUndefined()
  })

  it('streams large request bodies to the origin', async () => {
    const { node } = await setup((_req, res, body) => {
      res.writeHead(200)
      res.end(String(body.length))
    })
    const big = 'x'.repeat(5 * 1024 * 1024)
    const r = await node.get('/upload', { method: 'PUT', body: big })
    expect(await r.text()).toBe(String(big.length))
  })
})

describe('origin failures', () => {
  it('answers 502 with a clear body when the origin is down', async () => {
    const origin = await startOrigin(() => {})
    await origin.close()
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const r = await node.get('/down')
    expect(r.status).toBe(502)
    expect(r.headers.get('cache-status')).toMatch(/detail=connect/)
    expect(await r.text()).toMatch(/^502 Bad Gateway: origin .* refused the connection/)
  })

  it('answers 504 when the origin is too slow', async () => {
    const { node } = await setup(() => {
      /* never answers */
    }, { CAJE_ORIGIN_TIMEOUT_MS: '300' })
    const r = await node.get('/slow')
    expect(r.status).toBe(504)
    expect(await r.text()).toMatch(/^504 Gateway Timeout: origin .* did not answer in time/)
  })

  it('stores nothing when the origin dies mid-body', async () => {
    let n = 0
    /** The origin's answers to /partial still open, cut once the client has the response head. */
    const open: http.ServerResponse[] = []
    const { origin, node } = await setup((req, res) => {
      if (req.url === '/whole') {
        res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '5' })
        res.end('whole')
        return
      }
      n++
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '100000' })
      res.write(Buffer.alloc(50_000, 1))
      open.push(res)
    })
    /** GET /partial: the origin dies once caje has sent the client a 200 head; whether the body then ended whole or cut. */
    const cutAfterHead = () =>
      new Promise<'whole' | 'cut'>((resolve, reject) => {
        http
          .get(node.url + '/partial', (res) => {
            expect(res.statusCode).toBe(200)
            res.resume()
            res.on('end', () => resolve(res.complete ? 'whole' : 'cut'))
            res.on('error', () => resolve('cut'))
            res.on('close', () => resolve(res.complete ? 'whole' : 'cut'))
            open.shift()?.destroy()
          })
          .on('error', reject)
      })
    expect(await cutAfterHead()).toBe('cut')
    expect(await cutAfterHead()).toBe('cut')
    expect(origin.count('/partial')).toBe(2)
    expect(n).toBe(2)
    // A later page stored: a commit of the partial body, begun before it, would have landed too.
    await (await node.get('/whole')).arrayBuffer()
    await node.stored('/whole')
    expect(await node.store.variants(`http://${new URL(node.url).host}/partial`)).toEqual([])
    expect(node.store.stats().entries).toBe(1)
  })

  it('answers 421 for a host that is not one of the configured sites', async () => {
    const origin = await startOrigin((_req, res) => res.end('site a'))
    cleanups.push(() => origin.close())
    const node = await startNode('', { CAJE_ORIGIN: '', CAJE_SITES: `a.example=${origin.url}` })
    cleanups.push(() => node.close())
    const ok = await rawGet(node.url + '/', { host: 'a.example' })
    expect(ok.body.toString()).toBe('site a')
    const other = await rawGet(node.url + '/', { host: 'b.example' })
    expect(other.status).toBe(421)
    expect(other.body.toString()).toMatch(/no site for host "b.example"/)
  })
})

describe('Cache-Status objects', () => {
  it('every answer carries a status of one shape: all fields, in one order, whatever the path', async () => {
    // One hidden class for every status keeps the reads of them (formatting, labels, the access
    // log) monomorphic; a status built by spreading another makes each of those a slow lookup.
    const { node } = await setup((req, res) => {
      if (req.url === '/fail') return res.destroy()
      res.writeHead(200, { 'cache-control': req.url === '/pass' ? 'no-store' : 'public, max-age=60', 'content-type': 'text/plain' })
      res.end('x')
    })
    const shapes: string[] = []
    const statuses = new Set<number>()
    const serve = node.proxy.serve.bind(node.proxy)
    node.proxy.serve = (req) => {
      const note = (r: Awaited<ReturnType<typeof serve>>) => {
        shapes.push(Object.keys(r.cacheStatus).join(','))
        statuses.add(r.status)
        return r
      }
      const answer = serve(req)
      return answer instanceof Promise ? answer.then(note) : note(answer)
    }
    await (await node.get('/a')).text() // miss, stored
    await node.stored('/a')
    await (await node.get('/a')).text() // hit
    await (await node.get('/a', { headers: { 'if-none-match': '*' } })).text() // 304 from cache
    await (await node.get('/a', { headers: { range: 'bytes=0-0' } })).text() // 206 from cache
    await (await node.get('/pass')).text() // pass
    await (await node.get('/post', { method: 'POST', body: 'b' })).text() // method
    await (await node.get('/fail')).text() // 502
    // Every path above was taken: a miss, hits answering 200, 304 and 206, a pass, a POST, a 502.
    expect(shapes).toHaveLength(7)
    expect(statuses).toEqual(new Set([200, 304, 206, 502]))
    expect(new Set(shapes)).toEqual(new Set(['hit,fwd,fwdStatus,stored,collapsed,ttl,detail,rule,key']))
  })
})

describe('persistence', () => {
  it('keeps the cache across a restart', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end('persisted')
    })
    cleanups.push(() => origin.close())
    const first = await startNode(origin.url)
    // A fixed Host: the restarted node listens on another port, and the key includes the host.
    const host = { host: 'www.example.test' }
    expect((await rawGet(first.url + '/p', host)).body.toString()).toBe('persisted')
    await whenReached(first.store, async () => (await first.store.variants('http://www.example.test/p')).length === 1)
    await first.close()
    const second = await startNode(origin.url, {}, { dir: first.dir })
    cleanups.push(() => second.close())
    const r = await rawGet(second.url + '/p', host)
    expect(r.body.toString()).toBe('persisted')
    expect(r.headers['cache-status']).toMatch(/hit/)
    expect(origin.count('/p')).toBe(1)
  })
})

async function contentFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(path.join(entry.parentPath, entry.name))
  }
  return out
}

describe('cache integrity and limits', () => {
  it('never serves a corrupt cache file: drops it, counts it and fetches again', async () => {
    const body = 'the true body '.repeat(50)
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end(body)
    }, { CAJE_MEMORY_CACHE_BYTES: '0' })
    await (await node.get('/c')).text()
    await node.stored('/c')
    const files = await contentFiles(path.join(node.dir, 'cache', 'content-v2'))
    expect(files.length).toBe(1)
    const original = await fs.readFile(files[0]!)
    await fs.writeFile(files[0]!, Buffer.from(original.toString().replace('true', 'fake')))
    const r = await node.get('/c')
    expect(await r.text()).toBe(body)
    expect(r.headers.get('cache-status')).toMatch(/fwd=uri-miss/)
    expect(node.store.stats().integrityFailures).toBe(1)
    expect(origin.count('/c')).toBe(2)
  })

  it('keeps the disk cache under its budget, evicting the least recently used', async () => {
    const { node } = await setup((req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end(Buffer.from(req.url!.padEnd(8 * 1024, '.')))
    }, { CAJE_CACHE_MAX_BYTES: '40KB', CAJE_MAX_OBJECT_BYTES: '10KB', CAJE_MEMORY_CACHE_BYTES: '0' })
    await (await node.get('/keep')).arrayBuffer()
    await node.stored('/keep')
    for (let i = 0; i < 12; i++) {
      await (await node.get(`/o${i}`)).arrayBuffer()
      await node.stored(`/o${i}`)
      // Reading /keep keeps it recently used.
      expect((await node.get('/keep')).headers.get('cache-status')).toMatch(/hit/)
      expect(node.store.stats().bytes).toBeLessThanOrEqual(40 * 1024)
    }
    expect(node.store.stats().entries).toBeLessThanOrEqual(5)
    expect((await node.get('/o0')).headers.get('cache-status')).toMatch(/miss/)
  })

  it('streams bodies over the per-object limit through without storing them', async () => {
    const { origin, node } = await setup((req, res) => {
      // /big announces its length; /chunked does not, so the limit is only found while streaming.
      res.writeHead(200, { 'cache-control': 'max-age=600', ...(req.url === '/big' ? { 'content-length': String(64 * 1024) } : {}) })
      res.end(Buffer.alloc(64 * 1024, 7))
    }, { CAJE_MAX_OBJECT_BYTES: '16KB' })
    const a = await node.get('/big')
    expect((await a.arrayBuffer()).byteLength).toBe(64 * 1024)
    expect(a.headers.get('cache-status')).toMatch(/detail=too-large/)
    await (await node.get('/big')).arrayBuffer()
    expect(origin.count('/big')).toBe(2)
    for (let i = 0; i < 2; i++) expect((await (await node.get('/chunked')).arrayBuffer()).byteLength).toBe(64 * 1024)
    expect(origin.count('/chunked')).toBe(2)
    expect(node.store.stats().entries).toBe(0)
  })
})

describe('uncacheable URLs under concurrency', () => {
  it('stops coalescing a URL whose responses are not shareable, so requests do not queue behind one another', async () => {
    let inflight = 0
    let maxInflight = 0
    // During the concurrent phase the origin answers once all 20 are in: requests queued behind a
    // leader never arrive together, and the test fails at its timeout.
    let hold: Promise<void> | undefined
    let release!: () => void
    const { origin, node } = await setup((_req, res) => {
      inflight++
      maxInflight = Math.max(maxInflight, inflight)
      if (inflight >= 20) release()
      void (hold ?? Promise.resolve()).then(() => {
        inflight--
        res.writeHead(200, { 'cache-control': 'no-store' })
        res.end('fresh every time')
      })
    })
    await (await node.get('/dynamic')).text()
    maxInflight = 0
    hold = new Promise<void>((resolve) => (release = resolve))
    const responses = await Promise.all(Array.from({ length: 20 }, () => node.get('/dynamic')))
    for (const r of responses) expect(await r.text()).toBe('fresh every time')
    expect(origin.count('/dynamic')).toBe(21)
    // All 20 went to the origin together instead of one leader first and then the rest.
    expect(maxInflight).toBe(20)
    expect(responses.some((r) => r.headers.get('cache-status')?.includes('collapsed'))).toBe(false)
  })
})

describe('fill (populate from the origin)', () => {
  it('refetches each stored variant onto the same variant: an absent Vary’d field stays absent, an empty one stays empty', async () => {
    const { origin, node } = await setup((req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Lang' })
      res.end(req.headers['x-lang'] === undefined ? 'absent' : `x-lang=[${req.headers['x-lang']}]`)
    })
    await rawGet(node.url + '/v')
    await rawGet(node.url + '/v', { 'x-lang': '' })
    await rawGet(node.url + '/v', { 'x-lang': 'fr' })
    await node.stored('/v', 3)
    const key = `http://${new URL(node.url).host}/v`
    const before = (await node.store.variants(key)).map((v) => ({ variant: v.variant, varyHeaders: v.varyHeaders }))
    await node.store.clear()
    for (const v of before) expect((await node.proxy.fill(new URL(key), v.varyHeaders)).stored).toBe(true)
    await node.stored('/v', 3)
    expect((await node.store.variants(key)).map((v) => v.variant).sort()).toEqual(before.map((v) => v.variant).sort())
    expect(origin.requests.slice(3).map((r) => r.headers['x-lang'])).toEqual(before.map((v) => (v.varyHeaders['x-lang'] === '' ? undefined : v.varyHeaders['x-lang']!.trim())))
    const hit = await rawGet(node.url + '/v')
    expect(hit.headers['cache-status']).toMatch(/^caje; hit/)
    expect(hit.body.toString()).toBe('absent')
  })
})
