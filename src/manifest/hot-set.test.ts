import type { Kysely } from 'kysely'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Database } from './database.ts'
import { HIT_RETENTION_MS, HITS_SQL, MAX_HIT_ROWS } from './hits-sql.ts'
import { startTrafficRecording, type TrafficRecording } from '../traffic.ts'
import { MAX_KEYS_PER_HITS_OP, MAX_PENDING_HIT_KEYS, hottestMissingOn, hottestMissingPage } from './hot-set.ts'
import type { HotCursor } from './hot-set.ts'
import { applyOps, parseOps } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { recordStored, upsertNode } from './repositories.ts'
import { hotStatements } from './statements.ts'
import { captureLog, entry, freshManifest, type FreshManifest } from './test-helpers.ts'
import { DirectWriter } from './writer.ts'

describe('hit counts', () => {
  let db: Kysely<Database>
  let cleanup: () => Promise<void>
  let sqlite: FreshManifest['sqlite']
  let writer: DirectWriter
  let submitted: ManifestOp[]
  const counting = () => ({
    submit(op: ManifestOp) {
      submitted.push(op)
      writer.submit(op)
    },
  })

  beforeEach(async () => {
    ;({ db, cleanup, sqlite } = await freshManifest())
    writer = new DirectWriter({ db, intervalMs: 5, log: captureLog().log })
    submitted = []
  })
  afterEach(async () => {
    await writer.close()
    await cleanup()
  })

  const rows = async () => (await db.selectFrom('url_hits').select(['key', 'hits']).orderBy('key').execute()).map((r) => [r.key, r.hits])

  /** A node's traffic, counted as it serves (src/traffic.ts), handed to the writer only when told or when full. */
  const node = (nodeId: string) => startTrafficRecording({ writer: counting(), nodeId, hitFlushMs: 0 })
  /** One GET of `url` answered from the memory tier. */
  const ask = (recording: TrafficRecording, url: string) => {
    const u = new URL(url)
    recording.recorder.record({ cacheStatus: { hit: true, ttl: 60 }, tier: 'memory' }, 1, { method: 'GET', scheme: 'http', host: u.host, path: u.pathname })
  }
  const hitsOps = () => submitted.filter((op) => op.type === 'hits')

  it('are kept in memory and reach the manifest as one op per batch, added to what other nodes counted', async () => {
    const recording = node('n1')
    for (let i = 0; i < 5; i++) ask(recording, 'http://h/z')
    for (let i = 0; i < 3; i++) ask(recording, 'http://h/y')
    ask(recording, 'http://h/a')
    expect(submitted).toHaveLength(0)
    await writer.flush()
    expect(await rows()).toEqual([])

    recording.recordHitsNow()
    expect(hitsOps()).toHaveLength(1)
    expect(hitsOps()[0]).toMatchObject({ type: 'hits', nodeId: 'n1', counts: expect.arrayContaining([{ key: 'http://h/z', hits: 5 }]) })
    await writer.flush()
    expect(await rows()).toEqual([
      ['http://h/a', 1],
      ['http://h/y', 3],
      ['http://h/z', 5],
    ])

    // Another node's batch adds to the same rows.
    const other = node('n2')
    ask(other, 'http://h/a')
    ask(other, 'http://h/a')
    other.stop()
    recording.recordHitsNow() // nothing counted since: no op
    expect(hitsOps()).toHaveLength(2)
    await writer.flush()
    expect(await rows()).toContainEqual(['http://h/a', 3])
    recording.stop()
  })

  it('flushes early when enough keys are waiting, as ops of a bounded size, so memory stays bounded whatever the traffic', async () => {
    const recording = node('n1')
    for (let i = 0; i < MAX_PENDING_HIT_KEYS - 1; i++) ask(recording, `http://h/${i % (MAX_KEYS_PER_HITS_OP + 10)}`)
    // Many hits, but fewer keys than a hand-over takes: nothing handed over yet.
    expect(submitted).toHaveLength(0)
    for (let i = 0; i < MAX_PENDING_HIT_KEYS + 10; i++) ask(recording, `http://h/${i}`)
    const sizes = hitsOps().map((op) => (op as { counts: unknown[] }).counts.length)
    expect(sizes).toEqual(Array(MAX_PENDING_HIT_KEYS / MAX_KEYS_PER_HITS_OP).fill(MAX_KEYS_PER_HITS_OP))
    recording.stop()
    expect(hitsOps()).toHaveLength(sizes.length + 1)
    await writer.flush()
    expect(await rows()).toHaveLength(MAX_PENDING_HIT_KEYS + 10)
    expect(await rows()).toContainEqual(['http://h/0', Math.ceil((MAX_PENDING_HIT_KEYS - 1) / (MAX_KEYS_PER_HITS_OP + 10)) + 1])
  })

  it('prunes keys not asked for within the retention window', async () => {
    const at = Date.now()
    await applyOps(db, [{ type: 'hits', nodeId: 'n1', at: at - HIT_RETENTION_MS - 1000, counts: [{ key: 'http://h/old', hits: 100 }] }])
    await applyOps(db, [{ type: 'hits', nodeId: 'n1', at, counts: [{ key: 'http://h/new', hits: 1 }] }])
    expect(await rows()).toEqual([['http://h/new', 1]])
  })

  it('past MAX_HIT_ROWS drops the least asked-for keys, the longest unasked among equals, reading its index in order', async () => {
    const at = Date.now()
    // A full table: every key asked for once, key i last at `at - MAX_HIT_ROWS + i`, and ten asked for twice, long ago.
    const insert = sqlite.prepare('insert into url_hits (key, hits, last_hit_at) values (?, ?, ?)')
    sqlite.transaction(() => {
      for (let i = 0; i < MAX_HIT_ROWS - 10; i++) insert.run(`http://h/${i}`, 1, at - MAX_HIT_ROWS + i)
      for (let i = 0; i < 10; i++) insert.run(`http://h/twice-${i}`, 2, at - 2 * MAX_HIT_ROWS)
    })()
    // What SQLite does, not how long it takes: the prune walks the (hits, last_hit_at) index and
    // stops after the rows it drops. Sorting the lowest count's rows instead (a temporary B-tree)
    // cost every batch of counts tens of ms once the table was full.
    const plan = (sqlite.prepare(`explain query plan ${HITS_SQL.pruneOver}`).all() as Array<{ detail: string }>).map((p) => p.detail)
    expect(plan.some((d) => /TEMP B-TREE/.test(d))).toBe(false)
    expect(plan).toContain('SCAN url_hits USING COVERING INDEX url_hits_hits_last_hit_at')
    // Five new keys (once each) and one more count for key 0: the table is five over its bound.
    const hot = hotStatements(sqlite)
    sqlite.transaction(() => hot.recordHits(at, [...Array.from({ length: 5 }, (_, i) => ({ key: `http://h/new-${i}`, hits: 1 })), { key: 'http://h/0', hits: 1 }]))()
    const count = (sql: string, ...params: unknown[]) => (sqlite.prepare(sql).get(...params) as { n: number }).n
    expect(count('select count(*) as n from url_hits')).toBe(MAX_HIT_ROWS)
    // Gone: keys 1-5, asked for once and longest ago. Kept: key 0 (now twice), key 6, the new keys, and the keys asked for twice however old.
    for (let i = 1; i <= 5; i++) expect(count('select count(*) as n from url_hits where key = ?', `http://h/${i}`)).toBe(0)
    for (const key of ['http://h/0', 'http://h/6', 'http://h/new-0', 'http://h/new-4', 'http://h/twice-0', 'http://h/twice-9']) expect(count('select count(*) as n from url_hits where key = ?', key)).toBe(1)
  })

  it('records the same counts inside a caller\'s transaction (through Kysely) as with prepared statements', async () => {
    const at = Date.now()
    await applyOps(db, [{ type: 'hits', nodeId: 'n1', at, counts: [{ key: 'http://h/a', hits: 2 }] }])
    await db.transaction().execute((trx) => applyOps(trx, [{ type: 'hits', nodeId: 'n2', at: at - 5, counts: [{ key: 'http://h/a', hits: 3 }, { key: 'http://h/b', hits: 1 }] }]))
    expect(await rows()).toEqual([
      ['http://h/a', 5],
      ['http://h/b', 1],
    ])
    // An older batch delivered late does not move the newest hit back.
    expect((await db.selectFrom('url_hits').select('last_hit_at').where('key', '=', 'http://h/a').executeTakeFirstOrThrow()).last_hit_at).toBe(at)
  })

  it('refuses a malformed batch from a peer with the reason', () => {
    expect(parseOps({ ops: [{ type: 'hits', nodeId: 'n1', at: 1, counts: [{ key: 'k', hits: 0 }] }] })).toEqual({ ok: false, error: 'ops[0]: each count needs hits (a positive integer)' })
    expect(parseOps({ ops: [{ type: 'hits', nodeId: 'n1', at: 1, counts: [{ key: 'k', hits: 2 }] }] })).toEqual({ ok: true, ops: [{ type: 'hits', nodeId: 'n1', at: 1, counts: [{ key: 'k', hits: 2 }] }], unknownTypes: [] })
  })

  it('orders the entries a node lacks hottest first, skipping what it holds and what is no longer fresh', async () => {
    const now = 1_700_000_000_000 + 1000 // entry() stores at 1_700_000_000_000, fresh for a minute
    await upsertNode(db, { id: 'peer', region: 'r', internalUrl: 'http://127.0.0.1:1', startedAt: now }, now)
    for (const url of ['http://h/a', 'http://h/b', 'http://h/c', 'http://h/held']) await recordStored(db, 'peer', entry({ url }))
    await recordStored(db, 'me', entry({ url: 'http://h/held' }))
    await recordStored(db, 'peer', entry({ url: 'http://h/stale', staleAt: now - 1 }))
    await applyOps(db, [
      { type: 'hits', nodeId: 'peer', at: now, counts: [{ key: 'http://h/b', hits: 9 }, { key: 'http://h/c', hits: 4 }, { key: 'http://h/held', hits: 50 }, { key: 'http://h/stale', hits: 70 }] },
    ])
    const hot = await hottestMissingOn(db, 'me', now, 10)
    expect(hot.map((e) => e.key)).toEqual(['http://h/b', 'http://h/c'])
    expect(hot[0]!.holders.map((h) => h.nodeId)).toEqual(['peer'])
  })

  it('reads the hot set a page at a time: the pages joined are the whole list, ties in hits included', async () => {
    const now = 1_700_000_000_000 + 1000
    await upsertNode(db, { id: 'peer', region: 'r', internalUrl: 'http://127.0.0.1:1', startedAt: now }, now)
    // Three keys per count of hits: a page may end inside a tie.
    const keys = Array.from({ length: 12 }, (_, i) => `http://h/${String.fromCharCode(97 + i)}`)
    for (const url of keys) await recordStored(db, 'peer', entry({ url }))
    await applyOps(db, [{ type: 'hits', nodeId: 'peer', at: now, counts: keys.map((key, i) => ({ key, hits: 10 - Math.floor(i / 3) })) }])
    const whole = (await hottestMissingOn(db, 'me', now, 100)).map((e) => e.key)
    expect(whole).toHaveLength(12)
    const paged: string[] = []
    let after: HotCursor | undefined
    for (;;) {
      const page = await hottestMissingPage(db, 'me', now, 2, after)
      if (page.entries.length === 0) break
      expect(page.entries.length).toBeLessThanOrEqual(2)
      paged.push(...page.entries.map((e) => e.key))
      after = page.next
    }
    expect(paged).toEqual(whole)
  })
})
