import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Kysely } from 'kysely'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import { bodyOf, bytesOf, newEntry, put, sri } from '../cache/test-support.ts'
import type { CacheStore, EntryMeta, NewEntry } from '../cache/types.ts'
import type { Database } from './database.ts'
import { FRAMES_PIECE_OBJECTS, FramesPiece, INTERNAL_BASE_PATH, META_BYTES_HEADER, OBJECTS_CONTENT_TYPE, createInternalApp } from './internal-routes.ts'
import { COPIES_PER_TURN, OBJECTS_PER_REQUEST, ROWS_PER_QUERY, createPopulator } from './populate.ts'
import type { FillFn, PopulatorOptions } from './populate.ts'
import { recordStored, toEntryRecord, upsertNode } from './repositories.ts'
import { applyOps } from './ops.ts'
import { TURN_SLICE_MS } from '../turn-budget.ts'
import { turnsDuring, whenReached } from '../test-support/servers.ts'
import { captureLog, freshManifest } from './test-helpers.ts'

const SECRET = 'a-cluster-secret-of-some-length'

async function openStore(dir: string): Promise<CacheStore> {
  return createCacheStore({ dir, maxBytes: 1e9, memoryBytes: 8 * 1024 * 1024, maxObjectBytes: 50 * 1024 * 1024 })
}

/** The frames of an /objects answer: each one's metadata and body. */
function framesOf(buf: Buffer): Array<{ meta: Record<string, unknown>; body: Buffer }> {
  const frames: Array<{ meta: Record<string, unknown>; body: Buffer }> = []
  while (buf.length > 0) {
    const n = buf.readUInt32BE(0)
    const meta = JSON.parse(buf.subarray(4, 4 + n).toString()) as Record<string, unknown>
    const size = meta.missing ? 0 : (meta.size as number)
    frames.push({ meta, body: buf.subarray(4 + n, 4 + n + size) })
    buf = buf.subarray(4 + n + size)
  }
  return frames
}

