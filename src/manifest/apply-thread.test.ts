import fs from 'node:fs'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type SQLite from 'better-sqlite3'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import type { ManifestOp } from './ops.ts'
import { countEntries, heldBy, listNodes } from './repositories.ts'
import { indexedMatchesUpTo, queuedForIndex } from './search.ts'
import { captureLog, chunked, entry, freshManifest, holdWriteLock, manifestTables, waitFor } from './test-helpers.ts'
import { isHotOp } from './statements.ts'
import { DirectWriter, WriterStoppedError } from './writer.ts'
import type { Worker } from 'node:worker_threads'
import { parseOps } from './ops.ts'
import { ApplyThreadGoneError } from './apply-thread.ts'
import { BACKSTOP_WAL_PAGES } from './checkpointer.ts'
import { HIT_RETENTION_MS } from './hits-sql.ts'

const stored = (i: number, overrides: Partial<ReturnType<typeof entry>> = {}): ManifestOp => ({ type: 'stored', nodeId: 'n1', entry: entry({ url: `https://ex.com/page-${i}`, ...overrides }) })

/** Rows this connection has changed since it was opened: the writes made on it, not on another thread's connection. */
const changesOn = (sqlite: SQLite.Database) => sqlite.prepare('select total_changes()').pluck().get() as number

