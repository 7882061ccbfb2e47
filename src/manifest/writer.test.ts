import net from 'node:net'
import type { Server } from 'node:http'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Kysely } from 'kysely'
import { openDatabase } from './database.ts'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import type { ManifestOp } from './ops.ts'
import type { ClusterRole, RoleListener, RoleSource } from './primary.ts'
import { countEntries, listManifest } from './repositories.ts'
import { freePort } from '../test-support/servers.ts'
import { captureLog, entry, freshManifest, waitFor } from './test-helpers.ts'
import { DirectWriter, PIPELINE_HEADER, RemoteWriter, batchBody, createManifestWriter } from './writer.ts'
import type { ReceivedBody } from './writer.ts'

const SECRET = 'a-cluster-secret-of-some-length'

const stored = (i: number, nodeId = 'n2'): ManifestOp => ({ type: 'stored', nodeId, entry: entry({ url: `https://ex.com/${i}` }) })

interface Peer {
  url: string
  port: number
  requests: { node: string | undefined; ops: number; types: string[] }[]
  close(): Promise<void>
}

/** A primary's internal endpoint on a real socket, applying to `db`. */
async function startPeer(db: Kysely<Database> | undefined, port = 0, secret = SECRET): Promise<Peer> {
  const requests: Peer['requests'] = []
  const root = new Hono()
  root.use(`${INTERNAL_BASE_PATH}/*`, async (c, next) => {
    const body = (await c.req.raw.clone().json().catch(() => ({}))) as { ops?: { type?: string }[] }
    requests.push({ node: c.req.header('x-caje-node'), ops: body.ops?.length ?? 0, types: (body.ops ?? []).map((o) => String(o.type)) })
    await next()
  })
  root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: secret, writableDb: () => db, log: captureLog().log }))
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: root.fetch, port, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
  })
  const address = server.address() as net.AddressInfo
  return {
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}


describe('DirectWriter', () => {
  let db: Kysely<Database>
  let path: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ db, path, cleanup } = await freshManifest())
  })
  afterEach(async () => {
    await cleanup()
  })

  it('batches submissions into one transaction, off the caller’s path', async () => {
    const writer = new DirectWriter({ db, log: captureLog().log })
    for (let i = 0; i < 200; i++) writer.submit(stored(i))
    // submit() only queued: nothing is written yet.
    expect(await countEntries(db)).toBe(0)
    expect(writer.stats()).toMatchObject({ mode: 'direct', queued: 200, submitted: 200, written: 0 })
    await waitFor(() => writer.stats().written === 200, 20_000, 'the batch')
    expect(writer.stats()).toMatchObject({ queued: 0, batches: 1, failedAttempts: 0 })
    expect(await countEntries(db)).toBe(200)
    await writer.close()
  })

  it('splits large queues into maxBatch transactions; flush waits for all of them', async () => {
    const writer = new DirectWriter({ db, maxBatch: 30, intervalMs: 10_000, log: captureLog().log })
    for (let i = 0; i < 100; i++) writer.submit(stored(i))
    await writer.flush()
    expect(writer.stats()).toMatchObject({ written: 100, batches: 4, queued: 0 })
    expect(await countEntries(db)).toBe(100)
    await writer.close()
  })

  it('keeps ops while the file refuses writes (demoted), and hands them back on stop', async () => {
    const replica = openDatabase({ path, readonly: true })
    const { log, lines } = captureLog()
    const writer = new DirectWriter({ db: replica.db, backoffMs: 10, maxBackoffMs: 20, log, onRelease: () => replica.db.destroy() })
    writer.submit(stored(1))
    writer.submit(stored(2))
    await waitFor(() => writer.stats().failedAttempts >= 2, 20_000, 'retries')
    expect(writer.stats()).toMatchObject({ queued: 2, written: 0, rejected: 0, lastError: expect.stringContaining('SQLITE_READONLY') })
    expect(lines.some((l) => l.msg === 'manifest delivery failed; will retry')).toBe(true)
    const rest = await writer.stop()
    expect(rest).toEqual([stored(1), stored(2)])
  })

  it('close() delivers what is queued and then refuses new ops', async () => {
    const { log, lines } = captureLog()
    const writer = new DirectWriter({ db, intervalMs: 60_000, log })
    writer.submit(stored(1))
    writer.submit(stored(2))
    await writer.close()
    expect(await countEntries(db)).toBe(2)
    writer.submit(stored(3))
    expect(writer.stats().dropped).toBe(1)
    expect(lines.some((l) => l.msg.includes('after the writer closed'))).toBe(true)
  })
})