async function listen(fetchHandler: (req: Request) => Response | Promise<Response>): Promise<{ url: string; close(): Promise<void> }> {
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: fetchHandler, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A peer answering /objects with every frame asked for in one piece; `bodyFor(i)` is the body it sends for metas[i]. */
function framingPeer(metas: ReadonlyArray<{ key: string }>, bodyFor: (i: number) => Buffer): Promise<{ url: string; close(): Promise<void> }> {
  return listen(async (req) => {
    const { items } = (await req.json()) as { items: Array<{ key: string }> }
    const parts: Buffer[] = []
    for (const item of items) {
      const i = metas.findIndex((m) => m.key === item.key)
      const json = Buffer.from(JSON.stringify(metas[i]))
      const head = Buffer.alloc(4)
      head.writeUInt32BE(json.length)
      parts.push(head, json, bodyFor(i))
    }
    return new Response(new Uint8Array(Buffer.concat(parts)), { headers: { 'content-type': OBJECTS_CONTENT_TYPE } })
  })
}

/**
 * `target` with some of its methods replaced, as the populator sees it: for tests that watch
 * when (in which turn of the event loop) the populator calls them.
 */
function storeWith(target: CacheStore, overrides: Partial<Pick<CacheStore, 'variants' | 'writer'>>): CacheStore {
  return new Proxy(target, {
    get(t, prop) {
      const own = (overrides as Record<PropertyKey, unknown>)[prop]
      if (own !== undefined) return own
      const value = Reflect.get(t, prop, t) as unknown
      return typeof value === 'function' ? value.bind(t) : value
    },
  })
}

describe('populate', () => {
  let db: Kysely<Database>
  let dir: string
  let cleanup: () => Promise<void>
  let peerStore: CacheStore
  let localStore: CacheStore
  let peer: { url: string; close(): Promise<void> }
  let peerRequests: number
  const closers: (() => Promise<void>)[] = []

  beforeEach(async () => {
    ;({ db, dir, cleanup } = await freshManifest())
    peerStore = await openStore(path.join(dir, 'peer'))
    localStore = await openStore(path.join(dir, 'local'))
    const root = new Hono()
    root.use('*', async (_c, next) => {
      peerRequests++
      await next()
    })
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: peerStore, log: captureLog().log }))
    peer = await listen(root.fetch)
    peerRequests = 0
    await upsertNode(db, { id: 'peer', region: 'r', internalUrl: peer.url, startedAt: Date.now() }, Date.now())
    await upsertNode(db, { id: 'me', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: Date.now() }, Date.now())
  })

  afterEach(async () => {
    for (const close of closers.splice(0)) await close()
    await peer.close()
    await peerStore.close()
    await localStore.close()
    await cleanup()
  })

  /** Store a body on the peer and record in the manifest that the peer holds it. */
  async function onPeer(url: string, body: Buffer, overrides: Partial<NewEntry> = {}): Promise<EntryMeta> {
    const meta = (await put(peerStore, newEntry(url, overrides), body))!
    await recordStored(db, 'peer', toEntryRecord(meta))
    return meta
  }

  function populator(overrides: Partial<PopulatorOptions> = {}, fill: FillFn = () => Promise.reject(new Error('the origin must not be asked'))) {
    const p = createPopulator({ readDb: () => db, store: localStore, nodeId: 'me', clusterSecret: SECRET, fill, concurrency: 4, log: captureLog().log, ...overrides })
    closers.push(() => p.close())
    return p
  }

  async function runToEnd(p: ReturnType<typeof createPopulator>) {
    expect(await p.run()).toEqual({ started: true })
    await p.idle()
    return p.status()!
  }

  it('copies what a peer holds, verified, without asking the origin', async () => {
    const small = bodyOf(5_000, 1)
    const large = bodyOf(3 * 1024 * 1024 + 17, 2) // streamed both ways
    const a = await onPeer('https://ex.com/a', small, { tags: ['t1'], headers: { 'content-type': 'text/plain', etag: '"a"' } })
    const b = await onPeer('https://ex.com/b', large)
    const c = await onPeer('https://ex.com/c', Buffer.alloc(0))

    const status = await runToEnd(populator())
    expect(status).toMatchObject({ running: false, done: 3, fromPeers: 3, fromOrigin: 0, skipped: 0, failed: 0, bytes: small.length + large.length, diskFull: false })
    expect(status.finishedAt).toBeGreaterThanOrEqual(status.startedAt)
    for (const [meta, body] of [
      [a, small],
      [b, large],
      [c, Buffer.alloc(0)],
    ] as const) {
      const [local] = await localStore.variants(meta.key)
      // Marked as copied from the peer, for the admin's "Came from".
      expect(local).toMatchObject({ integrity: meta.integrity, size: meta.size, storedAt: meta.storedAt, staleAt: meta.staleAt, headers: meta.headers, tags: meta.tags, via: 'peer:peer' })
      expect((await bytesOf((await localStore.read(meta.key, ''))!)).equals(body)).toBe(true)
    }

    // A second run finds nothing missing... once the manifest knows this node holds them.
    for (const m of [a, b, c]) await recordStored(db, 'me', toEntryRecord(m))
    expect(await runToEnd(populator())).toMatchObject({ done: 0, skipped: 0, failed: 0 })
  })

  it('a run for one key warms every key of its URL (one per header or cookie value a rule keys on), and nothing else', async () => {
    // A rule keyed on x-tenant and the lang cookie: one key per value, all with the URL form /t.
    const keys = ['https://ex.com/t#h:x-tenant=a&c:lang=', 'https://ex.com/t#h:x-tenant=b&c:lang=', 'https://ex.com/t#h:x-tenant=&c:lang=fr']
    for (const [i, key] of keys.entries()) await onPeer(key, bodyOf(100, i + 1), { key, url: 'https://ex.com/t' })
    const other = await onPeer('https://ex.com/t2', bodyOf(100, 9))

    const p = populator()
    expect(await p.run({ key: keys[0], url: 'https://ex.com/t' })).toEqual({ started: true })
    await p.idle()
    expect(p.status()).toMatchObject({ key: keys[0], done: 3, fromPeers: 3, fromOrigin: 0, failed: 0 })
    for (const key of keys) expect(await localStore.variants(key)).toMatchObject([{ key, via: 'peer:peer' }])
    expect(await localStore.variants(other.key)).toEqual([])

    // Without the URL, a key stays a key: only its own variants.
    const q = populator()
    await q.run({ key: other.key })
    await q.idle()
    expect(q.status()).toMatchObject({ done: 1 })
  })

  it('falls back to the origin with the stored Vary headers when no peer can give it', async () => {
    const calls: { url: string; headers: Record<string, string> }[] = []
    const fill: FillFn = async (url, headers) => {
      calls.push({ url: url.href, headers })
      return { stored: true, status: 200, bytes: 42 }
    }
    const now = Date.now()
    // Nobody holds it.
    await recordStored(db, 'gone', { ...toEntryRecord({ ...newEntry('https://ex.com/orphan'), size: 1 }), varyHeaders: { 'accept-encoding': 'br,gzip' } })
    // The manifest says the peer holds it, but the peer does not any more (404).
    await recordStored(db, 'peer', toEntryRecord({ ...newEntry('https://ex.com/evicted'), size: 1 }))
    // Depends on a cookie: only a digest is kept, so it cannot be asked for again.
    await recordStored(db, 'gone', { ...toEntryRecord({ ...newEntry('https://ex.com/private', { variant: 'v' }), size: 1 }), varyHeaders: { cookie: 'sha256:abc' } })
    // Stale already: not listed at all.
    await recordStored(db, 'gone', toEntryRecord({ ...newEntry('https://ex.com/stale', { staleAt: now - 1 }), size: 1 }))
    // A stored part (one range of a 206): fetching the whole instead would never give this variant.
    await recordStored(db, 'gone', toEntryRecord({ ...newEntry('https://ex.com/part', { variant: '~part', status: 206 }), size: 1 }))

    const status = await runToEnd(populator({}, fill))
    expect(status).toMatchObject({ done: 2, skipped: 2, failed: 0, bytes: 84 })
    expect(calls.sort((x, y) => x.url.localeCompare(y.url))).toEqual([
      { url: 'https://ex.com/evicted', headers: {} },
      { url: 'https://ex.com/orphan', headers: { 'accept-encoding': 'br,gzip' } },
    ])
    expect(peerRequests).toBe(1)
  })

  it('one failure never aborts the run: a bad peer copy falls back to the origin, an origin error is counted', async () => {
    // A peer that lies about integrity.
    const liar = await listen(async (req) => {
      const key = new URL(req.url).searchParams.get('key')!
      const body = Buffer.from('tampered body')
      const meta = { ...newEntry(key), size: body.length, integrity: 'sha512-' + 'A'.repeat(86) + '==' }
      const prelude = Buffer.from(JSON.stringify(meta))
      return new Response(new Uint8Array(Buffer.concat([prelude, body])), { headers: { [META_BYTES_HEADER]: String(prelude.length) } })
    })
    closers.push(() => liar.close())
    await upsertNode(db, { id: 'liar', region: 'r', internalUrl: liar.url, startedAt: Date.now() }, Date.now())
    for (let i = 0; i < 6; i++) await onPeer(`https://ex.com/ok${i}`, bodyOf(100, i))
    await recordStored(db, 'liar', toEntryRecord({ ...newEntry('https://ex.com/lied'), size: 13 }))
    await recordStored(db, 'nobody', toEntryRecord({ ...newEntry('https://ex.com/broken'), size: 1 }))
    await recordStored(db, 'nobody', toEntryRecord({ ...newEntry('https://ex.com/uncacheable'), size: 1 }))

    const filled: string[] = []
    const fill: FillFn = async (url) => {
      filled.push(url.pathname)
      if (url.pathname === '/broken') throw new Error('connect ECONNREFUSED')
      if (url.pathname === '/uncacheable') return { stored: false, status: 200, bytes: 10 }
      return { stored: true, status: 200, bytes: 7 }
    }
    const { log, lines } = captureLog()
    const status = await runToEnd(populator({ concurrency: 2, log }, fill))
    expect(status).toMatchObject({ done: 7, skipped: 0, failed: 2 })
    expect(filled.sort()).toEqual(['/broken', '/lied', '/uncacheable'])
    // The tampered copy never became visible here.
    expect(await localStore.variants('https://ex.com/lied')).toEqual([])
    expect(lines.filter((l) => l.msg === 'populate could not fetch an entry').map((l) => l.fields?.url).sort()).toEqual(['https://ex.com/broken', 'https://ex.com/uncacheable'])
  })

  it('never runs twice at once; a later run starts again', async () => {
    for (let i = 0; i < 3; i++) await recordStored(db, 'nobody', toEntryRecord({ ...newEntry(`https://ex.com/slow${i}`), size: 1 }))
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let inFlight = 0
    let maxInFlight = 0
    let twoInFlight!: () => void
    const bothStarted = new Promise<void>((r) => (twoInFlight = r))
    const fill: FillFn = async () => {
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      if (inFlight === 2) twoInFlight()
      await gate
      inFlight--
      return { stored: true, status: 200, bytes: 1 }
    }
    const p = populator({ concurrency: 2 }, fill)
    expect(await p.run()).toEqual({ started: true })
    expect(await p.run()).toEqual({ started: false })
    await bothStarted
    expect(p.status()).toMatchObject({ running: true, done: 0 })
    release()
    await p.idle()
    expect(maxInFlight).toBe(2) // bounded by the concurrency
    expect(p.status()).toMatchObject({ running: false, done: 3 })
    expect(await p.run()).toEqual({ started: true })
    await p.idle()
  })

  it('runs in the background on an interval, and close() stops it', async () => {
    await recordStored(db, 'nobody', toEntryRecord({ ...newEntry('https://ex.com/bg'), size: 1 }))
    let fills = 0
    let secondRun!: () => void
    const twoRuns = new Promise<void>((r) => (secondRun = r))
    const p = populator({}, async () => {
      if (++fills === 2) secondRun()
      return { stored: false, status: 500, bytes: 0 }
    })
    p.start(0.05)
    await twoRuns
    await p.close()
    const after = fills
    // Three of its periods go by (a timer of the same period fires three times, after its own
    // interval would have): a run it started meanwhile would have called fill by idle().
    await new Promise<void>((resolve) => {
      let periods = 0
      const t = setInterval(() => ++periods === 3 && (clearInterval(t), resolve()), 50)
    })
    await p.idle()
    expect(fills).toBe(after)
    expect(await p.run()).toEqual({ started: false })
  })

  it('drops a peer copy that a purge this node already applied covers', async () => {
    const meta = await onPeer('https://ex.com/purged', bodyOf(10, 3))
    const fill: FillFn = async () => ({ stored: true, status: 200, bytes: 9 })
    const status = await runToEnd(populator({ isPurged: (m) => m.url === meta.url }, fill))
    // The old copy is not kept: the origin's current one is fetched instead.
    expect(status).toMatchObject({ done: 1, bytes: 9 })
    expect(await localStore.variants(meta.key)).toEqual([])
  })

  it('keeps a peer copy that a soft purge this node already applied covers, marked stale as here', async () => {
    const meta = await onPeer('https://ex.com/soft', bodyOf(10, 4))
    const fill: FillFn = async () => {
      throw new Error('the origin must not be asked')
    }
    const purgedAt = Date.now() - 5
    const status = await runToEnd(populator({ isPurged: () => false, softPurgedAt: (m) => (m.url === meta.url ? purgedAt : undefined) }, fill))
    expect(status).toMatchObject({ done: 1, failed: 0 })
    const [kept] = await localStore.variants(meta.key)
    expect(kept?.softPurgedAt).toBe(purgedAt)
    expect(kept?.staleAt).toBeLessThanOrEqual(purgedAt)
  })

  it('internal /object streams a stored variant with its metadata, 404 when absent, 401 without the secret', async () => {
    const meta = await onPeer('https://ex.com/obj', bodyOf(1234, 9), { variant: 'v1' })
    const get = (q: string, auth = `Bearer ${SECRET}`) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
        http
          .get(`${peer.url}${INTERNAL_BASE_PATH}/object?${q}`, { headers: { authorization: auth } }, (res) => {
            const chunks: Buffer[] = []
            res.on('data', (c: Buffer) => chunks.push(c))
            res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }))
          })
          .on('error', reject)
      })
    const ok = await get(`key=${encodeURIComponent(meta.key)}&variant=v1`)
    expect(ok.status).toBe(200)
    const n = Number(ok.headers[META_BYTES_HEADER])
    expect(JSON.parse(ok.body.subarray(0, n).toString())).toEqual(JSON.parse(JSON.stringify(meta)))
    expect(ok.body.subarray(n).equals(bodyOf(1234, 9))).toBe(true)
    expect(ok.headers['cache-control']).toBe('no-store')
    expect((await get(`key=${encodeURIComponent(meta.key)}&variant=other`)).status).toBe(404)
    expect((await get('variant=v1')).status).toBe(400)
    expect((await get(`key=${encodeURIComponent(meta.key)}&variant=v1`, 'Bearer wrong')).status).toBe(401)
  })

  it('copies many entries from a peer per request, and asks for the ones a batch did not bring one by one', async () => {
    const metas: EntryMeta[] = []
    for (let i = 0; i < OBJECTS_PER_REQUEST + 8; i++) metas.push(await onPeer(`https://ex.com/many/${i}`, bodyOf(300 + i, i + 1)))
    // The manifest says the peer holds these two, but it no longer does.
    await recordStored(db, 'peer', toEntryRecord({ ...newEntry('https://ex.com/many/gone-a'), size: 1 }))
    await recordStored(db, 'peer', toEntryRecord({ ...newEntry('https://ex.com/many/gone-b'), size: 1 }))
    const filled: string[] = []
    const fill: FillFn = async (url) => {
      filled.push(url.pathname)
      return { stored: true, status: 200, bytes: 1 }
    }
    const status = await runToEnd(populator({ concurrency: 1 }, fill))
    expect(status).toMatchObject({ done: metas.length + 2, fromPeers: metas.length, fromOrigin: 2, skipped: 0, failed: 0 })
    // Two /objects requests (OBJECTS_PER_REQUEST + 10 entries); the peer is not asked again for what it said it lacks.
    expect(peerRequests).toBe(2)
    expect(filled.sort()).toEqual(['/many/gone-a', '/many/gone-b'])
    for (const meta of [metas[0]!, metas[metas.length - 1]!]) {
      expect((await localStore.variants(meta.key))[0]).toMatchObject({ integrity: meta.integrity, via: 'peer:peer' })
    }
  })

  it('never stores a batch copy whose body is not the one its frame announced, and still takes the copies after it', async () => {
    const good = [bodyOf(900, 1), bodyOf(900, 2), bodyOf(900, 3)]
    const metas = good.map((body, i) => ({ ...newEntry(`https://ex.com/framed/${i}`), size: body.length, integrity: sri(body) }))
    // A peer whose second frame carries other bytes (same length) than its metadata announces.
    const liar = await framingPeer(metas, (i) => (i === 1 ? bodyOf(900, 99) : good[i]!))
    closers.push(() => liar.close())
    await upsertNode(db, { id: 'liar', region: 'r', internalUrl: liar.url, startedAt: Date.now() }, Date.now())
    for (const meta of metas) await recordStored(db, 'liar', toEntryRecord(meta))
    const filled: string[] = []
    const fill: FillFn = async (url) => {
      filled.push(url.pathname)
      return { stored: false, status: 503, bytes: 0 }
    }
    const status = await runToEnd(populator({ concurrency: 1 }, fill))
    expect(status).toMatchObject({ done: 2, fromPeers: 2, failed: 1 })
    expect(filled).toEqual(['/framed/1'])
    await localStore.drain()
    expect(localStore.variants(metas[1]!.key)).toEqual([])
    for (const i of [0, 2]) expect((await bytesOf((await localStore.read(metas[i]!.key, ''))!)).equals(good[i]!)).toBe(true)
  })

  it('never stores a batch copy whose metadata is incomplete or mistyped, and keeps only a string origin', async () => {
    const body = bodyOf(600, 7)
    const entryOf = (i: number) => ({ ...newEntry(`https://ex.com/checked/${i}`), size: body.length, integrity: sri(body) })
    const defects: Array<(m: Record<string, unknown>) => void> = [
      (m) => (m.headers = { 'content-type': 7 }),
      (m) => (m.varyHeaders = ['accept']),
      (m) => (m.tags = ['news', 3]),
      (m) => (m.storedAt = '1700000000000'),
      (m) => (m.staleAt = null),
      (m) => delete m.policy,
      (m) => delete m.contentType,
    ]
    for (const [i, defect] of defects.entries()) {
      const meta: Record<string, unknown> = entryOf(i)
      defect(meta)
      const liar = await framingPeer([meta as { key: string }], () => body)
      closers.push(() => liar.close())
      const id = `liar${i}`
      await upsertNode(db, { id, region: 'r', internalUrl: liar.url, startedAt: Date.now() }, Date.now())
      await recordStored(db, id, toEntryRecord(entryOf(i) as EntryMeta))
      const filled: string[] = []
      const p = populator({ concurrency: 1 }, async (url) => {
        filled.push(url.pathname)
        return { stored: false, status: 503, bytes: 0 }
      })
      await p.run({ key: meta.key as string })
      await p.idle()
      const status = p.status()!
      expect({ i, done: status.done, failed: status.failed, filled }).toEqual({ i, done: 0, failed: 1, filled: [`/checked/${i}`] })
      expect(localStore.variants(meta.key as string)).toEqual([])
    }
    // An origin that is not a string is dropped, not stored; the copy is kept, marked as the peer's.
    const odd = { ...entryOf(99), origin: 42 }
    const peerOfOdd = await framingPeer([odd], () => body)
    closers.push(() => peerOfOdd.close())
    await upsertNode(db, { id: 'odd', region: 'r', internalUrl: peerOfOdd.url, startedAt: Date.now() }, Date.now())
    await recordStored(db, 'odd', toEntryRecord(entryOf(99) as EntryMeta))
    const p = populator({ concurrency: 1 })
    await p.run({ key: odd.key })
    await p.idle()
    expect(p.status()).toMatchObject({ done: 1, fromPeers: 1 })
    const [stored] = localStore.variants(odd.key)
    expect(stored).toMatchObject({ key: odd.key, integrity: sri(body), via: 'peer:odd' })
    expect(stored!.origin).toBeUndefined()
  })

  describe('a peer that breaks off in the middle of a batch', () => {
    /** A peer that sends `good` whole frames of what it is asked for, then a frame with half its body, then misbehaves. */
    async function brokenPeer(mode: 'reset' | 'truncate' | 'stall', bodies: Map<string, { meta: EntryMeta; body: Buffer }>, good: number) {
      const server = http.createServer((req, res) => {
        const chunks: Buffer[] = []
        req.on('data', (c: Buffer) => chunks.push(c))
        req.on('end', () => {
          const { items } = JSON.parse(Buffer.concat(chunks).toString()) as { items: Array<{ key: string }> }
          res.writeHead(200, { 'content-type': OBJECTS_CONTENT_TYPE })
          items.forEach((item, i) => {
            if (i > good) return
            const { meta, body } = bodies.get(item.key)!
            const json = Buffer.from(JSON.stringify(meta))
            const head = Buffer.alloc(4)
            head.writeUInt32BE(json.length)
            res.write(Buffer.concat([head, json, i < good ? body : body.subarray(0, body.length >> 1)]))
          })
          // Misbehave once the client has read the whole frames: their copies are in its store.
          const sent = items.slice(0, good).map((item) => item.key)
          void whenReached(localStore, async () => (await Promise.all(sent.map((key) => localStore.variants(key)))).every((v) => v.length > 0)).then(() => {
            if (mode === 'reset') res.socket?.destroy()
            else if (mode === 'truncate') res.end()
            // 'stall': nothing more, ever (the server's close ends it).
          })
        })
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      closers.push(
        () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          }),
      )
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    }

    for (const [mode, reason] of [
      ['reset', /the peer connection failed inside a body/],
      ['truncate', /the peer closed the connection inside a body/],
      ['stall', /peer sent nothing for 300 ms/],
    ] as const) {
      it(`(${mode}) keeps the copies it brought, logs why, and takes the rest from another peer without asking the origin`, async () => {
        const bodies = new Map<string, { meta: EntryMeta; body: Buffer }>()
        for (let i = 0; i < 20; i++) {
          const body = bodyOf(2000, i + 1)
          const meta = await onPeer(`https://ex.com/broken-${mode}/${i}`, body)
          bodies.set(meta.key, { meta, body })
        }
        const url = await brokenPeer(mode, bodies, 3)
        await upsertNode(db, { id: 'broken', region: 'r', internalUrl: url, startedAt: Date.now() }, Date.now())
        for (const { meta } of bodies.values()) await recordStored(db, 'broken', toEntryRecord(meta))
        const { log, lines } = captureLog()
        // Only a stalled peer waits for the idle timeout: the others end the batch themselves.
        const status = await runToEnd(populator({ concurrency: 1, log, ...(mode === 'stall' && { peerIdleTimeoutMs: 300 }) }))
        expect(status).toMatchObject({ done: 20, fromPeers: 20, fromOrigin: 0, failed: 0 })
        const brokeOff = lines.filter((l) => l.msg === 'populate: a batch from a peer broke off; asking for the rest one by one')
        expect(brokeOff).toHaveLength(1)
        expect(brokeOff[0]).toMatchObject({ level: 'warn', fields: { peer: 'broken', framesRead: 3 } })
        expect(String(brokeOff[0]!.fields?.error)).toMatch(reason)
        // The half-sent copy was never stored from the broken peer; every copy is the peer's own body.
        for (const { meta, body } of bodies.values()) expect((await bytesOf((await localStore.read(meta.key, ''))!)).equals(body)).toBe(true)
      })
    }
  })

  it('shares the entries several peers hold among them instead of asking the first for all', async () => {
    const otherStore = await openStore(path.join(dir, 'other'))
    closers.push(() => otherStore.close())
    let otherRequests = 0
    const otherRoot = new Hono()
    otherRoot.use('*', async (_c, next) => {
      otherRequests++
      await next()
    })
    otherRoot.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: otherStore, log: captureLog().log }))
    const other = await listen(otherRoot.fetch)
    closers.push(() => other.close())
    await upsertNode(db, { id: 'other', region: 'r', internalUrl: other.url, startedAt: Date.now() }, Date.now())
    for (let i = 0; i < 20; i++) {
      const meta = await onPeer(`https://ex.com/shared/${i}`, bodyOf(500, i + 1))
      await put(otherStore, newEntry(meta.url), bodyOf(500, i + 1))
      await recordStored(db, 'other', toEntryRecord(meta))
    }
    const status = await runToEnd(populator({ concurrency: 1 }))
    expect(status).toMatchObject({ done: 20, fromPeers: 20, failed: 0 })
    // One /objects request to each, half of the entries each.
    expect([peerRequests, otherRequests]).toEqual([1, 1])
  })

  it('waits for room in a full disk write queue instead of failing copies or asking the origin', async () => {
    // A write queue of two bodies: the copies of a 40-entry batch arrive faster than that. The
    // batch (2.5 MiB) is more than the receiver reads ahead, so reading the peer's response also
    // pauses and resumes.
    const size = 64 * 1024
    const slow = await createCacheStore({ dir: path.join(dir, 'small-queue'), maxBytes: 1e9, memoryBytes: 0, maxObjectBytes: 1024 * 1024, writeQueueBytes: 2 * size })
    closers.push(() => slow.close())
    const metas: EntryMeta[] = []
    for (let i = 0; i < 40; i++) metas.push(await onPeer(`https://ex.com/queued/${i}`, bodyOf(size, i + 1)))
    const status = await runToEnd(populator({ store: slow, concurrency: 2 }))
    expect(status).toMatchObject({ done: 40, fromPeers: 40, fromOrigin: 0, skipped: 0, failed: 0 })
    expect(slow.stats().writesSkipped).toBe(0)
    await slow.drain()
    for (const meta of [metas[0]!, metas[39]!]) expect((await bytesOf((await slow.read(meta.key, ''))!)).equals(bodyOf(size, metas.indexOf(meta) + 1))).toBe(true)
  })

  it('internal /objects streams frames of metadata and body, marks what it lacks, and refuses a bad request', async () => {
    const a = await onPeer('https://ex.com/fa', bodyOf(700, 3))
    const b = await onPeer('https://ex.com/fb', Buffer.alloc(0))
    const post = (body: unknown, auth = `Bearer ${SECRET}`) =>
      fetch(`${peer.url}${INTERNAL_BASE_PATH}/objects`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const res = await post({ items: [{ key: a.key, variant: '' }, { key: 'https://ex.com/none', variant: '' }, { key: b.key, variant: '' }] })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe(OBJECTS_CONTENT_TYPE)
    const frames = framesOf(Buffer.from(await res.arrayBuffer()))
    expect(frames.map((f) => f.meta.missing ?? f.meta.integrity)).toEqual([a.integrity, true, b.integrity])
    expect(frames[0]!.body.equals(bodyOf(700, 3))).toBe(true)
    expect((await post({ items: [] })).status).toBe(400)
    expect((await post({ items: [{ key: 1 }] })).status).toBe(400)
    expect((await post({ items: [{ key: a.key, variant: '' }] }, 'Bearer wrong')).status).toBe(401)
  })

  it('internal /objects gives nothing for a body kept in memory only, small or large: this node does not hold it', async () => {
    const full = await createCacheStore({ dir: path.join(dir, 'memory-only'), maxBytes: 1e9, memoryBytes: 8 * 1024 * 1024, maxObjectBytes: 50 * 1024 * 1024, writeQueueJobs: 1 })
    closers.push(() => full.close())
    await full.drain()
    const root = new Hono()
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: full, log: captureLog().log }))
    const node = await listen(root.fetch)
    closers.push(() => node.close())
    // One job fills the queue of one; the bodies committed in the same turn are kept in memory only.
    const filler = full.put(newEntry('https://ex.com/mo/filler'), bodyOf(100, 1))
    const kept = [full.put(newEntry('https://ex.com/mo/small'), bodyOf(700, 2)), full.put(newEntry('https://ex.com/mo/large'), bodyOf(100 * 1024, 3))]
    await filler
    for (const meta of await Promise.all(kept)) expect(meta?.integrity).toMatch(/^pending-memory-/)
    await full.drain()
    const items = ['small', 'large', 'filler'].map((name) => ({ key: `https://ex.com/mo/${name}`, variant: '' }))
    const res = await fetch(`${node.url}${INTERNAL_BASE_PATH}/objects`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' }, body: JSON.stringify({ items }) })
    const frames = framesOf(Buffer.from(await res.arrayBuffer()))
    expect(frames.map((f) => f.meta.missing ?? f.meta.key)).toEqual([true, true, 'https://ex.com/mo/filler'])
  })

  it('lays a piece of /objects frames out once: each head counts its metadata in UTF-8 bytes, each body follows it', () => {
    const piece = new FramesPiece()
    const withBody = { key: 'https://ex.com/caf\u00e9', tags: ['\u00fcber', '\u{1f600}'] }
    const body = bodyOf(300, 5)
    piece.add(withBody, body)
    piece.add({ key: 'https://ex.com/none', variant: '', missing: true })
    // A streamed body follows the piece: its frame ends with the metadata.
    piece.add({ key: 'https://ex.com/large', size: 1 << 20 })
    const out = piece.take()
    expect(out.length).toBe(piece.bytes)
    const expected = Buffer.concat(
      [
        [withBody, body],
        [{ key: 'https://ex.com/none', variant: '', missing: true }, undefined],
        [{ key: 'https://ex.com/large', size: 1 << 20 }, undefined],
      ].flatMap(([meta, b]) => {
        const json = Buffer.from(JSON.stringify(meta), 'utf8')
        const head = Buffer.alloc(4)
        head.writeUInt32BE(json.length)
        return b ? [head, json, b as Buffer] : [head, json]
      }),
    )
    expect(out.equals(expected)).toBe(true)
  })

  it('copies nothing more into a full disk, which would evict what this node serves; a run for one key still copies it', async () => {
    await localStore.close()
    localStore = await createCacheStore({ dir: path.join(dir, 'local-full'), maxBytes: 1e9, maxEntries: 2, memoryBytes: 8 * 1024 * 1024, maxObjectBytes: 1024 * 1024 })
    const own = [await put(localStore, newEntry('https://ex.com/own/1'), bodyOf(10, 1)), await put(localStore, newEntry('https://ex.com/own/2'), bodyOf(10, 2))]
    expect(localStore.full()).toBe(true)
    for (let i = 0; i < 5; i++) await onPeer(`https://ex.com/theirs/${i}`, bodyOf(10, 10 + i))
    const log = captureLog()
    const status = await runToEnd(populator({ log: log.log }))
    expect(status).toMatchObject({ done: 0, fromPeers: 0, diskFull: true })
    expect(peerRequests).toBe(0)
    for (const meta of own) expect(await localStore.variants(meta!.key)).toHaveLength(1)
    expect(log.lines.find((l) => l.msg === 'populate run finished')?.fields).toMatchObject({ diskFull: true, done: 0 })
    // The admin's "populate this URL": asked for by name, copied (the least recently used goes).
    const one = populator()
    expect(await one.run({ key: 'https://ex.com/theirs/3' })).toEqual({ started: true })
    await one.idle()
    expect(one.status()).toMatchObject({ done: 1, diskFull: false })
    expect(await localStore.variants('https://ex.com/theirs/3')).toHaveLength(1)
    expect(await localStore.variants('https://ex.com/own/1')).toHaveLength(0)
  })

  it('reads what is missing from the manifest a few hundred rows per query, and copies all of it', async () => {
    // Each query runs on the event loop: a page of thousands of rows in one query held it for
    // 100-330 ms on a node warming from its peers.
    const n = ROWS_PER_QUERY * 2 + 17
    for (let i = 0; i < n; i++) await onPeer(`https://ex.com/rows/${String(i).padStart(4, '0')}`, bodyOf(10, i))
    const rowsPerQuery: number[] = []
    const counted = db.withPlugin({
      transformQuery: (args) => args.node,
      transformResult: async (args) => {
        rowsPerQuery.push(args.result.rows.length)
        return args.result
      },
    })
    const status = await runToEnd(populator({ readDb: () => counted }))
    expect(status).toMatchObject({ done: n, fromPeers: n, failed: 0 })
    expect(Math.max(...rowsPerQuery)).toBeLessThanOrEqual(ROWS_PER_QUERY)
    expect(rowsPerQuery.filter((rows) => rows === ROWS_PER_QUERY).length).toBeGreaterThanOrEqual(2)
  })

  it('reads the hot set a few hundred rows per query through listDb, hottest first, and copies all of it', async () => {
    // Read in one query, the hot set (up to CAJE_READY_HOT_SET rows) and its holders' JSON were
    // decoded in one turn: 113 ms of the event loop on a node warming 10,000 entries.
    const n = ROWS_PER_QUERY * 2 + 17
    const keys: string[] = []
    for (let i = 0; i < n; i++) keys.push((await onPeer(`https://ex.com/hot/${String(i).padStart(4, '0')}`, bodyOf(10, i))).key)
    // Hits rise with i, in ties of three: the hottest is the last.
    await applyOps(db, [{ type: 'hits', nodeId: 'peer', at: Date.now(), counts: keys.map((key, i) => ({ key, hits: 1 + Math.floor(i / 3) })) }])
    // Rows per query of the hot set (the queries that read url_hits).
    const hotQueries = new Set<unknown>()
    const rowsPerQuery: number[] = []
    const counted = db.withPlugin({
      transformQuery: (args) => {
        if (JSON.stringify(args.node).includes('"url_hits"')) hotQueries.add(args.queryId)
        return args.node
      },
      transformResult: async (args) => {
        if (hotQueries.has(args.queryId)) rowsPerQuery.push(args.result.rows.length)
        return args.result
      },
    })
    const stored: string[] = []
    const unsubscribe = localStore.subscribe((e) => void (e.type === 'stored' && stored.push(e.meta.key)))
    try {
      const status = await runToEnd(populator({ listDb: () => counted, hotFirst: n, concurrency: 1 }))
      expect(status).toMatchObject({ done: n, fromPeers: n, failed: 0 })
    } finally {
      unsubscribe()
    }
    expect(rowsPerQuery.length).toBeGreaterThanOrEqual(3)
    expect(Math.max(...rowsPerQuery)).toBeLessThanOrEqual(ROWS_PER_QUERY)
    // Each copied once, in the order of the hot set (hits descending, then key).
    const expected = keys.map((key, i) => ({ key, hits: 1 + Math.floor(i / 3) })).sort((a, b) => b.hits - a.hits || (a.key < b.key ? -1 : 1))
    expect(stored).toEqual(expected.map((e) => e.key))
  })

  it('reads and plans the next page while the copies of the page before it are still being made', async () => {
    // Waiting for every copy of a page before reading the next left the disk writer idle at
    // each page's end. Here the hot set is one page (3 entries) and the rest the next.
    const n = 10
    const keys: string[] = []
    for (let i = 0; i < n; i++) keys.push((await onPeer(`https://ex.com/ahead/${i}`, bodyOf(10, i))).key)
    const hot = keys.slice(0, 3)
    await applyOps(db, [{ type: 'hits', nodeId: 'peer', at: Date.now(), counts: hot.map((key) => ({ key, hits: 5 })) }])
    /** Copies settled when each entry of the second page was planned (looked up in the store). */
    const doneWhenPlanned: number[] = []
    let p: ReturnType<typeof createPopulator> | undefined
    const store = storeWith(localStore, {
      variants: (key: string) => {
        if (!hot.includes(key)) doneWhenPlanned.push(p!.status()!.done)
        return localStore.variants(key)
      },
    })
    p = populator({ store, hotFirst: hot.length, concurrency: 1 })
    expect(await runToEnd(p)).toMatchObject({ done: n, fromPeers: n, failed: 0, skipped: 0 })
    expect(doneWhenPlanned).toHaveLength(n - hot.length)
    expect(Math.min(...doneWhenPlanned)).toBeLessThan(hot.length)
  })

  it('plans a page of entries a few milliseconds per turn, not in one', async () => {
    // Each entry of a page is looked up in the store before it is asked of a peer: a page of
    // 2,000 planned in one chain of promises held the event loop for tens of milliseconds.
    const n = 12
    for (let i = 0; i < n; i++) await onPeer(`https://ex.com/plan/${i}`, bodyOf(10, i))
    const turns = countTurns()
    const lookupTurns: number[] = []
    const store = storeWith(localStore, {
      variants: (key: string) => {
        lookupTurns.push(turns.now)
        // A lookup that takes longer than a turn's slice: the plan must yield after each.
        const until = performance.now() + TURN_SLICE_MS + 1
        while (performance.now() < until);
        return localStore.variants(key)
      },
    })
    try {
      expect(await runToEnd(populator({ store, hotFirst: 0, concurrency: 1 }))).toMatchObject({ done: n, failed: 0 })
    } finally {
      turns.stop()
    }
    // The plan's lookups come first, one per entry: each in a turn of its own.
    const plan = lookupTurns.slice(0, n)
    expect(new Set(plan).size).toBe(n)
  })

  it('stores at most a few copies of one peer response per turn of the event loop', async () => {
    // A peer whose whole response arrives at once: every frame is buffered before the first is stored.
    const bodies = Array.from({ length: COPIES_PER_TURN * 4 }, (_, i) => bodyOf(100, i + 1))
    const metas = bodies.map((body, i) => ({ ...newEntry(`https://ex.com/turns/${i}`), size: body.length, integrity: sri(body) }))
    const fast = await framingPeer(metas, (i) => bodies[i]!)
    closers.push(() => fast.close())
    await upsertNode(db, { id: 'fast', region: 'r', internalUrl: fast.url, startedAt: Date.now() }, Date.now())
    for (const meta of metas) await recordStored(db, 'fast', toEntryRecord(meta))
    // Copies handed to the store, counted per turn of the event loop.
    const turns = countTurns()
    const perTurn = new Map<number, number>()
    const store = storeWith(localStore, {
      writer: (...args) => {
        perTurn.set(turns.now, (perTurn.get(turns.now) ?? 0) + 1)
        return localStore.writer(...args)
      },
    })
    try {
      expect(await runToEnd(populator({ concurrency: 1, store }))).toMatchObject({ done: metas.length, fromPeers: metas.length, failed: 0 })
    } finally {
      turns.stop()
    }
    expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(COPIES_PER_TURN)
  })

  it('commits a copy in a later turn when writing its body used up the turn of the event loop', async () => {
    // A body that waited for the socket resumes in the poll phase that read it, for every
    // request of a run at once: the commit (hash, index, hand-over to the disk writer) waits for a slice.
    const bodies = Array.from({ length: 3 }, (_, i) => bodyOf(100, i + 1))
    const metas = bodies.map((body, i) => ({ ...newEntry(`https://ex.com/slow-write/${i}`), size: body.length, integrity: sri(body) }))
    const peer = await framingPeer(metas, (i) => bodies[i]!)
    closers.push(() => peer.close())
    await upsertNode(db, { id: 'slow', region: 'r', internalUrl: peer.url, startedAt: Date.now() }, Date.now())
    for (const meta of metas) await recordStored(db, 'slow', toEntryRecord(meta))
    const turns = countTurns()
    const events: Array<{ what: 'write' | 'commit'; turn: number }> = []
    const store = storeWith(localStore, {
      writer: (...args) => {
        const writer = localStore.writer(...args)
        return {
          write(chunk: Uint8Array) {
            events.push({ what: 'write', turn: turns.now })
            // Writing this body takes longer than a turn's slice.
            const until = performance.now() + TURN_SLICE_MS + 1
            while (performance.now() < until);
            return writer.write(chunk)
          },
          commit() {
            events.push({ what: 'commit', turn: turns.now })
            return writer.commit()
          },
          abort: (reason?: unknown) => writer.abort(reason),
        }
      },
    })
    try {
      expect(await runToEnd(populator({ concurrency: 1, store }))).toMatchObject({ done: metas.length, fromPeers: metas.length, failed: 0 })
    } finally {
      turns.stop()
    }
    const commits = events.flatMap((e, i) => (e.what === 'commit' ? [{ commit: e.turn, lastWrite: events[i - 1]! }] : []))
    expect(commits).toHaveLength(metas.length)
    for (const c of commits) {
      expect(c.lastWrite.what).toBe('write')
      expect(c.commit).toBeGreaterThan(c.lastWrite.turn)
    }
  })

  it('internal /object sends the digest of a body still being written behind, never its placeholder integrity', async () => {
    await peerStore.drain() // past the start-up sweep, during which bodies are hashed at once
    const body = bodyOf(900, 5)
    const committed = await peerStore.put(newEntry('https://ex.com/just-stored'), body)
    expect(committed?.integrity).toMatch(/^pending-/)
    const app = createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: peerStore, log: captureLog().log })
    const res = await app.request(`/object?${new URLSearchParams({ key: 'https://ex.com/just-stored', variant: '' })}`, { headers: { authorization: `Bearer ${SECRET}` } })
    expect(res.status).toBe(200)
    const bytes = Buffer.from(await res.arrayBuffer())
    const metaBytes = Number(res.headers.get(META_BYTES_HEADER))
    expect(JSON.parse(bytes.subarray(0, metaBytes).toString('utf8'))).toMatchObject({ size: 900, integrity: sri(body) })
    expect(bytes.subarray(metaBytes).equals(body)).toBe(true)
  })

  it('internal /objects reads small bodies on disk without opening or reading a file on the event loop', async () => {
    // A populate's peer asks for thousands of objects; opening and reading each body on the event
    // loop held it for tens of milliseconds per turn, and the sender's health checks waited.
    const diskOnly = await createCacheStore({ dir: path.join(dir, 'disk-only'), maxBytes: 1e9, memoryBytes: 0, maxObjectBytes: 1024 * 1024 })
    closers.push(() => diskOnly.close())
    const count = FRAMES_PIECE_OBJECTS * 2 + 3
    const keys: string[] = []
    for (let i = 0; i < count; i++) {
      keys.push(`https://ex.com/disk/${i}`)
      await put(diskOnly, newEntry(keys[i]!), bodyOf(3000, i + 1))
    }
    await diskOnly.drain() // every body on disk, none answered from the bytes being written
    const app = createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: diskOnly, log: captureLog().log })
    const openSync = vi.spyOn(fs, 'openSync')
    const readSync = vi.spyOn(fs, 'readSync')
    let bytes: Buffer
    try {
      const res = await app.request('/objects', {
        method: 'POST',
        headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' },
        body: JSON.stringify({ items: [...keys, 'https://ex.com/none'].map((key) => ({ key, variant: '' })) }),
      })
      bytes = Buffer.from(await res.arrayBuffer())
      expect(openSync).not.toHaveBeenCalled()
      expect(readSync).not.toHaveBeenCalled()
    } finally {
      openSync.mockRestore()
      readSync.mockRestore()
    }
    const bodies: Array<Buffer | true> = []
    while (bytes.length > 0) {
      const n = bytes.readUInt32BE(0)
      const meta = JSON.parse(bytes.subarray(4, 4 + n).toString()) as { missing?: true; size: number }
      const size = meta.missing ? 0 : meta.size
      bodies.push(meta.missing ?? bytes.subarray(4 + n, 4 + n + size))
      bytes = bytes.subarray(4 + n + size)
    }
    expect(bodies).toEqual([...keys.map((_, i) => bodyOf(3000, i + 1)), true])
  })

  it('internal /objects lets the event loop turn between pieces of small bodies read at once', async () => {
    // A peer that reads as fast as the socket takes it would otherwise get every small body of
    // the request read in one turn, and the sender's health checks and clients would wait meanwhile.
    const count = FRAMES_PIECE_OBJECTS * 4
    const metas: EntryMeta[] = []
    for (let i = 0; i < count; i++) metas.push(await onPeer(`https://ex.com/t${i}`, bodyOf(100, i + 1)))
    // Read once each: from now on they are small bodies the store hands over at once.
    for (const meta of metas) await bytesOf((await peerStore.read(meta.key, ''))!)
    const app = createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: peerStore, log: captureLog().log })
    const { result: bytes, turns } = await turnsDuring(async () => {
      const res = await app.request('/objects', {
        method: 'POST',
        headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' },
        body: JSON.stringify({ items: metas.map((m) => ({ key: m.key, variant: '' })) }),
      })
      // Read the way a fast peer does: every chunk as soon as it is there.
      const reader = res.body!.getReader()
      let n = 0
      for (;;) {
        const { done, value } = await reader.read()
        if (done) return n
        n += value.length
      }
    })
    expect(bytes).toBeGreaterThan(count * 100)
    expect(turns).toBeGreaterThanOrEqual(count / FRAMES_PIECE_OBJECTS - 1)
  })
})

/** Numbers the turns of the event loop from now on (one setImmediate each) until stop(). */
function countTurns(): { readonly now: number; stop(): void } {
  let now = 0
  let counting = true
  const tick = (): void => {
    now++
    if (counting) setImmediate(tick)
  }
  setImmediate(tick)
  return {
    get now() {
      return now
    },
    stop() {
      counting = false
    },
  }
}
