// One cache fill against a real origin and a real store: the body streams on
// while it is stored, at the client's pace (there against a body that counts
// what is pulled from it), a response policy forbids is passed on untouched,
// and a fill whose client goes away before the end stores nothing.

import fs from 'node:fs/promises'
import type http from 'node:http'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import type { CacheStore } from '../cache/types.ts'
import { Readable } from 'node:stream'
import { bodyBytes, startOrigin, tempDir, type TestOrigin } from '../test-support/servers.ts'
import { startFill, type Fill, type FillDeps, type FillTarget } from './fill.ts'
import { createOriginClient, type OriginClient, type OriginResponse } from './origin.ts'

let dir: string
let origin: TestOrigin
let client: OriginClient
let store: CacheStore
let deps: FillDeps
/** Responses the origin is holding open, to end when a test says so. */
let held: http.ServerResponse[]
const log: Array<Record<string, unknown>> = []

beforeEach(async () => {
  dir = await tempDir()
  held = []
  log.length = 0
  origin = await startOrigin((req, res) => {
    if (req.url === '/private') {
      res.writeHead(200, { 'cache-control': 'private, max-age=60', 'content-length': '2' })
      res.end('me')
      return
    }
    if (req.url === '/small') {
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '10' })
      res.end('small body')
      return
    }
    if (req.url === '/slow') {
      // Half the announced body, then nothing until the test ends it.
      res.writeHead(200, { 'cache-control': 'max-age=60', 'content-length': '8' })
      res.write('half')
      held.push(res)
      return
    }
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"', 'content-type': 'text/plain', 'surrogate-key': 'a b' })
    res.end(`body of ${req.url}`)
  })
  client = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000 })
  store = await createCacheStore({ dir, maxBytes: 1e8, memoryBytes: 1 << 20, maxObjectBytes: 1e7 })
  deps = { store, storeRules: { cacheSetCookie: false, heuristicFreshness: false }, maxObjectBytes: 1e7, log: (e) => log.push(e), now: Date.now }
})

afterEach(async () => {
  for (const res of held) res.destroy()
  await store.close()
  await client.close()
  await origin.close()
  await fs.rm(dir, { recursive: true, force: true })
})

function target(path: string): FillTarget {
  const url = `http://site.test${path}`
  return { key: url, url, host: 'site.test', origin: new URL(origin.url) }
}

function fetchOrigin(path: string): Promise<OriginResponse> {
  return client.send({ origin: new URL(origin.url), method: 'GET', path, headers: { host: 'site.test' } })
}

async function readAll(body: NodeJS.ReadableStream | Buffer): Promise<string> {
  return (await bodyBytes(body)).toString()
}

/** The body of a fill that streams (the origin's is larger than origin.ts reads whole). */
function streamOf(fill: Fill): Readable {
  if (Buffer.isBuffer(fill.body)) throw new Error('expected a streamed body')
  return fill.body
}

