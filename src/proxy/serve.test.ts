// Proxy#serve answers a fresh hit whose body is at hand at once (no promise),
// and everything it cannot answer without waiting with a promise: misses,
// stale entries, request directives that force revalidation, Vary
// mismatches, bodies that are neither in memory nor in a verified open file.

import fs from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import type { CacheStore } from '../cache/types.ts'
import { bodyBytes, startOrigin, tempDir, whenReached, type TestOrigin } from '../test-support/servers.ts'
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
    // /ttl<n>: fresh for n seconds, without a Date field, so its age is the proxy clock's alone.
    const ttl = /^\/ttl(\d+)$/.exec(req.url ?? '')
    if (ttl) {
      headers['cache-control'] = `public, max-age=${ttl[1]}`
      res.sendDate = false
    }
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
  return body === null ? Buffer.alloc(0) : bodyBytes(body)
}

/** The answer to a request, whether it came at once, and its body (always read to the end). */
async function answer(proxy: Proxy, req: ProxyRequest): Promise<{ now: boolean; result: ProxyResult; body: string }> {
  const r = proxy.serve(req)
  const now = !(r instanceof Promise)
  const result = await r
  return { now, result, body: (await bodyOf(result)).toString() }
}

/** A miss, then wait until the store has the entry. */
async function fill(proxy: Proxy, path: string, headers: Record<string, string> = {}): Promise<void> {
  await answer(proxy, request(path, headers))
  const key = `http://site.test${path}`
  // Stores finish after their responses: poll the store itself, with room for a loaded machine.
  await whenReached(store, () => store.variants(key).length > 0)
  expect(store.variants(key).length).toBeGreaterThan(0)
  // Served from memory until the disk writer has it on disk.
  await store.drain()
}

