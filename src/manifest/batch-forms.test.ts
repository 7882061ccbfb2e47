// The two forms of a replica's batch (batch-body.ts): the JSON one every version reads, and the
// compact one a replica sends only to a primary that announced it reads it.

import net from 'node:net'
import type { Server } from 'node:http'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { BATCH_FORMS_HEADER, COMPACT_CONTENT_TYPE } from './batch-body.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import type { ManifestOp } from './ops.ts'
import { countEntries } from './repositories.ts'
import { captureLog, entry, freshManifest, manifestTables, type FreshManifest } from './test-helpers.ts'
import { DirectWriter, RemoteWriter, batchBody } from './writer.ts'

const SECRET = 'a-cluster-secret-of-some-length'

const stored = (i: number): ManifestOp => ({
  type: 'stored',
  nodeId: 'n2',
  entry: entry({ url: `https://ex.com/p/${i}?q="x"`, key: `k${i}`, storedAt: 1000 + i, tags: i % 2 ? ['s', 'b'] : [], varyHeaders: i % 3 ? { 'accept-encoding': 'gzip' } : {} }),
})
/** Stores, with the other hot ops and a rare one among them (those stay objects in the compact form). */
const mixed = (n: number): ManifestOp[] => [
  ...Array.from({ length: n }, (_, i) => stored(i)),
  { type: 'deleted', nodeId: 'n2', key: 'k1', variant: '' },
  { type: 'node-heartbeat', node: { id: 'n2', region: 'ams', internalUrl: 'http://n2', startedAt: 5 }, at: 9000 },
  { type: 'prune', before: 1 },
  stored(n + 1),
]

interface Primary {
  url: string
  m: FreshManifest
  writer: DirectWriter
  /** Content types of the batches it received, in order. */
  received: string[]
  close(): Promise<void>
}

const opened: Array<{ close(): Promise<void> }> = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close()
})

/**
 * A primary as a node wires it (the writer's apply thread, or the event loop alone), served over
 * HTTP on a port of its own. `announce: false`: its answers lose BATCH_FORMS_HEADER (an older
 * version); `refuseCompact`: it answers a compact batch 400 (a version that reads it otherwise).
 */
async function startPrimary(options: { thread?: boolean; announce?: boolean; refuseCompact?: boolean } = {}): Promise<Primary> {
  const m = await freshManifest()
  const writer = new DirectWriter({ db: m.db, applyThread: options.thread ?? true, intervalMs: 10_000, log: captureLog().log })
  const received: string[] = []
  const root = new Hono()
  root.use(`${INTERNAL_BASE_PATH}/*`, async (c, next) => {
    const type = c.req.header('content-type') ?? ''
    received.push(type)
    if (options.refuseCompact && type === COMPACT_CONTENT_TYPE) {
      c.res = c.json({ error: 'body must be {"ops": [...]}' }, 400)
      c.res.headers.set(BATCH_FORMS_HEADER, 'compact')
      return
    }
    await next()
    if (options.announce === false) c.res.headers.delete(BATCH_FORMS_HEADER)
  })
  root.route(
    INTERNAL_BASE_PATH,
    createInternalApp({
      clusterSecret: SECRET,
      writableDb: () => m.db,
      log: captureLog().log,
      applyOps: (d, ops, o) => writer.applyReceived(ops, o),
      ...(options.thread === false ? {} : { applyBody: (d, chunks, compact) => writer.applyReceivedBody(chunks, compact) }),
    }),
  )
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
  })
  const primary: Primary = {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    m,
    writer,
    received,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await writer.close()
      await m.cleanup()
    },
  }
  opened.push(primary)
  return primary
}