describe('DirectWriter with an apply thread', () => {
  let db: Kysely<Database>
  let sqlite: SQLite.Database
  let path: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ db, sqlite, path, cleanup } = await freshManifest())
  })
  afterEach(async () => {
    await cleanup()
  })

  it('applies stores, deletes and heartbeats on its own connection, and indexes their URLs for the filter', async () => {
    const writer = new DirectWriter({ db, applyThread: true, log: captureLog().log })
    const before = changesOn(sqlite)
    writer.submit({ type: 'node-heartbeat', node: { id: 'n1', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: 1 }, at: 2 })
    for (let i = 0; i < 600; i++) writer.submit(stored(i))
    writer.submit({ type: 'deleted', nodeId: 'n1', key: 'https://ex.com/page-0', variant: '' })
    await writer.flush()
    expect(writer.stats()).toMatchObject({ written: 602, rejected: 0, failedAttempts: 0 })
    expect(await countEntries(db)).toBe(600)
    expect((await heldBy(db, 'n1')).length).toBe(599)
    expect((await listNodes(db)).map((n) => n.id)).toEqual(['n1'])
    // Nothing was written through the event loop's connection; the URLs are indexed once no batch waits.
    expect(changesOn(sqlite)).toBe(before)
    await waitFor(async () => (await queuedForIndex(db)) === 0, 10_000, 'the URLs to be indexed')
    expect(await indexedMatchesUpTo(db, 'page-59', 100)).toBe(11) // page-59 and page-590..599
    await writer.close()
  })

  it('adds hit counts on its own connection, pruning as the event loop would', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const at = 1_700_000_000_000
    const before = changesOn(sqlite)
    writer.submit({ type: 'hits', nodeId: 'n1', at: at - HIT_RETENTION_MS - 1, counts: [{ key: 'https://ex.com/old', hits: 9 }] })
    writer.submit({ type: 'hits', nodeId: 'n1', at, counts: [{ key: 'https://ex.com/a', hits: 2 }, { key: 'https://ex.com/b', hits: 1 }] })
    writer.submit({ type: 'hits', nodeId: 'n2', at: at - 5, counts: [{ key: 'https://ex.com/a', hits: 3 }] })
    await writer.flush()
    expect(writer.stats()).toMatchObject({ written: 3, rejected: 0 })
    // The counts went through the thread's connection, not the event loop's.
    expect(changesOn(sqlite)).toBe(before)
    const rows = await db.selectFrom('url_hits').select(['key', 'hits', 'last_hit_at']).orderBy('key').execute()
    expect(rows).toEqual([
      { key: 'https://ex.com/a', hits: 5, last_hit_at: at },
      { key: 'https://ex.com/b', hits: 1, last_hit_at: at },
    ])
    await writer.close()
  })

  it('applies every kind of op it is sent, none counted without being applied', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const ops: ManifestOp[] = [
      { type: 'node-heartbeat', node: { id: 'n1', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: 1 }, at: 2 },
      stored(1),
      stored(2),
      stored(3),
      { type: 'deleted', nodeId: 'n1', key: 'https://ex.com/page-1', variant: '' },
      { type: 'holdings-forgotten', nodeId: 'n1', entries: [{ key: 'https://ex.com/page-2', variant: '' }] },
      { type: 'purge-applied', nodeId: 'n1', purgeId: 7 },
      { type: 'node-cleared', nodeId: 'n1' },
    ]
    expect(ops.every(isHotOp)).toBe(true)
    for (const op of ops) writer.submit(op)
    await writer.flush()
    expect(writer.stats()).toMatchObject({ written: ops.length, rejected: 0 })
    expect(await heldBy(db, 'n1')).toEqual([])
    expect((await db.selectFrom('nodes').select('last_purge_id').executeTakeFirstOrThrow()).last_purge_id).toBe(7)
    await writer.close()
  })

  it('applies a batch a replica sent on the thread, in order around a purge whose sweep it defers, and refuses batches once stopped', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const at = 1_700_000_000_000
    const before = changesOn(sqlite)
    const first = Array.from({ length: 600 }, (_, i) => stored(i, { storedAt: at - 10 }))
    expect(await writer.applyReceived(first)).toEqual({ applied: 600, failed: 0 })
    // The stores went through the thread's connection, not the event loop's.
    expect(changesOn(sqlite)).toBe(before)
    expect(await countEntries(db)).toBe(600)

    const sweeps: Array<() => Promise<void>> = []
    const purge: ManifestOp = { type: 'purge', sweepAfterAck: true, purge: { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/', host: null, createdAt: at, createdBy: 'admin', nodeId: 'n1', soft: false } }
    // Stored before the purge, recorded after it: covered. Stored after it: kept.
    const result = await writer.applyReceived([purge, stored(1000, { storedAt: at - 5 }), stored(1001, { storedAt: at + 5 })], { deferSweep: (sweep) => sweeps.push(sweep) })
    expect(result).toEqual({ applied: 3, failed: 0 })
    expect(await countEntries(db)).toBe(601)
    expect(sweeps).toHaveLength(1)
    await sweeps[0]!()
    expect((await db.selectFrom('entries').select('key').execute()).map((r) => r.key)).toEqual(['https://ex.com/page-1001'])

    await writer.close()
    await expect(writer.applyReceived([stored(2)])).rejects.toBeInstanceOf(WriterStoppedError)
  })

  it('removes a purge\'s entries on its own connection, in chunks, none on the event loop\'s', async () => {
    let thread: Worker | undefined
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, onApplyThread: (t) => (thread = t) })
    const at = 1_700_000_000_000
    expect(await writer.applyReceived(Array.from({ length: 2500 }, (_, i) => stored(i, { storedAt: at - 10 })))).toEqual({ applied: 2500, failed: 0 })
    const sweeps: Array<() => Promise<void>> = []
    const purge: ManifestOp = { type: 'purge', sweepAfterAck: true, purge: { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/', host: null, createdAt: at, createdBy: 'admin', nodeId: 'n1', soft: false } }
    // The stores' URLs may still wait for the search index: recording the purge here leaves them to the thread too.
    expect(await writer.applyReceived([purge], { deferSweep: (sweep) => sweeps.push(sweep) })).toEqual({ applied: 1, failed: 0 })
    const before = changesOn(sqlite)
    expect(sweeps).toHaveLength(1)
    const indexed = () => waitFor(async () => (await queuedForIndex(db)) === 0, 10_000, 'the URLs to be indexed')
    let answers = 0
    thread!.on('message', () => answers++)
    await sweeps[0]!()
    expect(await countEntries(db)).toBe(0)
    await indexed()
    // Every row went through the thread's connection, the search index's too, none through the event loop's.
    expect(changesOn(sqlite)).toBe(before)
    expect(await indexedMatchesUpTo(db, 'page-1', 100)).toBe(0)
    // At most a thousand entries per transaction: three at least for 2,500 (and the search index's answers beside).
    expect(answers).toBeGreaterThanOrEqual(3)
    await writer.close()
  })

  it('keeps the statement journals of its stores in memory, and still clears a node', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    // Write syscalls of the whole process, the thread's included.
    const writes = () => Number(/^syscw: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1])
    await writer.applyReceived([stored(0)]) // the thread and its connection start
    const before = writes()
    expect(await writer.applyReceived(Array.from({ length: 3000 }, (_, i) => stored(i + 1)))).toEqual({ applied: 3000, failed: 0 })
    // A statement journal in a temp file cost about 2.4 pwrites per stored op; the WAL's frames are far fewer.
    expect(writes() - before).toBeLessThan(2000)
    expect(await writer.applyReceived([{ type: 'node-cleared', nodeId: 'n1' }, stored(5000)])).toEqual({ applied: 2, failed: 0 })
    expect((await heldBy(db, 'n1')).length).toBe(1)
    await writer.close()
  })

  it('keeps the pages of a key index larger than SQLite\'s default cache in memory between batches', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    // Read syscalls of the whole process, the thread's included.
    const reads = () => Number(/^syscr: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1])
    const long = 'x'.repeat(200)
    // Keys in a scattered order, so each new one lands on a leaf anywhere in the key index (about 6 MB).
    const at = (i: number) => (i * 7919) % 24_000
    const keyed = (i: number) => stored(0, { url: `https://ex.com/${long}/${at(i)}`, key: `https://ex.com/${long}/${at(i)}` })
    for (let b = 0; b < 20; b++) expect(await writer.applyReceived(Array.from({ length: 1000 }, (_, i) => keyed(b * 1000 + i)))).toEqual({ applied: 1000, failed: 0 })
    await waitFor(async () => (await queuedForIndex(db)) === 0, 30_000, 'the URLs to be indexed')
    const before = reads()
    expect(await writer.applyReceived(Array.from({ length: 2000 }, (_, i) => keyed(20_000 + i)))).toEqual({ applied: 2000, failed: 0 })
    // With SQLite's 2 MiB the thread read about 10 pages back from the file per op (the key, stored_at and
    // search indexes' leaves, the table's); here about 3 (the search index and the table outgrow the cache too).
    expect(reads() - before).toBeLessThan(4 * 2000)
    await writer.close()
  })

  it('checkpoints the WAL only past the backstop its writer’s handle has, not at SQLite’s 1,000 pages', async () => {
    // As openDatabase sets it when a thread of its own checkpoints (none runs here: the file grows only by checkpoints).
    sqlite.pragma(`wal_autocheckpoint = ${BACKSTOP_WAL_PAGES}`)
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    await writer.applyReceived([stored(0)])
    const fileBytes = () => fs.statSync(path).size
    const walPages = () => fs.statSync(`${path}-wal`).size / 4096
    const before = fileBytes()
    for (let b = 0; b < 16; b++) expect(await writer.applyReceived(Array.from({ length: 1000 }, (_, i) => stored(1 + b * 1000 + i)))).toEqual({ applied: 1000, failed: 0 })
    expect(walPages()).toBeGreaterThan(1000)
    // Every page is still in the WAL: no commit of the thread copied them into the file.
    expect(fileBytes()).toBe(before)
    await writer.close()
  })

  it('indexes a moved URL for the filter: the old one out, the new one in', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const at = 1_700_000_000_000
    const indexed = () => waitFor(async () => (await queuedForIndex(db)) === 0, 10_000, 'the URLs to be indexed')
    await writer.applyReceived([stored(1, { key: 'k', url: 'https://ex.com/old-name', storedAt: at }), stored(2)])
    await indexed()
    expect(await indexedMatchesUpTo(db, 'old-name', 10)).toBe(1)
    await writer.applyReceived([stored(1, { key: 'k', url: 'https://ex.com/new-name', storedAt: at + 1 })])
    await indexed()
    expect(await indexedMatchesUpTo(db, 'old-name', 10)).toBe(0)
    expect(await indexedMatchesUpTo(db, 'new-name', 10)).toBe(1)
    expect(await indexedMatchesUpTo(db, 'page-2', 10)).toBe(1)
    await writer.close()
  })

  it('keeps the order of a batch that mixes thread ops and a purge applied here', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const at = 1_700_000_000_000
    writer.submit(stored(1, { storedAt: at - 10 }))
    writer.submit({ type: 'purge', purge: { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/', host: null, createdAt: at, createdBy: 'admin', nodeId: 'n1', soft: false } })
    // Stored before the purge but recorded after it: the purge covers it, and it must not come back.
    writer.submit(stored(2, { storedAt: at - 5 }))
    // Stored after the purge: kept.
    writer.submit(stored(3, { storedAt: at + 5 }))
    await writer.flush()
    const keys = (await db.selectFrom('entries').select('key').execute()).map((r) => r.key)
    expect(keys).toEqual(['https://ex.com/page-3'])
    await writer.close()
  })

  it('drops only the op that cannot be applied, logged, and applies the rest', async () => {
    const captured = captureLog()
    const writer = new DirectWriter({ db, applyThread: true, log: captured.log })
    writer.submit(stored(1))
    // No tags: its parameters cannot be bound, whatever the moment.
    writer.submit(stored(2, { tags: undefined as unknown as string[] }))
    writer.submit(stored(3))
    await writer.flush()
    expect(writer.stats()).toMatchObject({ written: 2, rejected: 1 })
    expect(await countEntries(db)).toBe(2)
    expect(captured.lines.filter((l) => l.msg === 'manifest op dropped: it cannot be applied')).toHaveLength(1)
    await writer.close()
  })

  it('keeps the ops and retries while another process holds the write lock', async () => {
    const writer = new DirectWriter({ db, applyThread: true, backoffMs: 20, log: captureLog().log })
    const lock = holdWriteLock(path)
    for (let i = 0; i < 5; i++) writer.submit(stored(i))
    await waitFor(() => writer.stats().failedAttempts > 0, 10_000, 'a failed attempt behind the lock')
    expect(await countEntries(db)).toBe(0)
    lock.release()
    await writer.flush({ timeoutMs: 10_000 })
    expect(await countEntries(db)).toBe(5)
    await writer.close()
  })

  it('is not used for a database in memory: the ops are applied on the event loop', async () => {
    const { openDatabase } = await import('./database.ts')
    const { migrateToLatest } = await import('./migrate.ts')
    const memory = openDatabase({ path: ':memory:' })
    await migrateToLatest(memory.db)
    const writer = new DirectWriter({ db: memory.db, applyThread: true, log: captureLog().log })
    const before = changesOn(memory.sqlite)
    writer.submit(stored(1))
    await writer.flush()
    expect(await countEntries(memory.db)).toBe(1)
    expect(changesOn(memory.sqlite)).toBeGreaterThan(before)
    await writer.close()
    await memory.db.destroy()
  })

  it('applies a batch handed over as the bytes of its body, parsed and checked on the thread, as the same ops parsed here', async () => {
    const other = await freshManifest()
    try {
      const at = 1_700_000_000_000
      // Multi-byte characters split across chunks, a look-alike of an op's start inside a string, repeated keys, a moved URL, a heartbeat and a delete.
      const ops: ManifestOp[] = [
        { type: 'node-heartbeat', node: { id: 'n2', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: 1 }, at: 2 },
        ...Array.from({ length: 1500 }, (_, i) => stored(i % 1200, { url: `https://ex.com/ü€/${i % 1200}/"${i % 7 === 0 ? ',{"type":' : '😀'}"`, key: `k${i % 1200}`, storedAt: at + i, tags: i % 5 === 0 ? ['t'] : [] })),
        { type: 'deleted', nodeId: 'n1', key: 'k3', variant: '' },
        { type: 'purge-applied', nodeId: 'n2', purgeId: 4 },
      ]
      const text = JSON.stringify({ ops })
      const captured = captureLog()
      const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captured.log })
      const before = changesOn(sqlite)
      expect(await writer.applyReceivedBody(chunked(text, [7, 65_536, 1000, 3]))).toEqual({ kind: 'applied', result: { applied: ops.length, failed: 0 } })
      // Nothing was parsed into ops or written on the event loop.
      expect(changesOn(sqlite)).toBe(before)
      await waitFor(async () => (await queuedForIndex(db)) === 0, 10_000, 'the URLs to be indexed')
      await writer.close()

      const parsed = parseOps(JSON.parse(text))
      if (!parsed.ok) throw new Error(parsed.error)
      const reference = new DirectWriter({ db: other.db, applyThread: false, intervalMs: 10_000, log: captured.log })
      expect(await reference.applyReceived(parsed.ops)).toEqual({ applied: ops.length, failed: 0 })
      await reference.close()
      // The event loop's writer indexes in the background; the thread in the batch's transaction.
      const { indexQueued } = await import('./search.ts')
      while (await indexQueued(other.db, 10_000));
      expect(manifestTables(sqlite)).toEqual(manifestTables(other.sqlite))
      expect(captured.lines.filter((l) => l.level !== 'info')).toEqual([])
    } finally {
      await other.cleanup()
    }
  })

  it('hands back a body that is not hot ops alone, parsed, and one that is not JSON as such, applying nothing of either', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const purge = { type: 'purge', purge: { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/', host: null, createdAt: 1, createdBy: 'admin', nodeId: 'n1', soft: false } }
    const bodies = [
      // A purge among stores: the event loop applies it in order, between the thread's runs.
      { ops: [stored(1), purge, stored(2)] },
      // An op of the wrong shape: the event loop's parseOps says what is wrong with it.
      { ops: [stored(1), { ...stored(2), entry: { ...entry({ url: 'https://ex.com/x' }), storedAt: 'yesterday' } }] },
      { ops: [stored(1), { type: 'from-the-future' }] },
      { ops: [stored(1), 'not an op'] },
      { ops: Array.from({ length: 10_001 }, (_, i) => stored(i)) },
      { other: [stored(1)] },
      [stored(1)],
    ]
    for (const body of bodies) {
      const text = JSON.stringify(body)
      expect(await writer.applyReceivedBody(chunked(text, [4096]))).toEqual({ kind: 'parsed', body: JSON.parse(text) })
    }
    for (const bad of ['{', `${JSON.stringify({ ops: [stored(1)] }).slice(0, -2)},]}`, '']) {
      expect(await writer.applyReceivedBody(chunked(bad, [4096]))).toEqual({ kind: 'not-json' })
    }
    expect(await countEntries(db)).toBe(0)
    await writer.close()
  })

  it('keeps a body\'s batch for the sender to retry while another process holds the write lock, and starts a thread again after one ended', async () => {
    const threads: Worker[] = []
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, onApplyThread: (t) => threads.push(t) })
    const body = (from: number) => chunked(JSON.stringify({ ops: Array.from({ length: 10 }, (_, i) => stored(from + i)) }), [100])
    const lock = holdWriteLock(path)
    await expect(writer.applyReceivedBody(body(0))).rejects.toMatchObject({ code: 'SQLITE_BUSY' })
    lock.release()
    expect(await writer.applyReceivedBody(body(0))).toEqual({ kind: 'applied', result: { applied: 10, failed: 0 } })

    await threads[0]!.terminate()
    await expect(writer.applyReceivedBody(body(10))).rejects.toBeInstanceOf(ApplyThreadGoneError)
    // The next batch starts a thread of its own.
    expect(await writer.applyReceivedBody(body(10))).toEqual({ kind: 'applied', result: { applied: 10, failed: 0 } })
    expect(threads).toHaveLength(2)
    expect(await countEntries(db)).toBe(20)
    await writer.close()
    await expect(writer.applyReceivedBody(body(20))).rejects.toBeInstanceOf(WriterStoppedError)
  })

  it('leaves the URLs of a burst for the filter\'s index to take when no batch waits, never more than the bound, and the filter finds every URL meanwhile', async () => {
    const { listManifest } = await import('./repositories.ts')
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, searchBacklogRows: 300 })
    const at = 1_700_000_000_000
    // Batches back to back, as replicas send them: each leaves at most the bound queued.
    const sent = Promise.all(
      Array.from({ length: 5 }, (_, b) =>
        writer.applyReceivedBody(chunked(JSON.stringify({ ops: Array.from({ length: 200 }, (_, i) => stored(b * 200 + i, { storedAt: at + i })) }), [65_536])),
      ),
    )
    let worst = 0
    let done = false
    void sent.finally(() => (done = true))
    while (!done) {
      worst = Math.max(worst, await queuedForIndex(db))
      await new Promise((r) => setImmediate(r))
    }
    expect(await sent).toEqual(Array.from({ length: 5 }, () => ({ kind: 'applied', result: { applied: 200, failed: 0 } })))
    expect(worst).toBeLessThanOrEqual(300)
    // Indexed or still queued, every URL is found by the filter.
    expect((await listManifest(db, { filter: 'page-99', limit: 100 })).entries.map((e) => e.url).sort()).toEqual(['https://ex.com/page-99', 'https://ex.com/page-990', 'https://ex.com/page-991', 'https://ex.com/page-992', 'https://ex.com/page-993', 'https://ex.com/page-994', 'https://ex.com/page-995', 'https://ex.com/page-996', 'https://ex.com/page-997', 'https://ex.com/page-998', 'https://ex.com/page-999'])
    // With no batch waiting, the rest is indexed.
    await waitFor(async () => (await queuedForIndex(db)) === 0, 10_000, 'the queue to be indexed')
    expect(await indexedMatchesUpTo(db, 'page-99', 100)).toBe(11)
    await writer.close()
  })

  it('applies the bodies that waited behind each other in one transaction, each sender answered for its own batch, a failing op costing the other batches nothing', async () => {
    const threads: Worker[] = []
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, onApplyThread: (t) => threads.push(t) })
    // An op that passes every shape check but that SQLite refuses.
    sqlite.exec(`create trigger refuse_bad before insert on entries when new.url like '%/bad-%' begin select raise(abort, 'refused'); end`)
    await writer.applyReceivedBody(chunked(JSON.stringify({ ops: [stored(0)] }), [100])) // the thread and its connection start
    let replies = 0
    threads[0]!.on('message', (m: object) => {
      if ('outcomes' in m) replies++
    })
    const body = (ops: ManifestOp[]) => chunked(JSON.stringify({ ops }), [4096])
    // While this process's connection is held (as by another batch), three replicas' bodies arrive.
    const { sent } = await db.connection().execute(async () => {
      const sent = Promise.all([
        writer.applyReceivedBody(body(Array.from({ length: 100 }, (_, i) => stored(100 + i)))),
        writer.applyReceivedBody(body([stored(200), stored(0, { url: 'https://ex.com/bad-1', key: 'bad-1' }), stored(201)])),
        writer.applyReceivedBody(body([stored(300), { type: 'deleted', nodeId: 'n1', key: 'https://ex.com/page-0', variant: '' }])),
      ])
      await new Promise((r) => setImmediate(r))
      // Wrapped: returned as it is, the promise would be awaited while the connection is held.
      return { sent }
    })
    expect(await sent).toEqual([
      { kind: 'applied', result: { applied: 100, failed: 0 } },
      { kind: 'applied', result: { applied: 2, failed: 1 } },
      { kind: 'applied', result: { applied: 2, failed: 0 } },
    ])
    // One message to the thread and one answer for the three (the answers to indexing in idle time aside).
    expect(replies).toBe(1)
    expect(await countEntries(db)).toBe(1 + 100 + 2 + 1)
    expect((await heldBy(db, 'n1')).map((h) => h.key)).not.toContain('https://ex.com/page-0')
    await writer.close()
  })

  it('applies a body larger than the memory it keeps for bodies, and the next one as well', async () => {
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
    const long = 'x'.repeat(5000)
    const big = JSON.stringify({ ops: Array.from({ length: 1000 }, (_, i) => stored(i, { url: `https://ex.com/${long}/${i}` })) })
    expect(big.length).toBeGreaterThan(4 * 1024 * 1024)
    expect(await writer.applyReceivedBody(chunked(big, [65_536]))).toEqual({ kind: 'applied', result: { applied: 1000, failed: 0 } })
    expect(await writer.applyReceivedBody(chunked(JSON.stringify({ ops: [stored(5000)] }), [100]))).toEqual({ kind: 'applied', result: { applied: 1, failed: 0 } })
    expect(await countEntries(db)).toBe(1001)
    await writer.close()
  })

  it('indexes the backlog when no batch waits a thousand rows per transaction', async () => {
    const { hotStatements } = await import('./statements.ts')
    const hot = hotStatements(sqlite)
    sqlite.transaction(() => {
      for (let i = 0; i < 2500; i++) hot.recordStored('n0', entry({ url: `https://ex.com/old/${i}` }))
    })()
    const left: number[] = []
    // The thread's answers to the indexing transactions (no outcomes) say what each left queued.
    const watch = (thread: Worker) =>
      thread.on('message', (m: { outcomes?: unknown; searchBacklog?: number }) => {
        if (m.outcomes === undefined && m.searchBacklog !== undefined) left.push(m.searchBacklog)
      })
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, onApplyThread: watch })
    expect(await writer.applyReceivedBody(chunked(JSON.stringify({ ops: [stored(0)] }), [1000]))).toEqual({ kind: 'applied', result: { applied: 1, failed: 0 } })
    await waitFor(async () => left.at(-1) === 0, 30_000, 'the backlog to be indexed')
    // 2,501 queued after the batch: 1,000 per transaction.
    expect(left).toEqual([1501, 501, 0])
    expect(await indexedMatchesUpTo(db, 'old/2499', 10)).toBe(1)
    await writer.close()
  })

  it('takes a large backlog of the filter\'s index down a little with each batch, never all in one transaction', async () => {
    const { hotStatements } = await import('./statements.ts')
    // 3,000 entries whose URLs were never indexed (as after the upgrade that added the index).
    const hot = hotStatements(sqlite)
    sqlite.transaction(() => {
      for (let i = 0; i < 3000; i++) hot.recordStored('n0', entry({ url: `https://ex.com/old/${i}` }))
    })()
    expect(await queuedForIndex(db)).toBe(3000)
    const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log, searchBacklogRows: 100 })
    expect(await writer.applyReceivedBody(chunked(JSON.stringify({ ops: Array.from({ length: 10 }, (_, i) => stored(i)) }), [1000]))).toEqual({ kind: 'applied', result: { applied: 10, failed: 0 } })
    // The batch's transaction indexed 110 rows (and no batch waits, so a few hundred more may be gone by now).
    expect(await queuedForIndex(db)).toBeGreaterThan(2000)
    await waitFor(async () => (await queuedForIndex(db)) === 0, 30_000, 'the backlog to be indexed')
    expect(await indexedMatchesUpTo(db, 'old/299', 100)).toBe(11)
    await writer.close()
  })
})
