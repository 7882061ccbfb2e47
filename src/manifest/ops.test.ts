import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { applyOps, isTransientDbError, ManifestBusyError, parseOps, writeWhenFree } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { countEntries, listManifest, listNodes, purgesAfter } from './repositories.ts'
import { TEST_BUSY_TIMEOUT_MS, captureLog, entry, freshManifest, holdWriteLock, loopTurnsWhile } from './test-helpers.ts'

const T = 1_700_000_000_000

const sample: ManifestOp[] = [
  { type: 'node-heartbeat', node: { id: 'a', region: 'ams', internalUrl: 'http://a:8080', startedAt: T }, at: T + 1 },
  { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/1', tags: ['t'] }) },
  { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://ex.com/2' }) },
  { type: 'deleted', nodeId: 'a', key: 'https://ex.com/2', variant: '' },
  { type: 'purge', purge: { requestId: 'r1', kind: 'tag', value: 't', host: null, createdAt: T, createdBy: 'admin', nodeId: 'a' } },
  { type: 'purge-applied', nodeId: 'a', purgeId: 1 },
  { type: 'node-cleared', nodeId: 'a' },
  { type: 'prune', before: T },
  { type: 'clear', at: T, by: 'admin' },
]

describe('parseOps', () => {
  it('accepts every op kind as JSON round-trips it', () => {
    const parsed = parseOps(JSON.parse(JSON.stringify({ ops: sample })))
    expect(parsed).toEqual({ ok: true, ops: sample })
  })

  it('refuses the whole batch with the reason when one op does not fit', () => {
    expect(parseOps({})).toMatchObject({ ok: false, error: expect.stringContaining('{"ops"') })
    expect(parseOps({ ops: [sample[0], { type: 'explode' }] })).toEqual({ ok: false, error: 'ops[1]: unknown op type "explode"' })
    const badEntry = { type: 'stored', nodeId: 'a', entry: { ...entry({ url: 'https://ex.com/' }), storedAt: 'yesterday' } }
    expect(parseOps({ ops: [badEntry] })).toEqual({ ok: false, error: 'ops[0]: entry: storedAt must be an epoch-ms number' })
    const badPurge = { type: 'purge', purge: { requestId: 'r', kind: 'regex', value: '.*', host: null, createdAt: T, createdBy: 'x', nodeId: 'a' } }
    expect(parseOps({ ops: [badPurge] })).toMatchObject({ ok: false, error: expect.stringContaining('purge.kind') })
    expect(parseOps({ ops: new Array(11).fill(sample[0]) }, 10)).toMatchObject({ ok: false, error: expect.stringContaining('too many') })
  })
})

describe('applyOps', () => {
  let db: Kysely<Database>
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ db, cleanup } = await freshManifest())
  })
  afterEach(async () => {
    await cleanup()
  })

  it('applies a batch in order, in one transaction', async () => {
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
})

describe('writeWhenFree', () => {
  let m: Awaited<ReturnType<typeof freshManifest>>
  const unlocks: Array<() => void> = []
  beforeEach(async () => {
    m = await freshManifest()
  })
  afterEach(async () => {
    for (const unlock of unlocks.splice(0)) unlock()
    await m.cleanup()
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
    let ticks = 0
    const ticker = setInterval(() => ticks++, 1)
    const t0 = Date.now()
    const err = await writeWhenFree(m.db, insertAdmin('a'), { totalMs: 500 }).catch((e: unknown) => e)
    const elapsed = Date.now() - t0
    clearInterval(ticker)
    expect(err).toBeInstanceOf(ManifestBusyError)
    expect((err as ManifestBusyError).attempts).toBeGreaterThan(2)
    expect(((err as ManifestBusyError).cause as { code?: string }).code).toMatch(/^SQLITE_BUSY/)
    expect(isTransientDbError(err)).toBe(true)
    // It kept trying for the whole window, between attempts on timers (the ticker ran meanwhile);
    // one wait in the busy handler would have taken the connection's minute.
    expect(elapsed).toBeGreaterThanOrEqual(450)
    expect(ticks).toBeGreaterThan(0)
    expect(elapsed).toBeLessThan(TEST_BUSY_TIMEOUT_MS)
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