describe('RemoteWriter', () => {
  let primaryDb: Kysely<Database>
  let cleanup: () => Promise<void>
  const peers: Peer[] = []
  const writers: { close(): Promise<void> }[] = []
  beforeEach(async () => {
    ;({ db: primaryDb, cleanup } = await freshManifest())
  })
  afterEach(async () => {
    for (const w of writers.splice(0)) await w.close()
    for (const p of peers.splice(0)) await p.close()
    await cleanup()
  })

  function remote(options: Partial<ConstructorParameters<typeof RemoteWriter>[0]> & { primaryUrl: string | undefined }) {
    const captured = captureLog()
    const writer = new RemoteWriter({ clusterSecret: SECRET, nodeId: 'n2', backoffMs: 20, maxBackoffMs: 200, closeTimeoutMs: 1000, log: captured.log, ...options })
    writers.push(writer)
    return { writer, lines: captured.lines }
  }

  it('delivers batches to the primary’s internal endpoint', async () => {
    const peer = await startPeer(primaryDb)
    peers.push(peer)
    const { writer } = remote({ primaryUrl: peer.url })
    for (let i = 0; i < 120; i++) writer.submit(stored(i))
    await writer.flush({ timeoutMs: 5000 })
    expect(await countEntries(primaryDb)).toBe(120)
    expect(writer.stats()).toMatchObject({ mode: 'remote', target: peer.url, written: 120, queued: 0, failedAttempts: 0 })
    expect(peer.requests.length).toBeLessThanOrEqual(2)
    expect(peer.requests.every((r) => r.node === 'n2')).toBe(true)
    expect((await listManifest(primaryDb, { limit: 1 })).entries[0]!.nodeIds).toEqual(['n2'])
  })

  it('sends a batch as the text JSON.stringify makes of it, byte for byte, built a hundred ops at a time', () => {
    const ops = Array.from({ length: 250 }, (_, i): ManifestOp => ({ type: 'stored', nodeId: 'n2', entry: entry({ url: `https://ex.com/ü€/${i}/"😀"`, tags: i % 3 ? [] : ['a,b'] }) }))
    for (const n of [0, 1, 99, 100, 101, 250]) {
      const batch = ops.slice(0, n)
      expect(Buffer.from(batchBody(batch)).equals(Buffer.from(JSON.stringify({ ops: batch }))), String(n)).toBe(true)
    }
  })

  it('retries with growing delays while the primary is down, then delivers when it is back', async () => {
    const port = await freePort()
    const { writer, lines } = remote({ primaryUrl: `http://127.0.0.1:${port}` })
    writer.submit(stored(1))
    writer.submit(stored(2))
    // Backoff, not a tight loop: each failure in a row doubles the pause before the next attempt,
    // 20, 40, 80, 160 ms, then the 200 ms cap.
    const backoffAfter = new Map<number, number>()
    await waitFor(
      () => {
        const s = writer.stats()
        backoffAfter.set(s.failedAttempts, s.backoffMs)
        return s.failedAttempts >= 6
      },
      5000,
      'failed attempts',
    )
    for (const [failures, backoffMs] of backoffAfter) expect(backoffMs, `after ${failures} failures`).toBe(failures === 0 ? 0 : Math.min(200, 20 * 2 ** (failures - 1)))
    expect(writer.stats()).toMatchObject({ queued: 2, written: 0, lastError: expect.stringContaining('ECONNREFUSED') })
    // Logged once when it started failing, not once per attempt.
    expect(lines.filter((l) => l.msg === 'manifest delivery failed; will retry').length).toBeLessThanOrEqual(2)

    const peer = await startPeer(primaryDb, port)
    peers.push(peer)
    await writer.flush({ timeoutMs: 5000 })
    expect(await countEntries(primaryDb)).toBe(2)
    expect(writer.stats()).toMatchObject({ queued: 0, written: 2, backoffMs: 0 })
    expect(lines.some((l) => l.msg === 'manifest delivery recovered')).toBe(true)
  })

  it('bounds its queue: overflow is dropped, counted and logged once', async () => {
    const { writer, lines } = remote({ primaryUrl: undefined, maxQueue: 5 })
    for (let i = 0; i < 8; i++) writer.submit(stored(i))
    expect(writer.stats()).toMatchObject({ queued: 5, submitted: 5, dropped: 3 })
    const overflow = lines.filter((l) => l.msg === 'manifest queue full; dropping ops')
    expect(overflow).toHaveLength(1)
    expect(overflow[0]!.fields).toMatchObject({ maxQueue: 5 })

    // The primary becomes known: what was kept is delivered.
    const peer = await startPeer(primaryDb)
    peers.push(peer)
    writer.setPrimaryUrl(peer.url)
    await writer.flush({ timeoutMs: 5000 })
    expect(await countEntries(primaryDb)).toBe(5)
  })

  it('puts a purge ahead of its backlog, alone in a request, and keeps it first while the primary is away', async () => {
    const port = await freePort()
    const { writer } = remote({ primaryUrl: `http://127.0.0.1:${port}`, maxBatch: 100 })
    for (let i = 0; i < 300; i++) writer.submit(stored(i))
    const purge = (n: number): ManifestOp => ({
      type: 'purge',
      purge: { requestId: `r${n}`, kind: 'prefix', value: 'https://elsewhere.example/', host: null, createdAt: Date.now(), createdBy: 'admin', nodeId: 'n2', soft: false },
    })
    const first = writer.submitFirst(purge(1), { timeoutMs: 5000 })
    // Delivery fails until the primary is up: the purge must stay ahead of the backlog.
    await waitFor(() => writer.stats().failedAttempts >= 2, 20_000, 'failed attempts')
    const second = writer.submitFirst(purge(2), { timeoutMs: 5000 })
    const peer = await startPeer(primaryDb, port)
    peers.push(peer)
    await Promise.all([first, second])
    // The first request the primary saw is the two purges alone, in their order.
    expect(peer.requests[0]!.types).toEqual(['purge', 'purge'])
    const purges = await primaryDb.selectFrom('purges').select('request_id').orderBy('id').execute()
    expect(purges.map((p) => p.request_id)).toEqual(['r1', 'r2'])
    await writer.flush({ timeoutMs: 5000 })
    expect(await countEntries(primaryDb)).toBe(300)
    expect(writer.stats()).toMatchObject({ queued: 0, written: 302 })
  })

  it('sends a delivery\'s batches in line, the next while the primary applies the last, and after a failure sends again only what was not applied', async () => {
    // The primary as a node wires it: the batches' bytes applied on its apply thread.
    const direct = new DirectWriter({ db: primaryDb, applyThread: true, intervalMs: 60_000, log: captureLog().log })
    writers.push(direct)
    const events: string[] = []
    let requests = 0
    let bodies = 0
    let appliedOps = 0
    let secondArrived!: () => void
    const second = new Promise<void>((resolve) => (secondArrived = resolve))
    const root = new Hono()
    root.use(`${INTERNAL_BASE_PATH}/*`, async (c, next) => {
      const n = ++requests
      events.push(`request ${n}${c.req.header(PIPELINE_HEADER) ? ' in line' : ''}`)
      if (n === 2) secondArrived()
      await next()
    })
    const applyBody = async (chunks: readonly Buffer[], compact: boolean): Promise<ReceivedBody> => {
      const n = ++bodies
      // The first batch is applied once the second has arrived (if it never comes, nothing is applied and the flush below fails).
      if (n === 1) await second
      // The second batch finds the file busy, once.
      if (n === 2) throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })
      const received = await direct.applyReceivedBody(chunks, compact)
      if (received.kind === 'applied') appliedOps += received.result.applied
      events.push(`applied ${n}`)
      return received
    }
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => primaryDb, log: captureLog().log, applyOps: (d, ops, o) => direct.applyReceived(ops, o), applyBody: (d, chunks, compact) => applyBody(chunks, compact) }))
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
    })
    peers.push({ url: '', port: 0, requests: [], close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) })
    const { writer } = remote({ primaryUrl: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, maxBatch: 100, intervalMs: 60_000 })
    for (let i = 0; i < 400; i++) writer.submit(stored(i))
    await writer.flush({ timeoutMs: 10_000 })

    expect(await countEntries(primaryDb)).toBe(400)
    // Sent while the primary applied the first.
    expect(events.indexOf('request 2 in line')).toBeLessThan(events.indexOf('applied 1'))
    // The second failed; the third, sent in line after it, was not applied; both were sent again, with the fourth, and nothing was applied twice.
    expect(appliedOps).toBe(400)
    expect(requests).toBe(6)
    expect(writer.stats()).toMatchObject({ written: 400, queued: 0, failedAttempts: 1, rejected: 0 })
  })

  it('close() delivers what is queued', async () => {
    const peer = await startPeer(primaryDb)
    peers.push(peer)
    const { writer } = remote({ primaryUrl: peer.url, intervalMs: 60_000 })
    writer.submit(stored(1))
    writer.submit(stored(2))
    writer.submit(stored(3))
    expect(peer.requests).toHaveLength(0)
    await writer.close()
    expect(await countEntries(primaryDb)).toBe(3)
  })

  it('close() gives up at its deadline and logs how many ops were not delivered', async () => {
    const port = await freePort()
    const { writer, lines } = remote({ primaryUrl: `http://127.0.0.1:${port}`, closeTimeoutMs: 300 })
    writer.submit(stored(1))
    writer.submit(stored(2))
    await writer.close()
    // It kept trying until its deadline (attempt after attempt), and no longer: a writer that
    // ignored the deadline would retry for ever (the primary never comes), past the test's timeout.
    expect(writer.stats().failedAttempts).toBeGreaterThan(1)
    const line = lines.find((l) => l.msg === 'manifest writer closed with ops not delivered')
    expect(line?.fields).toMatchObject({ undelivered: 2, mode: 'remote' })
  })

  it('keeps retrying on a wrong secret or a replica answer, and drops a batch the primary calls malformed', async () => {
    const wrong = await startPeer(primaryDb, 0, 'another-secret-entirely-123')
    peers.push(wrong)
    const { writer } = remote({ primaryUrl: wrong.url })
    writer.submit(stored(1))
    await waitFor(() => writer.stats().failedAttempts >= 1, 20_000, 'refusal')
    expect(writer.stats()).toMatchObject({ queued: 1, lastError: expect.stringContaining('401') })

    const replica = await startPeer(undefined)
    peers.push(replica)
    writer.setPrimaryUrl(replica.url)
    await waitFor(() => (writer.stats().lastError ?? '').includes('409'), 20_000, '409')
    expect(writer.stats().queued).toBe(1)

    const good = await startPeer(primaryDb)
    peers.push(good)
    writer.setPrimaryUrl(good.url)
    // A known op type with a malformed body (an op of an unknown type would be skipped, not refused).
    writer.submit({ type: 'stored', nodeId: 'n', entry: { url: 42 } } as unknown as ManifestOp)
    writer.submit(stored(2))
    await writer.flush({ timeoutMs: 5000 })
    // A batch holding an op the primary cannot parse is refused whole (400)
    // and dropped, so one bad op never blocks the queue behind it.
    expect(writer.stats().rejected).toBeGreaterThan(0)
    expect(writer.stats().queued).toBe(0)
  })
})

