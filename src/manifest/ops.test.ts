import fs from 'node:fs'
import SQLite from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import { sql, type Kysely } from 'kysely'
import { sqliteHandleOf, type Database } from './database.ts'
import { applyOps, isTransientDbError, ManifestBusyError, parseOps, writeWhenFree } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { countEntries, listManifest, listNodes, purgesAfter, recordPurge, sweepPurge } from './repositories.ts'
import type { NewPurge } from './repositories.ts'
import { TEST_BUSY_TIMEOUT_MS, captureLog, entry, freshManifest, freshManifestPerTest, holdWriteLock, loopTurnsWhile, type FreshManifest } from './test-helpers.ts'
import { turnsDuring } from '../test-support/servers.ts'

const T = 1_700_000_000_000

const sample: ManifestOp[] = [
  { type: 'node-heartbeat', node: { id: 'a', region: 'ams', internalUrl: 'http://a:8080', startedAt: T }, at: T + 1 },
  { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/1', tags: ['t'] }) },
  { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/2' }) },
  { type: 'deleted', nodeId: 'a', key: 'https://ex.com/2', variant: '' },
  { type: 'purge', purge: { requestId: 'r1', kind: 'tag', value: 't', host: null, createdAt: T, createdBy: 'admin', nodeId: 'a', soft: false } },
  { type: 'purge-applied', nodeId: 'a', purgeId: 1 },
  { type: 'purge', purge: { requestId: 'r2', kind: 'prefix', value: 'https://ex.com/', host: null, createdAt: T, createdBy: 'admin', nodeId: 'a', soft: true } },
  { type: 'purge-applied', nodeId: 'a', purgeId: 2, applied: [{ id: 2, at: T + 5 }] },
  { type: 'node-cleared', nodeId: 'a' },
  { type: 'prune', before: T },
  { type: 'clear', at: T, by: 'admin' },
]

describe('parseOps', () => {
  it('accepts every op kind as JSON round-trips it', () => {
    const parsed = parseOps(JSON.parse(JSON.stringify({ ops: sample })))
    expect(parsed).toEqual({ ok: true, ops: sample, unknownTypes: [] })
  })

  it('skips ops of a type it does not know and keeps the rest of the batch (a newer peer during a rolling deploy)', () => {
    const stored = sample[1]!
    expect(parseOps({ ops: [stored, { type: 'from-the-future', x: 1 }, stored] })).toEqual({ ok: true, ops: [stored, stored], unknownTypes: ['from-the-future'] })
    expect(parseOps({ ops: [{ nodeId: 'a' }] })).toEqual({ ok: false, error: 'ops[0]: type must be a string' })
  })

  it('refuses the whole batch with the reason when one op does not fit', () => {
    expect(parseOps({})).toMatchObject({ ok: false, error: expect.stringContaining('{"ops"') })
    const badEntry = { type: 'stored', nodeId: 'a', entry: { ...entry({ url: 'https://ex.com/' }), storedAt: 'yesterday' } }
    expect(parseOps({ ops: [badEntry] })).toEqual({ ok: false, error: 'ops[0]: entry: storedAt must be an epoch-ms number' })
    const badPurge = { type: 'purge', purge: { requestId: 'r', kind: 'regex', value: '.*', host: null, createdAt: T, createdBy: 'x', nodeId: 'a' } }
    expect(parseOps({ ops: [badPurge] })).toMatchObject({ ok: false, error: expect.stringContaining('purge.kind') })
    expect(parseOps({ ops: new Array(11).fill(sample[0]) }, 10)).toMatchObject({ ok: false, error: expect.stringContaining('too many') })
    const softMaybe = { type: 'purge', purge: { requestId: 'r', kind: 'all', value: '', host: null, createdAt: T, createdBy: 'x', nodeId: 'a', soft: 'maybe' } }
    expect(parseOps({ ops: [softMaybe] })).toEqual({ ok: false, error: 'ops[0]: purge.soft must be true or false' })
    const badTimes = { type: 'purge-applied', nodeId: 'a', purgeId: 2, applied: [{ id: 2, at: 'now' }] }
    expect(parseOps({ ops: [badTimes] })).toMatchObject({ ok: false, error: expect.stringContaining('applied must be {id, at}') })
  })

  it('reads whether a purge may be swept after its acknowledgment', () => {
    const purge = { requestId: 'r', kind: 'all', value: '', host: null, createdAt: T, createdBy: 'x', nodeId: 'a', soft: false }
    expect(parseOps({ ops: [{ type: 'purge', purge, sweepAfterAck: true }] })).toEqual({ ok: true, ops: [{ type: 'purge', purge, sweepAfterAck: true }], unknownTypes: [] })
    expect(parseOps({ ops: [{ type: 'purge', purge, sweepAfterAck: 'yes' }] })).toEqual({ ok: false, error: 'ops[0]: sweepAfterAck must be true or false' })
  })

  it('reads a purge from an older node, which sends no soft, as a hard purge', () => {
    const older = { type: 'purge', purge: { requestId: 'r', kind: 'all', value: '', host: null, createdAt: T, createdBy: 'x', nodeId: 'a' } }
    expect(parseOps({ ops: [older] })).toMatchObject({ ok: true, ops: [{ type: 'purge', purge: { soft: false } }] })
  })
})

describe('applyOps', () => {
  let db: Kysely<Database>
  freshManifestPerTest((m) => (db = m.db))

  it('applies a batch in order', async () => {
    const result = await applyOps(db, sample.slice(0, 6))
    expect(result).toEqual({ applied: 6, failed: 0 })
    expect(await listNodes(db)).toMatchObject([{ id: 'a', lastPurgeId: 1 }])
    expect(await countEntries(db)).toBe(1) // /1 purged by tag; /2 stays, held by nobody
    expect((await listManifest(db)).entries[0]).toMatchObject({ url: 'https://ex.com/2', nodeIds: [] })
    expect(await purgesAfter(db, 0)).toHaveLength(1)
  })

  it('drops only the op that cannot be applied, and says so', async () => {
    const { log, lines } = captureLog()
    const bad = { type: 'purge', purge: { requestId: 'r2', kind: 'regex', value: 'x', host: null, createdAt: T, createdBy: 'a', nodeId: 'a' } } as unknown as ManifestOp
    const result = await applyOps(db, [sample[1]!, bad, sample[2]!], log)
    expect(result).toEqual({ applied: 2, failed: 1 })
    expect(await countEntries(db)).toBe(2)
    expect(lines.map((l) => l.msg)).toContain('manifest op dropped: it cannot be applied')
  })

  it('records the same manifest through the prepared statements as through Kysely', async () => {
    const ops: ManifestOp[] = [
      ...sample.slice(0, 6),
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/3', storedAt: T + 5 }) },
      { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/3', storedAt: T + 7, size: 9 }) },
      // Older than what is recorded: the holding is kept, the metadata is not.
      { type: 'stored', nodeId: 'c', entry: entry({ url: 'https://ex.com/3', storedAt: T + 6, size: 1 }) },
      { type: 'holdings-forgotten', nodeId: 'b', entries: [{ key: 'https://ex.com/3', variant: '' }, { key: 'https://ex.com/nope', variant: '' }] },
      { type: 'node-heartbeat', node: { id: 'a', region: 'ams', internalUrl: 'http://a:8080', startedAt: T }, at: T },
    ]
    const other = await freshManifest()
    try {
      expect(await applyOps(db, ops)).toEqual({ applied: ops.length, failed: 0 })
      // Inside a caller's Kysely transaction there is no prepared path: every op goes through Kysely.
      await other.db.transaction().execute((trx) => applyOps(trx, ops))
      const snapshot = async (d: Kysely<Database>) => ({
        entries: (await listManifest(d)).entries,
        nodes: await listNodes(d),
        purges: await purgesAfter(d, 0),
      })
      const fast = await snapshot(db)
      expect(fast.entries.find((e) => e.url === 'https://ex.com/3')).toMatchObject({ size: 9, nodeIds: ['a', 'c'] })
      expect(fast.nodes).toMatchObject([{ id: 'a', lastSeenAt: T + 1, lastPurgeId: 1 }])
      expect(await snapshot(other.db)).toEqual(fast)
    } finally {
      await other.cleanup()
    }
  })

  it('keeps the statement journals of stored ops in memory, and of a clear on disk', async () => {
    const sqlite = sqliteHandleOf(db)!
    const writes = () => Number(/^syscw: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1])
    const stored: ManifestOp[] = Array.from({ length: 3000 }, (_, i) => ({ type: 'stored', nodeId: `n${i % 3}`, entry: entry({ url: `https://ex.com/j/${i}`, storedAt: T + i }) }))
    const before = writes()
    expect(await applyOps(db, stored)).toEqual({ applied: 3000, failed: 0 })
    // Every stored op's statements journal pages (the triggers): in a temp file that was
    // about 2.4 pwrites per op; what is left is the WAL frames of the commits.
    expect(writes() - before).toBeLessThan(stored.length)
    expect(sqlite.pragma('temp_store', { simple: true })).toBe(2)
    // A clear journals every page of the manifest: that stays on disk, in a chunk of its own.
    expect(await applyOps(db, [stored[0]!, { type: 'clear', at: T, by: 'admin' }])).toEqual({ applied: 2, failed: 0 })
    expect(sqlite.pragma('temp_store', { simple: true })).toBe(0)
    expect(await countEntries(db)).toBe(0)
  })

  it('does not record a variant that a purge in the log already covers (stored before it, delivered after it)', async () => {
    const purge: ManifestOp = { type: 'purge', purge: { requestId: 'p', kind: 'prefix', value: 'https://ex.com/a/', host: null, createdAt: T + 100, createdBy: 'x', nodeId: 'a' } }
    await applyOps(db, [purge])
    await applyOps(db, [
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/a/old', storedAt: T + 99 }) },
      // Stored in the purge's own millisecond: covered (a purge covers what was stored up to it).
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/a/same', storedAt: T + 100 }) },
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/a/new', storedAt: T + 101 }) },
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/b/old', storedAt: T + 99 }) },
    ])
    expect((await listManifest(db)).entries.map((e) => e.url).sort()).toEqual(['https://ex.com/a/new', 'https://ex.com/b/old'])
  })

  it('removes the entries of a large purge in chunks, letting the loop turn; a redelivery finishes a sweep cut short', async () => {
    const stored: ManifestOp[] = Array.from({ length: 2000 }, (_, i) => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/p/${i}`, storedAt: T + i }) }))
    stored.push({ type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/keep', storedAt: T }) })
    await applyOps(db, stored)
    const purge: NewPurge = { requestId: 'big', kind: 'prefix', value: 'https://ex.com/p/', host: null, createdAt: T + 1999, createdBy: 'x', nodeId: 'a' }
    const { result, turns } = await turnsDuring(() => applyOps(db, [{ type: 'purge', purge }]))
    expect(result).toEqual({ applied: 1, failed: 0 })
    expect((await listManifest(db)).entries.map((e) => e.url)).toEqual(['https://ex.com/keep'])
    // 2,000 entries in chunks of 250: the loop turned between every two.
    expect(turns).toBeGreaterThanOrEqual(7)

    // A primary that stopped after recording a purge and sweeping part of it.
    await applyOps(db, Array.from({ length: 600 }, (_, i) => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/q/${i}`, storedAt: T + i }) })))
    const second: NewPurge = { ...purge, requestId: 'cut-short', value: 'https://ex.com/q/' }
    await recordPurge(db, second)
    expect(await sweepPurge(db, second, 100)).toBe(100)
    await applyOps(db, [{ type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/q/after', storedAt: T + 5000 }) }])
    // The replica delivers the purge again: the rest goes, what was stored since stays.
    expect(await applyOps(db, [{ type: 'purge', purge: second }])).toEqual({ applied: 1, failed: 0 })
    expect((await listManifest(db)).entries.map((e) => e.url).sort()).toEqual(['https://ex.com/keep', 'https://ex.com/q/after'])
  })

  it('acknowledges a purge that allows it once it is recorded, and removes its entries when the deferred sweep runs', async () => {
    await applyOps(db, Array.from({ length: 300 }, (_, i): ManifestOp => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/d/${i}`, storedAt: T + i }) })))
    const purge: NewPurge = { requestId: 'later', kind: 'prefix', value: 'https://ex.com/d/', host: null, createdAt: T + 1000, createdBy: 'x', nodeId: 'a' }
    const deferred: (() => Promise<void>)[] = []
    const deferSweep = (sweep: () => Promise<void>) => void deferred.push(sweep)
    expect(await applyOps(db, [{ type: 'purge', purge, sweepAfterAck: true }], undefined, { deferSweep })).toEqual({ applied: 1, failed: 0 })
    // In the log, its entries still listed: the sweep is handed over, not run.
    expect((await purgesAfter(db, 0)).map((p) => p.requestId)).toEqual(['later'])
    expect(deferred).toHaveLength(1)
    expect(await countEntries(db)).toBe(300)
    // A store it covers that arrives now is not recorded.
    await applyOps(db, [{ type: 'stored', nodeId: 'b', entry: entry({ url: 'https://ex.com/d/late', storedAt: T + 999 }) }])
    expect(await countEntries(db)).toBe(300)
    await deferred[0]!()
    expect(await countEntries(db)).toBe(0)

    // Without a taker (a DirectWriter), and for an op that does not allow it, the sweep runs first.
    await applyOps(db, [{ type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/e/1', storedAt: T }) }])
    await applyOps(db, [{ type: 'purge', purge: { ...purge, requestId: 'now', value: 'https://ex.com/e/' }, sweepAfterAck: true }])
    expect(await countEntries(db)).toBe(0)
    await applyOps(db, [{ type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/f/1', storedAt: T }) }])
    await applyOps(db, [{ type: 'purge', purge: { ...purge, requestId: 'plain', value: 'https://ex.com/f/' } }], undefined, { deferSweep })
    expect(await countEntries(db)).toBe(0)
    expect(deferred).toHaveLength(1)
  })

  it('sweeps a purge whose entries are slow to remove in smaller transactions', async () => {
    await applyOps(db, Array.from({ length: 500 }, (_, i): ManifestOp => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/slow/${i}`, storedAt: T + i }) })))
    // Every removal made slow (a couple of ms of SQLite), as many holdings and search rows, or a
    // busy primary, make it: a fixed 250 per transaction would hold the loop for half a second.
    await sql`create trigger slow_delete after delete on entries begin select count(*) from (with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000) select x from c); end`.execute(db)
    const purge: NewPurge = { requestId: 'slow', kind: 'prefix', value: 'https://ex.com/slow/', host: null, createdAt: T + 1000, createdBy: 'x', nodeId: 'a' }
    const { result, turns } = await turnsDuring(() => applyOps(db, [{ type: 'purge', purge }]))
    expect(result).toEqual({ applied: 1, failed: 0 })
    expect(await countEntries(db)).toBe(0)
    // Fitted to a few ms per transaction: tens of them, not the two or three of a fixed size.
    expect(turns).toBeGreaterThanOrEqual(20)
  })

  it('lets the event loop turn while it applies a large batch', async () => {
    const ops: ManifestOp[] = Array.from({ length: 20_000 }, (_, i) => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/many/${i}` }) }))
    const { result, turns } = await turnsDuring(() => applyOps(db, ops))
    expect(result).toEqual({ applied: ops.length, failed: 0 })
    expect(await countEntries(db)).toBe(ops.length)
    // One synchronous pass would let the loop turn about once; a pause every few ms lets it turn many times.
    expect(turns).toBeGreaterThan(5)
  })

  it('commits a large batch as it goes, so no single commit writes all of it; a bad op costs only itself', async () => {
    const m = await freshManifest()
    const reader = new SQLite(m.path, { readonly: true })
    try {
      const count = reader.prepare('select count(*) from entries').pluck()
      const stores = (from: number): ManifestOp[] => Array.from({ length: 5_000 }, (_, i) => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://ex.com/chunked/${from + i}` }) }))
      const seen = new Set<number>()
      let done = false
      const applying = applyOps(m.db, stores(0)).finally(() => (done = true))
      // Between two chunks another connection sees what the earlier ones committed.
      while (!done) {
        seen.add(count.get() as number)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
      expect(await applying).toEqual({ applied: 5_000, failed: 0 })
      expect([...seen].some((n) => n > 0 && n < 5_000)).toBe(true)

      // NOT NULL: SQLite refuses the row. Its chunk is replayed op by op; every other op lands once.
      const ops = stores(5_000)
      ops.splice(2_500, 0, { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/bad', status: null as unknown as number }) })
      expect(await applyOps(m.db, ops)).toEqual({ applied: 5_000, failed: 1 })
      expect(count.get()).toBe(10_000)
    } finally {
      reader.close()
      await m.cleanup()
    }
  })
})

