import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, tempDir, whenReached } from '../test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function origin(name: string) {
  const o = await startOrigin((req, res) => {
    const body = `from ${name}`
    // A range is answered as a static file server would (a 206 the node stores as a part).
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''))
    if (m) {
      const part = body.slice(Number(m[1]), Number(m[2]) + 1)
      res.writeHead(206, { 'cache-control': 'max-age=600', 'content-type': 'text/plain', 'content-range': `bytes ${m[1]}-${m[2]}/${body.length}`, 'content-length': String(part.length) })
      res.end(part)
      return
    }
    res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' })
    res.end(body)
  })
  cleanups.push(() => o.close())
  return o
}

/** GET with a chosen Host header (fetch cannot set one): both nodes serve one public host. */
function get(nodeUrl: string, host: string, pathname: string, headers: Record<string, string> = {}): Promise<{ status: number; cacheStatus: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(pathname, nodeUrl), { headers: { host, ...headers } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, cacheStatus: String(res.headers['cache-status'] ?? ''), body }))
    })
    req.on('error', reject)
  })
}

const HOST = 'www.example.test'
const KEY = `http://${HOST}/page`

describe('an entry records the origin it came from', () => {
  it('is not served once the node fronts another origin: the new origin is asked and its answer replaces it', async () => {
    const demo = await origin('demo')
    const real = await origin('real')
    const dir = await tempDir()

    const before = await startNode(demo.url, {}, { dir })
    await get(before.url, HOST, '/page')
    await whenReached(before.store, async () => (await before.store.variants(KEY)).length === 1)
    const hit = await get(before.url, HOST, '/page')
    expect(hit.body).toBe('from demo')
    expect(hit.cacheStatus).toMatch(/^caje; hit/)
    const [meta] = await before.store.variants(KEY)
    expect(meta!.origin).toBe(new URL(demo.url).href)
    await before.close()

    // Same cache dir and manifest, CAJE_ORIGIN switched.
    const after = await startNode(real.url, {}, { dir })
    cleanups.push(() => after.close())
    expect((await after.store.variants(KEY))[0]?.origin, 'the demo’s entry is still on disk').toBe(new URL(demo.url).href)
    const first = await get(after.url, HOST, '/page')
    expect(first.body).toBe('from real')
    expect(first.cacheStatus).toContain('fwd=uri-miss')
    expect(real.count('/page')).toBe(1)
    // The real origin's answer replaces the demo's.
    await whenReached(after.store, async () => {
      const variants = await after.store.variants(KEY)
      return variants.length === 1 && variants[0]!.origin === new URL(real.url).href
    })
    const second = await get(after.url, HOST, '/page')
    expect(second.body).toBe('from real')
    expect(second.cacheStatus).toMatch(/^caje; hit/)
  })

  it('a stored part from the previous origin does not answer a range either', async () => {
    const demo = await origin('demo')
    const real = await origin('real')
    const dir = await tempDir()

    const before = await startNode(demo.url, {}, { dir })
    expect((await get(before.url, HOST, '/page', { range: 'bytes=5-8' })).body).toBe('demo')
    await whenReached(before.store, async () => (await before.store.variants(KEY)).some((v) => v.status === 206))
    const inside = await get(before.url, HOST, '/page', { range: 'bytes=6-7' })
    expect(inside.body).toBe('em')
    expect(inside.cacheStatus).toMatch(/^caje; hit/)
    await before.close()

    const after = await startNode(real.url, {}, { dir })
    cleanups.push(() => after.close())
    const part = await get(after.url, HOST, '/page', { range: 'bytes=6-7' })
    expect(part.status).toBe(206)
    expect(part.body).toBe('ea')
    expect(part.cacheStatus).toContain('fwd=uri-miss')
    expect(real.count('/page')).toBe(1)
  })
})
