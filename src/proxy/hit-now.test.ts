// The synchronous hit path (Proxy#hitNow) must answer exactly what the full
// path would for a fresh hit, and step aside (undefined) for everything it
// cannot answer without waiting: misses, stale entries, request directives
// that force revalidation, Vary mismatches, bodies that are not in memory.

import fs from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import type { CacheStore } from '../cache/types.ts'
import { startOrigin, tempDir, type TestOrigin } from '../test-support/servers.ts'
import { createOriginClient, type OriginClient } from './origin.ts'
import { createProxy, type Proxy, type ProxyRequest, type ProxyResult } from './proxy.ts'

let dir: string
let origin: TestOrigin
let client: OriginClient
let store: CacheStore
let clock: number

beforeEach(async () => {
  dir = await tempDir()
  clock = Date.now()
  origin = await startOrigin((req, res) => {
    const headers: Record<string, string> = { 'cache-control': 'public, max-age=60', etag: '"v1"', 'content-type': 'text/plain' }
    if (req.url === '/vary') headers.vary = 'x-lang'
    if (req.url === '/big') {
      res.writeHead(200, headers)
      res.end(Buffer.alloc(300 * 1024, 7))
      return
    }
    res.writeHead(200, headers)
    res.end(`body of ${req.url} for ${req.headers['x-lang'] ?? 'nobody'}`)
  })
  client = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000 })
})

afterEach(async () => {
  await store.close()
  await client.close()
  await origin.close()
  await fs.rm(dir, { recursive: true, force: true })
})

async function proxyWith(memoryBytes: number): Promise<Proxy> {
  store = await createCacheStore({ dir, maxBytes: 1e8, memoryBytes, maxObjectBytes: 1e7 })
  return createProxy({
    store,
    origin: client,
    resolveOrigin: (host) => (host === 'site.test' ? new URL(origin.url) : undefined),
    maxObjectBytes: 1e7,
    cacheSetCookie: false,
    preserveHost: false,
    trustForwarded: false,
    log: () => {},
    now: () => clock,
  })
}

function request(path: string, headers: Record<string, string> = {}, method = 'GET'): ProxyRequest {
  return { method, scheme: 'http', host: 'site.test', path, headers: { host: 'site.test', ...headers }, body: null, clientIp: '127.0.0.1', signal: new AbortController().signal }
}

async function bodyOf(result: ProxyResult): Promise<Buffer> {
  const body = result.body
  if (body === null) return Buffer.alloc(0)
  if (Buffer.isBuffer(body)) return body
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** A miss through the full path, then wait until the store has the entry. */
async function fill(proxy: Proxy, path: string, headers: Record<string, string> = {}): Promise<void> {
  const result = await proxy.handle(request(path, headers))
  await bodyOf(result)
  const key = `http://site.test${path}`
  for (let i = 0; i < 100 && store.variantsNow(key).length === 0; i++) await new Promise((r) => setTimeout(r, 10))
  expect(store.variantsNow(key).length).toBeGreaterThan(0)
  // Served from memory until the disk writer has it on disk.
  await store.drain()
}

describe('the synchronous hit path', () => {
  it('answers a fresh hit from memory with the same status, headers and body as the full path', async () => {
    const proxy = await proxyWith(1 << 20)
    expect(proxy.hitNow(request('/a'))).toBeUndefined() // nothing stored: a miss is not its business
    await fill(proxy, '/a')
    clock += 5000
    const now = proxy.hitNow(request('/a'))
    expect(now).toBeDefined()
    const full = await proxy.handle(request('/a'))
    expect(now!.status).toBe(200)
    expect(now!.tier).toBe('memory')
    expect(now!.headers).toEqual(full.headers)
    expect(now!.headers.age).toBe('5')
    expect(now!.headers['cache-status']).toMatch(/^caje; hit; ttl=5[45]$/)
    expect((await bodyOf(now!)).toString()).toBe('body of /a for nobody')
    expect(origin.count('/a')).toBe(1)
  })

  it('answers conditionals, ranges and HEAD the way the full path does', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/c')
    const notModified = proxy.hitNow(request('/c', { 'if-none-match': '"v1"' }))
    expect(notModified?.status).toBe(304)
    expect(notModified?.body).toBeNull()
    const partial = proxy.hitNow(request('/c', { range: 'bytes=0-3' }))
    expect(partial?.status).toBe(206)
    expect(partial?.headers['content-range']).toMatch(/^bytes 0-3\/\d+$/)
    expect((await bodyOf(partial!)).toString()).toBe('body')
    expect(proxy.hitNow(request('/c', { range: 'bytes=9999-' }))?.status).toBe(416)
    const head = proxy.hitNow(request('/c', {}, 'HEAD'))
    expect(head?.status).toBe(200)
    expect(head?.body).toBeNull()
    expect(head?.headers['content-length']).toBe(String('body of /c for nobody'.length))
  })

  it('steps aside for stale entries, request no-cache and max-age=0, unsafe methods and unknown hosts', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/s')
    expect(proxy.hitNow(request('/s'))).toBeDefined()
    expect(proxy.hitNow(request('/s', { 'cache-control': 'no-cache' }))).toBeUndefined()
    expect(proxy.hitNow(request('/s', { 'cache-control': 'max-age=0' }))).toBeUndefined()
    expect(proxy.hitNow(request('/s', { pragma: 'no-cache' }))).toBeUndefined()
    expect(proxy.hitNow(request('/s', {}, 'POST'))).toBeUndefined()
    expect(proxy.hitNow({ ...request('/s'), host: 'other.test' })).toBeUndefined()
    clock += 61_000
    expect(proxy.hitNow(request('/s'))).toBeUndefined()
  })

  it('serves only the variant the request selects (RFC 9111 §4.1)', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/vary', { 'x-lang': 'fr' })
    expect((await bodyOf(proxy.hitNow(request('/vary', { 'x-lang': 'fr' }))!)).toString()).toBe('body of /vary for fr')
    expect(proxy.hitNow(request('/vary', { 'x-lang': 'de' }))).toBeUndefined()
    expect(proxy.hitNow(request('/vary'))).toBeUndefined()
  })

  it('reads a small verified body from disk without waiting, and leaves large or unverified ones to the full path', async () => {
    const proxy = await proxyWith(0)
    await fill(proxy, '/d')
    // The file is not open in this process yet: only the full path opens (and, if needed, hashes) it.
    expect(proxy.hitNow(request('/d'))).toBeUndefined()
    const full = await proxy.handle(request('/d'))
    expect((await bodyOf(full)).toString()).toBe('body of /d for nobody')
    const now = proxy.hitNow(request('/d'))
    expect(now?.tier).toBe('disk')
    expect((await bodyOf(now!)).toString()).toBe('body of /d for nobody')

    await fill(proxy, '/big')
    await bodyOf(await proxy.handle(request('/big')))
    expect(proxy.hitNow(request('/big'))).toBeUndefined()
    expect(origin.count('/d')).toBe(1)
  })
})