describe('writeWhenFree', () => {
  let m: FreshManifest
  freshManifestPerTest((fresh) => (m = fresh))
  const unlocks: Array<() => void> = []
  afterEach(() => {
    for (const unlock of unlocks.splice(0)) unlock()
  })
  const insertAdmin = (id: string) => (trx: Kysely<Database>) => trx.insertInto('admins').values({ id, name: id, created_at: T }).execute()
  const admins = async () => (await m.db.selectFrom('admins').select('id').execute()).map((r) => r.id)

  it('waits for a foreign write lock with timers, not in SQLite: the event loop keeps turning, and the write lands once the lock is gone', async () => {
    // Waiting in SQLite's busy handler would stop this process (and the lock holder in it) for a minute.
    m.sqlite.pragma(`busy_timeout = ${TEST_BUSY_TIMEOUT_MS}`)
    const lock = holdWriteLock(m.path)
    unlocks.push(lock.release)
    const write = writeWhenFree(m.db, insertAdmin('a'), { totalMs: 20_000 })
    await loopTurnsWhile(write)
    expect(await admins()).toEqual([])
    lock.release()
    await write
    expect(await admins()).toEqual(['a'])
    // The connection's own busy timeout is back for everyone else.
    expect(m.sqlite.pragma('busy_timeout', { simple: true })).toBe(TEST_BUSY_TIMEOUT_MS)
  })

  it('gives up with ManifestBusyError after the window when the lock is held longer, and writes nothing', async () => {
    m.sqlite.pragma(`busy_timeout = ${TEST_BUSY_TIMEOUT_MS}`)
    const lock = holdWriteLock(m.path)
    unlocks.push(lock.release)
    // Each attempt and each turn of the event loop, in the order they happen.
    const events: Array<'attempt' | 'turn'> = []
    let turning = true
    const turn = () => {
      events.push('turn')
      if (turning) setImmediate(turn)
    }
    setImmediate(turn)
    // Each attempt takes 200 ms on the window's clock: the third ends past the 500 ms window.
    let clock = 0
    const attempt = (trx: Kysely<Database>) => (events.push('attempt'), (clock += 200), insertAdmin('a')(trx))
    const err = await writeWhenFree(m.db, attempt, { totalMs: 500, now: () => clock }).catch((e: unknown) => e)
    turning = false
    expect(err).toBeInstanceOf(ManifestBusyError)
    const busy = err as ManifestBusyError
    expect(busy.attempts).toBe(3)
    expect(events.filter((e) => e === 'attempt')).toHaveLength(busy.attempts)
    expect((busy.cause as { code?: string }).code).toMatch(/^SQLITE_BUSY/)
    expect(isTransientDbError(err)).toBe(true)
    // It gave up only once its clock said the window was over.
    expect(busy.waitedMs).toBe(600)
    // Between every two attempts the event loop turned: the pauses are timers. One wait in
    // SQLite's busy handler would have held the loop for the connection's minute, past the test's timeout.
    const attemptsAt = events.flatMap((e, i) => (e === 'attempt' ? [i] : []))
    for (let k = 1; k < attemptsAt.length; k++) expect(events.slice(attemptsAt[k - 1], attemptsAt[k]), `between attempts ${k} and ${k + 1}`).toContain('turn')
    lock.release()
    expect(await admins()).toEqual([])
  })

  it('throws other errors at once, without retrying', async () => {
    await writeWhenFree(m.db, insertAdmin('a'))
    let calls = 0
    const err = await writeWhenFree(m.db, (trx) => (calls++, insertAdmin('a')(trx))).catch((e: unknown) => e)
    expect((err as { code?: string }).code).toMatch(/^SQLITE_CONSTRAINT/)
    expect(err).not.toBeInstanceOf(ManifestBusyError)
    expect(calls).toBe(1)
  })

  it('with totalMs 0 makes exactly one attempt', async () => {
    const lock = holdWriteLock(m.path)
    unlocks.push(lock.release)
    let calls = 0
    const err = await writeWhenFree(m.db, (trx) => (calls++, insertAdmin('a')(trx)), { totalMs: 0 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ManifestBusyError)
    expect(calls).toBe(1)
  })
})