describe('createManifestWriter', () => {
  class FakeRole implements RoleSource {
    private listeners = new Set<RoleListener>()
    constructor(private role: ClusterRole) {}
    current() {
      return this.role
    }
    subscribe(l: RoleListener) {
      this.listeners.add(l)
      return () => void this.listeners.delete(l)
    }
    set(next: ClusterRole) {
      const prev = this.role
      this.role = next
      for (const l of this.listeners) l(next, prev)
    }
  }

  let file: string
  let primaryDb: Kysely<Database>
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ db: primaryDb, path: file, cleanup } = await freshManifest())
  })
  afterEach(async () => {
    await cleanup()
  })

  const openDirect = () => {
    const opened = openDatabase({ path: file })
    return new DirectWriter({ db: opened.db, label: file, log: captureLog().log, onRelease: () => opened.db.destroy() })
  }

  it('writes through the primary while a replica, follows a moved primary, and writes directly once promoted', async () => {
    const peerA = await startPeer(primaryDb)
    const role = new FakeRole({ kind: 'replica', primaryHost: 'a', primaryUrl: peerA.url })
    const writer = createManifestWriter({
      role,
      openDirect,
      remote: { clusterSecret: SECRET, nodeId: 'n2', backoffMs: 20, maxBackoffMs: 100 },
      log: captureLog().log,
    })
    expect(writer.writableDb()).toBeUndefined()
    writer.submit(stored(1))
    await writer.flush({ timeoutMs: 5000 })
    expect(peerA.requests).toHaveLength(1)

    // LiteFS moves the primary to b.
    const peerB = await startPeer(primaryDb)
    role.set({ kind: 'replica', primaryHost: 'b', primaryUrl: peerB.url })
    writer.submit(stored(2))
    await writer.flush({ timeoutMs: 5000 })
    expect(peerB.requests).toHaveLength(1)
    expect(writer.stats()).toMatchObject({ mode: 'remote', target: peerB.url, role: 'replica' })

    // b goes away with ops queued, then this node is promoted: the queued ops
    // are written locally, in order, before anything submitted after.
    await peerB.close()
    writer.submit(stored(3))
    writer.submit({ type: 'deleted', nodeId: 'n2', key: 'https://ex.com/3', variant: '' })
    await waitFor(() => writer.stats().failedAttempts >= 1, 20_000, 'a failed delivery')
    role.set({ kind: 'primary' })
    writer.submit(stored(3, 'n9'))
    await writer.flush({ timeoutMs: 5000 })
    expect(writer.writableDb()).toBeDefined()
    expect(writer.stats()).toMatchObject({ mode: 'direct', role: 'primary', queued: 0, written: 5 })
    const { entries } = await listManifest(primaryDb)
    expect(entries.map((e) => [e.url, e.nodeIds])).toEqual(
      expect.arrayContaining([
        ['https://ex.com/1', ['n2']],
        ['https://ex.com/2', ['n2']],
        ['https://ex.com/3', ['n9']],
      ]),
    )
    await writer.close()
    await peerA.close()
  })

  it('hands a demoted primary’s queue to the remote writer', async () => {
    const role = new FakeRole({ kind: 'primary' })
    const writer = createManifestWriter({ role, openDirect, remote: { clusterSecret: SECRET, backoffMs: 20 }, log: captureLog().log })
    writer.submit(stored(1))
    await writer.flush()
    const peer = await startPeer(primaryDb)
    role.set({ kind: 'replica', primaryHost: 'p', primaryUrl: peer.url })
    writer.submit(stored(2))
    await writer.flush({ timeoutMs: 5000 })
    expect(writer.writableDb()).toBeUndefined()
    expect(peer.requests.reduce((n, r) => n + r.ops, 0)).toBe(1)
    expect(await countEntries(primaryDb)).toBe(2)
    expect(writer.stats()).toMatchObject({ written: 2, submitted: 2, role: 'replica' })
    await writer.close()
    await peer.close()
  })
})
