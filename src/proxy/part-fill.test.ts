// Combining an origin 206 with a stored part as it streams: real streams, a real
// disk store on a temp dir, a real origin on port 0 through the origin client.

import fs from 'node:fs/promises'
import { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { bodyOf, sri } from '../cache/test-support.ts'
import { createCacheStore } from '../cache/tiered-store.ts'
import type { CacheStore, NewEntry } from '../cache/types.ts'
import { bodyBytes, startOrigin, tempDir, whenReached, type TestOrigin } from '../test-support/servers.ts'
import type { FillDeps, FillRequest, FillTarget } from './fill.ts'
import { createOriginClient, type OriginClient } from './origin.ts'
import { concatenated, sliced, startPartFill } from './part-fill.ts'

const readAll = bodyBytes

describe('concatenated and sliced bodies', () => {
  it('streams pieces in order, and a slice of them', async () => {
    const pieces = () => [{ kind: 'buffer' as const, buffer: Buffer.from('ab'), tier: 'memory' as const }, Readable.from([Buffer.from('cde'), Buffer.from('fg')]), undefined, { kind: 'stream' as const, stream: Readable.from([Buffer.from('hij')]), tier: 'disk' as const }]
    expect((await readAll(concatenated(pieces()))).toString()).toBe('abcdefghij')
    for (const [offset, length] of [[0, 10], [2, 5], [3, 1], [9, 1], [0, 0]] as const) {
      expect((await readAll(sliced(concatenated(pieces()), offset, length))).toString(), `${offset}+${length}`).toBe('abcdefghij'.slice(offset, offset + length))
    }
  })

  it('reads its source to the end, past the slice', async () => {
    const source = concatenated([Readable.from([Buffer.from('0123'), Buffer.from('4567')])])
    let ended = false
    source.on('end', () => (ended = true))
    expect((await readAll(sliced(source, 1, 2))).toString()).toBe('12')
    expect(ended).toBe(true)
  })

  it('closes every piece, read or not, when it is closed early', async () => {
    const first = Readable.from([Buffer.from('0123')])
    const origin = new Readable({ read() {} })
    const stored = new Readable({ read() {} })
    const slice = sliced(concatenated([first, origin, { kind: 'stream', stream: stored, tier: 'disk' }]), 0, 4)
    slice.destroy()
    // Each piece ends by its 'close' (finished() settles at once for one closed already).
    await Promise.all([first, origin, stored].map((piece) => finished(piece).catch(() => {})))
    expect([first.destroyed, origin.destroyed, stored.destroyed]).toEqual([true, true, true])
  })
})

describe('startPartFill', () => {
  const SIZE = 300 * 1024
  const BODY = bodyOf(SIZE, 7)
  const KEY = 'http://site.test/file'
  let dir: string
  let origin: TestOrigin
  let client: OriginClient
  let store: CacheStore
  let etag: string

  beforeEach(async () => {
    dir = await tempDir()
    etag = '"one"'
    // Answers `Range: bytes=N-` with the rest of BODY, as a file server does.
    origin = await startOrigin((req, res) => {
      const start = Number(/^bytes=(\d+)-$/.exec(String(req.headers.range))?.[1] ?? 0)
      res.writeHead(206, { 'cache-control': 'max-age=60', etag, 'content-range': `bytes ${start}-${SIZE - 1}/${SIZE}`, 'content-length': String(SIZE - start) })
      res.end(BODY.subarray(start))
    })
    client = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000 })
    // No memory tier: the stored part is read back from disk as a stream.
    store = await createCacheStore({ dir, maxBytes: 1e8, memoryBytes: 0, maxObjectBytes: 1e7 })
  })

  afterEach(async () => {
    await store.close()
    await client.close()
    await origin.close()
    await fs.rm(dir, { recursive: true, force: true })
  })

  const deps = (): FillDeps => ({ store, storeRules: { cacheSetCookie: false, heuristicFreshness: false }, maxObjectBytes: 1e7, log: () => {}, now: Date.now })
  const target = (): FillTarget => ({ key: KEY, url: KEY, host: 'site.test', origin: new URL(origin.url) })
  const request: FillRequest = { method: 'GET', headers: {}, requestTime: Date.now() }

  /** Store bytes 0..end-1 of BODY as a part, and wait until it is on disk. */
  async function storePart(end: number, partEtag = '"one"'): Promise<void> {
    const now = Date.now()
    const entry: NewEntry = {
      key: KEY,
      variant: '~part',
      url: KEY,
      host: 'site.test',
      status: 206,
      headers: { etag: partEtag, 'content-range': `bytes 0-${end - 1}/${SIZE}`, 'content-length': String(end), 'x-from-part': 'yes' },
      varyHeaders: {},
      policy: {},
      storedAt: now,
      staleAt: now + 60_000,
      deleteAt: now + 3_600_000,
      tags: [],
      contentType: '',
      origin: new URL(origin.url).href,
    }
    expect(await store.put(entry, BODY.subarray(0, end))).toBeDefined()
    await store.drain()
  }

  const fetchRest = (from: number) => client.send({ origin: new URL(origin.url), method: 'GET', path: '/file', headers: { range: `bytes=${from}-` } })

  it('streams the stored part and the origin’s rest as the whole response, and stores it as a new complete entry', async () => {
    await storePart(100_000)
    const taken = await startPartFill(deps(), target(), request, await fetchRest(100_000), 'whole')
    expect(taken?.response.status).toBe(200)
    expect(taken?.fill.headers['content-length']).toBe(String(SIZE))
    expect(taken?.fill.headers['content-range']).toBeUndefined()
    // §3.4: fields only the stored part had are kept.
    expect(taken?.fill.headers['x-from-part']).toBe('yes')
    expect((await readAll(taken!.fill.body)).equals(BODY)).toBe(true)
    const outcome = await taken!.fill.outcome
    expect(outcome.meta).toMatchObject({ status: 200, variant: '', size: SIZE })
    // The part it completed is dropped.
    await whenReached(store, () => store.variant(KEY, '~part') === undefined)
    await store.drain()
    expect(store.variant(KEY, '')?.integrity).toBe(sri(BODY))
    const stored = await store.read(KEY, '')
    const bytes = stored?.kind === 'buffer' ? stored.buffer : await readAll(stored!.stream)
    expect(bytes.equals(BODY)).toBe(true)
  })

  it('gives a range client only the origin’s bytes while the cache keeps the union', async () => {
    await storePart(100_000)
    const taken = await startPartFill(deps(), target(), request, await fetchRest(50_000), 'part')
    expect(taken?.response.status).toBe(206)
    expect(taken?.fill.headers['content-range']).toBe(`bytes 50000-${SIZE - 1}/${SIZE}`)
    expect((await readAll(taken!.fill.body)).equals(BODY.subarray(50_000))).toBe(true)
    expect((await taken!.fill.outcome).meta).toMatchObject({ status: 200, size: SIZE })
  })

  it('does not combine with a part of another representation', async () => {
    await storePart(100_000, '"old"')
    const res = await fetchRest(100_000)
    expect(await startPartFill(deps(), target(), request, res, 'whole')).toBeUndefined()
    res.body.resume()
    // As a range answer it is stored on its own, replacing the old part.
    const taken = await startPartFill(deps(), target(), request, await fetchRest(100_000), 'part')
    expect((await readAll(taken!.fill.body)).equals(BODY.subarray(100_000))).toBe(true)
    expect((await taken!.fill.outcome).meta).toMatchObject({ status: 206, variant: '~part', size: SIZE - 100_000 })
    expect(store.variant(KEY, '')).toBeUndefined()
  })
})