describe('startFill', () => {
  it('streams the body on while it stores it, and reports the stored entry once the body is complete', async () => {
    const res = await fetchOrigin('/a')
    let received = 0
    const fill = startFill(deps, { ...target('/a'), via: 'populate', onReceived: () => received++ }, { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    expect(fill.stored).toBe(true)
    expect(fill.detail).toBeUndefined()
    expect(await readAll(fill.body)).toBe('body of /a')
    const outcome = await fill.outcome
    expect(received).toBe(1)
    expect(outcome.stored).toBe(true)
    expect(outcome.meta).toMatchObject({ key: 'http://site.test/a', status: 200, tags: ['a', 'b'], origin: new URL(origin.url).href, via: 'populate' })
    const stored = await store.read(outcome.meta!.key, outcome.meta!.variant)
    expect(stored && stored.kind === 'buffer' ? stored.buffer.toString() : undefined).toBe('body of /a')
  })

  it('stores a body that came in the same read as its head in one piece, and hands the same buffer to the client', async () => {
    const res = await fetchOrigin('/small')
    expect(res.whole?.toString()).toBe('small body')
    let received = 0
    const fill = startFill(deps, { ...target('/small'), onReceived: () => received++ }, { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    expect(fill.stored).toBe(true)
    expect(fill.body).toBe(res.whole)
    const outcome = await fill.outcome
    expect(received).toBe(1)
    expect(outcome.meta).toMatchObject({ key: 'http://site.test/small', status: 200, size: 10 })
    const stored = await store.read(outcome.meta!.key, outcome.meta!.variant)
    expect(stored && stored.kind === 'buffer' ? stored.buffer.toString() : undefined).toBe('small body')
    // A consumer that knows only streams still gets the same bytes.
    expect(await readAll(res.body)).toBe('small body')
  })

  it("takes the origin's body only as fast as the client reads it (stream backpressure), and still stores it whole", async () => {
    // An origin body of 8 MiB whose chunks are made when asked for: what the fill pulls is counted.
    const chunk = Buffer.alloc(64 * 1024, 1)
    const chunks = 128
    let pulled = 0
    const body = new Readable({
      read() {
        if (pulled === chunks) this.push(null)
        else {
          pulled++
          this.push(chunk)
        }
      },
    })
    const res: OriginResponse = { status: 200, headers: { 'cache-control': 'max-age=60', 'content-length': String(chunks * chunk.length) }, body, headersMs: 1 }
    const fill = startFill(deps, target('/big'), { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    expect(fill.detail).toBeUndefined()
    expect(fill.stored).toBe(true)
    // The client has not read a byte yet: the fill has taken a few chunks, not the whole body.
    await new Promise((resolve) => streamOf(fill).once('readable', resolve))
    expect(pulled).toBeLessThan(8)
    expect((await bodyBytes(fill.body)).length).toBe(chunks * chunk.length)
    expect(await fill.outcome).toMatchObject({ stored: true, meta: { size: chunks * chunk.length } })
  })

  it('passes a response policy forbids on untouched, with the reason, and stores nothing', async () => {
    const res = await fetchOrigin('/private')
    const fill = startFill(deps, target('/private'), { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    expect(fill).toMatchObject({ stored: false, detail: 'private' })
    // Two bytes that came with the head: handed on as the origin sender read them.
    expect(fill.body).toBe(res.whole)
    expect(await readAll(fill.body)).toBe('me')
    expect(await fill.outcome).toEqual({ stored: false })
    expect(store.variants('http://site.test/private')).toEqual([])
  })

  it('stores nothing when the client goes away before the body is complete', async () => {
    // The origin sender answers once the head is in; a body still coming streams.
    const res = await fetchOrigin('/slow')
    expect(res.whole).toBeUndefined()
    const fill = startFill(deps, target('/slow'), { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    expect(fill.stored).toBe(true)
    // The client reads what there is, then disconnects (the adapter destroys the body it was sending).
    await new Promise<void>((resolve) => streamOf(fill).once('data', () => resolve()))
    streamOf(fill).destroy()
    expect(await fill.outcome).toEqual({ stored: false, meta: undefined })
    await store.drain()
    expect(store.variants('http://site.test/slow')).toEqual([])
  })

  it('lets go of the origin connection at once when the client goes away', async () => {
    // A body timeout far beyond the test's own: only releasing the origin body closes the connection in time.
    const patient = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 600_000 })
    try {
      const res = await patient.send({ origin: new URL(origin.url), method: 'GET', path: '/slow', headers: { host: 'site.test' } })
      const originSide = held.at(-1)!
      const originClosed = new Promise<void>((resolve) => originSide.once('close', () => resolve()))
      const fill = startFill(deps, target('/slow'), { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
      await new Promise<void>((resolve) => streamOf(fill).once('data', () => resolve()))
      streamOf(fill).destroy()
      await originClosed
      expect(await fill.outcome).toEqual({ stored: false, meta: undefined })
    } finally {
      await patient.close()
    }
  })

  it('stores nothing, and fails the client body, when the origin connection is cut before the body is complete', async () => {
    const res = await fetchOrigin('/slow')
    const fill = startFill(deps, target('/slow'), { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
    const read = readAll(fill.body).catch((err: Error) => err)
    // The origin handler holds the response before its headers go out, so it is there by now.
    held[0]!.destroy()
    expect(await read).toBeInstanceOf(Error)
    expect((await fill.outcome).stored).toBe(false)
    await store.drain()
    expect(store.variants('http://site.test/slow')).toEqual([])
  })
})
