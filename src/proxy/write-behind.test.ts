// Storing through the disk writer, seen from a real caje node: a full write
// queue keeps a response in memory only, or serves it without storing when the
// memory tier cannot keep it (and says so), and Vary cannot grow one URL
// without bound.

import { afterEach, describe, expect, it } from 'vitest'
import { heldBy } from '../manifest/repositories.ts'
import { startNode, startOrigin, type TestNode, type TestOrigin } from '../test-support/servers.ts'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(handler: Parameters<typeof startOrigin>[0], env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin(handler)
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}

async function metric(node: TestNode, name: string): Promise<number> {
  const text = await (await node.get('/_caje/metrics')).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? NaN : Number(line.split(' ')[1])
}

describe('disk write queue', () => {
  it('keeps a storable response in memory only when the write queue is full: the next request is a memory hit, and the manifest never holds it', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain', 'content-length': '5' })
      res.end('hello')
    }, { CAJE_WRITE_QUEUE_BYTES: '0' })
    const first = await node.get('/full')
    expect(await first.text()).toBe('hello')
    expect(first.headers.get('cache-status')).toMatch(/fwd=uri-miss.*stored; detail=memory-only/)
    const second = await node.get('/full')
    expect(await second.text()).toBe('hello')
    expect(second.headers.get('cache-status')).toMatch(/^caje; hit/)
    expect(origin.count('/full')).toBe(1)
    expect(node.store.stats()).toMatchObject({ entries: 1, writesMemoryOnly: 1, writesSkipped: 0 })
    expect(await metric(node, 'caje_cache_writes_memory_only_total')).toBe(1)
    expect(await metric(node, 'caje_cache_writes_skipped_total')).toBe(0)
    await node.store.drain()
    await node.manifest.writer.flush()
    expect(await heldBy(node.manifest.readDb(), 'test-node')).toEqual([])
  })

  it('serves a storable response without storing it when the write queue is full and the memory tier cannot keep it, and counts it', async () => {
    const { origin, node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain', 'content-length': '5' })
      res.end('hello')
    }, { CAJE_WRITE_QUEUE_BYTES: '0', CAJE_MEMORY_CACHE_BYTES: '0' })
    for (let i = 0; i < 2; i++) {
      const res = await node.get('/full')
      expect(await res.text()).toBe('hello')
      expect(res.headers.get('cache-status')).toMatch(/fwd=uri-miss.*detail=write-queue-full/)
      expect(res.headers.get('cache-status')).not.toMatch(/stored/)
    }
    expect(origin.count('/full')).toBe(2)
    expect(node.store.stats().entries).toBe(0)
    expect(await metric(node, 'caje_cache_writes_skipped_total')).toBe(2)
  })

  it('reports an empty queue in health once everything is written', async () => {
    const { node } = await setup((_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-length': '3' })
      res.end('abc')
    })
    await Promise.all(Array.from({ length: 20 }, (_, i) => node.get(`/w${i}`).then((r) => r.text())))
    await node.store.drain()
    const health = (await (await node.get('/_caje/health')).json()) as { cache: { writeQueueJobs: number; writeQueueBytes: number } }
    expect(health.cache).toMatchObject({ writeQueueJobs: 0, writeQueueBytes: 0 })
  })
})

describe('Vary', () => {
  it('keeps at most CAJE_MAX_VARIANTS variants of one URL and still serves each request its own', async () => {
    const { origin, node } = await setup((req, res) => {
      const foo = String(req.headers['x-foo'] ?? '')
      res.writeHead(200, { 'cache-control': 'public, max-age=60', vary: 'X-Foo', 'content-length': String(foo.length) })
      res.end(foo)
    }, { CAJE_MAX_VARIANTS: '3' })
    for (let i = 0; i < 6; i++) {
      const res = await node.get('/v', { headers: { 'x-foo': `v${i}` } })
      expect(await res.text()).toBe(`v${i}`)
    }
    await node.store.drain()
    const key = `http://${new URL(node.url).host}/v`
    expect(await node.store.variants(key)).toHaveLength(3)
    // The three most recent are hits; the first was dropped and goes to the origin again.
    for (const i of [3, 4, 5]) {
      const res = await node.get('/v', { headers: { 'x-foo': `v${i}` } })
      expect(await res.text()).toBe(`v${i}`)
      expect(res.headers.get('cache-status')).toMatch(/hit/)
    }
    const before = origin.count('/v')
    const again = await node.get('/v', { headers: { 'x-foo': 'v0' } })
    expect(await again.text()).toBe('v0')
    expect(origin.count('/v')).toBe(before + 1)
  })

  it('keeps 32 variants of one URL when CAJE_MAX_VARIANTS is not set', async () => {
    const { node } = await setup((req, res) => {
      const foo = String(req.headers['x-foo'] ?? '')
      res.writeHead(200, { 'cache-control': 'public, max-age=60', vary: 'X-Foo', 'content-length': String(foo.length) })
      res.end(foo)
    })
    for (let i = 0; i < 40; i++) expect(await (await node.get('/v', { headers: { 'x-foo': `v${i}` } })).text()).toBe(`v${i}`)
    await node.store.drain()
    expect(await node.store.variants(`http://${new URL(node.url).host}/v`)).toHaveLength(32)
  })

  it('finds a request’s variant by its id: a hit among many variants never lists them', async () => {
    const { origin, node } = await setup((req, res) => {
      const foo = String(req.headers['x-foo'] ?? '')
      res.writeHead(200, { 'cache-control': 'public, max-age=60', vary: 'X-Foo', 'content-length': String(foo.length) })
      res.end(foo)
    }, { CAJE_MAX_VARIANTS: '500' })
    for (let i = 0; i < 300; i++) await (await node.get('/v', { headers: { 'x-foo': `v${i}` } })).text()
    await node.store.drain()
    expect(await node.store.variants(`http://${new URL(node.url).host}/v`)).toHaveLength(300)
    // Counted on the node's own store: listing a URL's variants is for misses and the admin, not hits.
    let listed = 0
    const variants = node.store.variants.bind(node.store)
    node.store.variants = (key) => (listed++, variants(key))
    for (const i of [0, 150, 299]) {
      const res = await node.get('/v', { headers: { 'x-foo': `v${i}` } })
      expect(await res.text()).toBe(`v${i}`)
      expect(res.headers.get('cache-status')).toMatch(/^caje; hit/)
    }
    expect(listed).toBe(0)
    expect(origin.count('/v')).toBe(300)
  })
})