describe('serve', () => {
  it('answers a fresh hit from memory at once, and a miss with a promise', async () => {
    const proxy = await proxyWith(1 << 20)
    const miss = await answer(proxy, request('/a'))
    expect(miss.now).toBe(false)
    expect(miss.result.cacheStatus.fwd).toBe('uri-miss')
    await store.drain()
    clock += 5000
    const hit = await answer(proxy, request('/a'))
    expect(hit.now).toBe(true)
    expect(hit.result.status).toBe(200)
    expect(hit.result.tier).toBe('memory')
    expect(hit.result.headers.age).toBe('5')
    expect(hit.result.headers['cache-status']).toMatch(/^caje; hit; ttl=5[45]$/)
    expect(hit.body).toBe('body of /a for nobody')
    expect(origin.count('/a')).toBe(1)
  })

  it("carries one key counter with every answer from a stored response (the traffic recorder's record for its key), and none with a miss", async () => {
    const proxy = await proxyWith(1 << 20)
    const miss = await answer(proxy, request('/k'))
    expect(miss.result.keyCounter).toBeUndefined()
    await store.drain()
    const first = await answer(proxy, request('/k'))
    const head = await answer(proxy, request('/k', {}, 'HEAD'))
    const notModified = await answer(proxy, request('/k', { 'if-none-match': '"v1"' }))
    expect(notModified.result.status).toBe(304)
    expect(first.result.keyCounter).toBeDefined()
    expect(head.result.keyCounter).toBe(first.result.keyCounter)
    expect(notModified.result.keyCounter).toBe(first.result.keyCounter)
    // Another stored response, another counter.
    await fill(proxy, '/other')
    expect((await answer(proxy, request('/other'))).result.keyCounter).not.toBe(first.result.keyCounter)
  })

  it('gives each hit the Age and Cache-Status of its own second, whatever hits before it were sent', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/t')
    clock += 2000
    const first = await answer(proxy, request('/t'))
    const again = await answer(proxy, request('/t'))
    clock += 3000
    const later = await answer(proxy, request('/t'))
    const head = await answer(proxy, request('/t', {}, 'HEAD'))
    // An answer's fields are not changed by the answers after it (a client may still be sending them).
    expect(first.result.headers).toMatchObject({ age: '2', 'cache-status': expect.stringMatching(/^caje; hit; ttl=5[78]$/) })
    expect(again.result.headers).toEqual(first.result.headers)
    expect(later.result.headers).toMatchObject({ age: '5', 'cache-status': expect.stringMatching(/^caje; hit; ttl=5[45]$/) })
    expect(head.result.headers).toEqual(later.result.headers)
    // What the access log names is the field sent.
    for (const a of [first, later, head]) expect(a.result.cacheStatusText).toBe(a.result.headers['cache-status'])
    // So does the status the metrics and the traffic counts read, each its own second's.
    for (const a of [first, later, head]) expect(`caje; hit; ttl=${a.result.cacheStatus.ttl}`).toBe(a.result.headers['cache-status'])
    expect(first.result.cacheStatus).toMatchObject({ hit: true, fwd: undefined })
  })

  it('shares one header set among the plain hits of an entry hit often within a second, from its fourth', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/often')
    clock += 1000
    const second = async () => {
      const hits = []
      for (let i = 0; i < 6; i++) hits.push((await answer(proxy, request('/often'))).result.headers)
      return hits
    }
    const hits = await second()
    // The first three each have a copy of their own, which dies with its answer (young).
    expect(new Set(hits.slice(0, 4)).size).toBe(4)
    for (const h of hits.slice(0, 3)) expect(Object.isFrozen(h)).toBe(false)
    // From the fourth on, one frozen set: Node's checks of its fields are made once.
    expect(Object.isFrozen(hits[3])).toBe(true)
    expect(hits[4]).toBe(hits[3])
    expect(hits[5]).toBe(hits[3])
    for (const h of hits) expect(h).toEqual(hits[0])
    // The next second counts again from its first hit.
    clock += 1000
    const next = await second()
    expect(next[0]).not.toBe(hits[3])
    expect(Object.isFrozen(next[0])).toBe(false)
    expect(next[3]).toBe(next[5])
    expect(next[3]).toMatchObject({ age: '2' })
  })

  it('gives hits of entries with different ttls each its own, also where their statuses are shared', async () => {
    const proxy = await proxyWith(1 << 20)
    // 60 and 316 seconds fall in the same slot of the plain hits' shared statuses (256 of them).
    await fill(proxy, '/ttl60')
    await fill(proxy, '/ttl316')
    clock += 1000
    const a = await answer(proxy, request('/ttl60'))
    const b = await answer(proxy, request('/ttl316'))
    const a2 = await answer(proxy, request('/ttl60'))
    expect(a.result.headers).toMatchObject({ age: '1', 'cache-status': 'caje; hit; ttl=59' })
    expect(b.result.headers).toMatchObject({ age: '1', 'cache-status': 'caje; hit; ttl=315' })
    expect(b.result.cacheStatus.ttl).toBe(315)
    expect(a2.result.headers['cache-status']).toBe('caje; hit; ttl=59')
    clock += 256_000
    // Now the 316-second entry has 59 seconds left: it sends the same field the other did.
    const c = await answer(proxy, request('/ttl316'))
    expect(c.result.headers).toMatchObject({ age: '257', 'cache-status': 'caje; hit; ttl=59' })
  })

  it('answers conditionals, ranges and HEAD on a hit at once', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/c')
    const notModified = await answer(proxy, request('/c', { 'if-none-match': '"v1"' }))
    expect(notModified).toMatchObject({ now: true, result: { status: 304, body: null } })
    const partial = await answer(proxy, request('/c', { range: 'bytes=0-3' }))
    expect(partial).toMatchObject({ now: true, body: 'body', result: { status: 206 } })
    expect(partial.result.headers['content-range']).toMatch(/^bytes 0-3\/\d+$/)
    expect(await answer(proxy, request('/c', { range: 'bytes=9999-' }))).toMatchObject({ now: true, result: { status: 416 } })
    const head = await answer(proxy, request('/c', {}, 'HEAD'))
    expect(head).toMatchObject({ now: true, result: { status: 200, body: null } })
    expect(head.result.headers['content-length']).toBe(String('body of /c for nobody'.length))
  })

  it('takes the asynchronous path for stale entries, request no-cache and max-age=0, unsafe methods and unknown hosts', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/s')
    expect((await answer(proxy, request('/s'))).now).toBe(true)
    // Request max-age=0 refuses only an age above 0 (RFC 9111 §5.2.1.1): the entry must be at least
    // a second old, or the origin's whole-second Date can make its age 0 and a hit is right.
    clock += 2000
    for (const headers of [{ 'cache-control': 'no-cache' }, { 'cache-control': 'max-age=0' }, { pragma: 'no-cache' }] as Record<string, string>[]) {
      expect((await answer(proxy, request('/s', headers))).now).toBe(false)
    }
    expect((await answer(proxy, request('/s', {}, 'POST'))).now).toBe(false)
    const unknown = await answer(proxy, { ...request('/s'), host: 'other.test' })
    expect(unknown).toMatchObject({ now: false, result: { status: 421 } })
    clock += 61_000
    expect((await answer(proxy, request('/s'))).now).toBe(false)
  })

  it('serves only the variant the request selects (RFC 9111 §4.1)', async () => {
    const proxy = await proxyWith(1 << 20)
    await fill(proxy, '/vary', { 'x-lang': 'fr' })
    expect(await answer(proxy, request('/vary', { 'x-lang': 'fr' }))).toMatchObject({ now: true, body: 'body of /vary for fr' })
    expect(await answer(proxy, request('/vary', { 'x-lang': 'de' }))).toMatchObject({ now: false, body: 'body of /vary for de' })
    expect(await answer(proxy, request('/vary'))).toMatchObject({ now: false, body: 'body of /vary for nobody' })
  })

  it('reads a small verified body from disk at once, and large or unverified ones with a promise', async () => {
    const proxy = await proxyWith(0)
    await fill(proxy, '/d')
    // Written by this process, so verified: read at once even before its file was opened (a body
    // not vouched for, after a restart, is hashed by an asynchronous read first: disk-store.test).
    expect(await answer(proxy, request('/d'))).toMatchObject({ now: true, body: 'body of /d for nobody', result: { tier: 'disk' } })
    expect(await answer(proxy, request('/d'))).toMatchObject({ now: true, body: 'body of /d for nobody', result: { tier: 'disk' } })

    await fill(proxy, '/big')
    await answer(proxy, request('/big'))
    expect((await answer(proxy, request('/big'))).now).toBe(false)
    expect(origin.count('/d')).toBe(1)
    expect(origin.count('/big')).toBe(1)
  })
})