const postBody = (p: Primary, body: Uint8Array<ArrayBuffer> | string, contentType: string) =>
  fetch(`${p.url}${INTERNAL_BASE_PATH}/manifest`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': contentType }, body })

describe('the primary reads both forms of a batch', () => {
  for (const thread of [true, false]) {
    it(`applies a compact batch as it applies the same batch as JSON, the same rows in every table (${thread ? 'on the apply thread' : 'on the event loop'})`, async () => {
      const json = await startPrimary({ thread })
      const compact = await startPrimary({ thread })
      // 700 ops: the compact body is parsed in pieces, cut where stores begin.
      for (const ops of [Array.from({ length: 700 }, (_, i) => stored(i)), mixed(40)]) {
        const a = await postBody(json, batchBody(ops), 'application/json')
        const b = await postBody(compact, batchBody(ops, true), COMPACT_CONTENT_TYPE)
        expect(a.status).toBe(200)
        expect(b.status).toBe(200)
        expect(await b.json()).toEqual(await a.json())
        expect(a.headers.get(BATCH_FORMS_HEADER)).toBe('compact')
        expect(b.headers.get(BATCH_FORMS_HEADER)).toBe('compact')
      }
      expect(batchBody(mixed(40), true).length).toBeLessThan(batchBody(mixed(40)).length * 0.7)
      expect(manifestTables(compact.m.sqlite)).toEqual(manifestTables(json.m.sqlite))
      expect(await countEntries(compact.m.db)).toBeGreaterThan(0)
      // Stores alone are read and applied on the thread, not handed back to the event loop.
      if (thread) expect(await compact.writer.applyReceivedBody([Buffer.from(batchBody([stored(800)], true))], true)).toEqual({ kind: 'applied', result: { applied: 1, failed: 0 } })
      if (thread) expect(await json.writer.applyReceivedBody([Buffer.from(batchBody([stored(800)]))], false)).toEqual({ kind: 'applied', result: { applied: 1, failed: 0 } })
    })
  }

  it('answers an unknown content type 415 and a malformed compact body 400, saying why, and applies nothing', async () => {
    const p = await startPrimary()
    const ops = [stored(1), stored(2)]
    const other = await postBody(p, batchBody(ops), 'text/plain')
    expect(other.status).toBe(415)
    expect((await other.json()).error).toContain(COMPACT_CONTENT_TYPE)
    expect(other.headers.get(BATCH_FORMS_HEADER)).toBe('compact')
    // The JSON form under the compact type, and the compact form under the JSON one.
    const swapped = await postBody(p, batchBody(ops), COMPACT_CONTENT_TYPE)
    expect(swapped.status).toBe(400)
    expect(await swapped.json()).toEqual({ error: 'body must be {"c": [...]}' })
    const swappedBack = await postBody(p, batchBody(ops, true), 'application/json')
    expect(swappedBack.status).toBe(400)
    // A stored op's array one item short, then one with a field of the wrong kind: the whole batch is refused.
    const short = await postBody(p, '{"c":[["s","n2","k1","","ex.com","https://ex.com/1",200,1,"",1,2,3,[]]]}', COMPACT_CONTENT_TYPE)
    expect(short.status).toBe(400)
    expect((await short.json()).error).toMatch(/^c\[0\]: a stored op as an array is \["s", nodeId/)
    const body = new TextDecoder().decode(batchBody(ops, true)).replace(',200,', ',"200",')
    const wrong = await postBody(p, body, COMPACT_CONTENT_TYPE)
    expect(wrong.status).toBe(400)
    expect(await wrong.json()).toEqual({ error: 'c[0]: entry: status must be a whole number' })
    expect((await postBody(p, '{"c":[["s",', COMPACT_CONTENT_TYPE)).status).toBe(400)
    expect(await countEntries(p.m.db)).toBe(0)
    // The JSON form, with or without its content type, as ever.
    expect((await postBody(p, batchBody(ops), 'application/json; charset=utf-8')).status).toBe(200)
    expect(await countEntries(p.m.db)).toBe(2)
  })
})

describe('RemoteWriter sends the compact form only where it is announced', () => {
  function remote(primaryUrl: string) {
    const writer = new RemoteWriter({ primaryUrl, clusterSecret: SECRET, nodeId: 'n2', maxBatch: 100, intervalMs: 60_000, backoffMs: 20, maxBackoffMs: 200, closeTimeoutMs: 1000, log: captureLog().log })
    opened.push(writer)
    return writer
  }
  const deliver = async (writer: RemoteWriter, ops: ManifestOp[]) => {
    for (const op of ops) writer.submit(op)
    await writer.flush({ timeoutMs: 10_000 })
  }

  it('sends JSON until the primary announces the compact form, then compact; JSON again to a new primary', async () => {
    const p = await startPrimary()
    const writer = remote(p.url)
    await deliver(writer, [stored(0)])
    await deliver(writer, mixed(250))
    expect(p.received).toEqual(['application/json', COMPACT_CONTENT_TYPE, COMPACT_CONTENT_TYPE, COMPACT_CONTENT_TYPE])
    expect(writer.stats()).toMatchObject({ written: 255, rejected: 0 })
    const q = await startPrimary()
    // Away and back (the first may be another version at the same address by then): JSON until it announces again.
    writer.setPrimaryUrl(q.url)
    writer.setPrimaryUrl(p.url)
    await deliver(writer, [stored(902)])
    expect(p.received.slice(4)).toEqual(['application/json'])
    writer.setPrimaryUrl(q.url)
    await deliver(writer, [stored(900)])
    await deliver(writer, [stored(901)])
    expect(q.received).toEqual(['application/json', COMPACT_CONTENT_TYPE])
    expect(await countEntries(q.m.db)).toBe(2)
  })

  it('keeps to JSON for a primary that does not announce the compact form', async () => {
    const p = await startPrimary({ announce: false })
    const writer = remote(p.url)
    await deliver(writer, [stored(0)])
    await deliver(writer, mixed(20))
    expect(p.received).toEqual(['application/json', 'application/json'])
    expect(await countEntries(p.m.db)).toBe(21)
  })

  it("goes back to JSON once the primary's answers stop announcing the compact form (another version at the same address)", async () => {
    const options = { announce: true }
    const p = await startPrimary(options)
    const writer = remote(p.url)
    await deliver(writer, [stored(0)])
    await deliver(writer, [stored(1)])
    options.announce = false
    // Sent compact (nothing said otherwise yet); its answer no longer announces the form.
    await deliver(writer, [stored(2)])
    await deliver(writer, [stored(3)])
    expect(p.received).toEqual(['application/json', COMPACT_CONTENT_TYPE, COMPACT_CONTENT_TYPE, 'application/json'])
    expect(await countEntries(p.m.db)).toBe(4)
  })

  it('sends a compact batch the primary refuses again as JSON, losing nothing, and JSON from then on', async () => {
    const p = await startPrimary({ refuseCompact: true })
    const writer = remote(p.url)
    await deliver(writer, [stored(0)])
    await deliver(writer, Array.from({ length: 50 }, (_, i) => stored(i + 1)))
    await deliver(writer, [stored(60)])
    expect(p.received).toEqual(['application/json', COMPACT_CONTENT_TYPE, 'application/json', 'application/json'])
    expect(writer.stats()).toMatchObject({ written: 52, rejected: 0, queued: 0 })
    expect(await countEntries(p.m.db)).toBe(52)
  })

  it('counts a JSON batch the primary answers 415 as refused', async () => {
    const root = new Hono()
    root.post(`${INTERNAL_BASE_PATH}/manifest`, (c) => c.json({ error: 'unsupported' }, 415))
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
    })
    opened.push({ close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) })
    const writer = remote(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    await deliver(writer, [stored(0), stored(1)])
    expect(writer.stats()).toMatchObject({ rejected: 2, queued: 0 })
  })
})
