// CAJE_DISK_ADMISSION=second-request, seen from a real caje node: a URL's
// first response stays in the memory tier only (not on disk, not in the
// manifest), its second request writes it to disk from there and announces
// it, and a URL asked for again after its memory copy went is written with its
// new fill. On disk means readable with cacache's own tools.

import http from 'node:http'
import path from 'node:path'
import cacache from 'cacache'
import { afterEach, describe, expect, it } from 'vitest'
import { SMALL_BODY_BYTES } from '../cache/content-file.ts'
import { heldBy } from '../manifest/repositories.ts'
import { startNode, startOrigin, type TestNode, type TestOrigin } from '../test-support/servers.ts'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(body: Buffer | string, env: Record<string, string>): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}

/** The bodies cacache's own index lists for `pathname` on this node, read back with cacache. */
async function onDisk(node: TestNode, pathname: string): Promise<string[]> {
  const dir = path.join(node.dir, 'cache')
  const entries = Object.values(await cacache.ls(dir)).filter((e) => new URL(e.key.split('\u0000')[0]!).pathname === pathname)
  return Promise.all(entries.map(async (e) => (await cacache.get.byDigest(dir, e.integrity)).toString()))
}

/** A GET with exactly these request headers (fetch() adds its own to a conditional one). */
function plainGet(node: TestNode, pathname: string, headers: Record<string, string>): Promise<{ status: number; cacheStatus: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: node.port, path: pathname, headers, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, cacheStatus: String(res.headers['cache-status'] ?? '') }))
      })
      .on('error', reject)
  })
}

/** Everything written and recorded: the disk writer idle, the manifest's queue applied. */
async function settled(node: TestNode): Promise<void> {
  await node.store.drain()
  await node.manifest.writer.flush()
}

describe('CAJE_DISK_ADMISSION=second-request', () => {
  it("keeps a URL's first response in memory only, and writes it to disk and the manifest on its second request", async () => {
    const { origin, node } = await setup('hello', { CAJE_DISK_ADMISSION: 'second-request' })
    const first = await node.get('/twice')
    expect(await first.text()).toBe('hello')
    expect(first.headers.get('cache-status')).toMatch(/fwd=uri-miss.*stored; detail=memory-only/)
    await settled(node)
    expect(await onDisk(node, '/twice')).toEqual([])
    expect(await heldBy(node.manifest.readDb(), 'test-node')).toEqual([])
    expect(node.store.stats()).toMatchObject({ entries: 1, writesMemoryOnly: 1 })

    const second = await node.get('/twice')
    expect(await second.text()).toBe('hello')
    expect(second.headers.get('cache-status')).toMatch(/^caje; hit/)
    await settled(node)
    expect(await onDisk(node, '/twice')).toEqual(['hello'])
    expect(await heldBy(node.manifest.readDb(), 'test-node')).toHaveLength(1)

    const third = await node.get('/twice')
    expect(await third.text()).toBe('hello')
    expect(third.headers.get('cache-status')).toMatch(/^caje; hit/)
    expect(origin.count('/twice')).toBe(1)
    expect(node.store.stats()).toMatchObject({ entries: 1, writesMemoryOnly: 1 })
  })

  it('counts a second request answered without reading the body too: a HEAD, or a 304 to a conditional GET', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain', 'content-length': '4', etag: '"v1"' })
      res.end('body')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_DISK_ADMISSION: 'second-request' })
    cleanups.push(() => node.close())
    for (const path of ['/head', '/conditional']) {
      expect((await node.get(path)).headers.get('cache-status')).toMatch(/stored; detail=memory-only/)
      await settled(node)
      expect(await onDisk(node, path)).toEqual([])
    }
    const head = await node.get('/head', { method: 'HEAD' })
    expect(head.headers.get('cache-status')).toMatch(/^caje; hit/)
    // By node:http: fetch() would add Cache-Control: no-cache to a conditional request.
    const notModified = await plainGet(node, '/conditional', { 'if-none-match': '"v1"' })
    expect(notModified).toMatchObject({ status: 304, cacheStatus: expect.stringMatching(/^caje; hit/) })
    await settled(node)
    expect(await onDisk(node, '/head')).toEqual(['body'])
    expect(await onDisk(node, '/conditional')).toEqual(['body'])
    expect(origin.count('/head') + origin.count('/conditional')).toBe(2)
  })

  it('writes a URL asked for again after its memory copy went with its new fill', async () => {
    const { origin, node } = await setup('again', { CAJE_DISK_ADMISSION: 'second-request' })
    expect((await node.get('/again')).headers.get('cache-status')).toMatch(/stored; detail=memory-only/)
    const [variant] = await node.store.variants(`${node.url}/again`)
    expect(variant).toBeDefined()
    await node.store.delete(variant!.key, variant!.variant)
    const refill = await node.get('/again')
    expect(await refill.text()).toBe('again')
    expect(refill.headers.get('cache-status')).toMatch(/fwd=uri-miss.*stored/)
    expect(refill.headers.get('cache-status')).not.toMatch(/memory-only/)
    await settled(node)
    expect(await onDisk(node, '/again')).toEqual(['again'])
    expect(origin.count('/again')).toBe(2)
  })

  it('keeps a body in memory only while the write queue is full, hit after hit, and never announces it', async () => {
    const { origin, node } = await setup('queued', { CAJE_DISK_ADMISSION: 'second-request', CAJE_WRITE_QUEUE_BYTES: '0' })
    for (let i = 0; i < 3; i++) {
      const res = await node.get('/queued')
      expect(await res.text()).toBe('queued')
      expect(res.headers.get('cache-status')).toMatch(i === 0 ? /stored; detail=memory-only/ : /^caje; hit/)
    }
    await settled(node)
    expect(await onDisk(node, '/queued')).toEqual([])
    expect(await heldBy(node.manifest.readDb(), 'test-node')).toEqual([])
    expect(origin.count('/queued')).toBe(1)
    expect(node.store.stats()).toMatchObject({ entries: 1, writesMemoryOnly: 1 })
  })

  it('writes a body too large for the memory tier to disk on its first request', async () => {
    const large = Buffer.alloc(SMALL_BODY_BYTES + 1, 'x')
    const { node } = await setup(large, { CAJE_DISK_ADMISSION: 'second-request' })
    const first = await node.get('/large')
    expect((await first.arrayBuffer()).byteLength).toBe(large.length)
    expect(first.headers.get('cache-status')).toMatch(/fwd=uri-miss.*stored/)
    expect(first.headers.get('cache-status')).not.toMatch(/memory-only/)
    await settled(node)
    expect((await onDisk(node, '/large')).map((b) => b.length)).toEqual([large.length])
  })
})

describe('CAJE_DISK_ADMISSION=first-request (the default)', () => {
  it("writes a URL's first response to disk and the manifest", async () => {
    const { node } = await setup('once', {})
    expect((await node.get('/once')).headers.get('cache-status')).not.toMatch(/memory-only/)
    await settled(node)
    expect(await onDisk(node, '/once')).toEqual(['once'])
    expect(await heldBy(node.manifest.readDb(), 'test-node')).toHaveLength(1)
  })
})
