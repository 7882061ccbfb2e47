// The hot writes many rows per statement (recordStoredRun) against the same
// ops applied one statement per op: the same manifest, whatever the batch
// holds (repeated keys, older and identical records, moved URLs, stores a
// purge covers).

import { describe, expect, it } from 'vitest'
import type SQLite from 'better-sqlite3'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { applyOps, type ManifestOp } from './ops.ts'
import { recordPurge } from './repositories.ts'
import { applyHotOp, applyHotOps, entryParams, HOT_OP_TYPES, HOT_SQL, hotStatements, isHotOp, STORED_ROWS_PER_STATEMENT } from './statements.ts'
import type { HotOp } from './statements.ts'
import { entry, freshManifestPerTest, manifestTables } from './test-helpers.ts'

const T = 1_700_000_000_000

function inTransaction(sqlite: SQLite.Database, fn: () => void): void {
  sqlite.transaction(fn).immediate()
}

const stored = (nodeId: string, url: string, storedAt: number, overrides: Partial<ReturnType<typeof entry>> = {}): HotOp => ({
  type: 'stored',
  nodeId,
  entry: entry({ url, storedAt, ...overrides }),
})

describe('hot writes, many rows per statement', () => {
  let a: { db: Kysely<Database>; sqlite: SQLite.Database }
  let b: { db: Kysely<Database>; sqlite: SQLite.Database }
  freshManifestPerTest((m) => (a = m))
  freshManifestPerTest((m) => (b = m))

  /** The ops through applyHotOps on one manifest, one applyHotOp each on the other; both end alike. */
  async function sameAsOneByOne(ops: HotOp[], purgeAt?: number): Promise<Record<string, unknown[]>> {
    for (const m of [a, b]) {
      if (purgeAt !== undefined) {
        await recordPurge(m.db, { requestId: 'p', kind: 'prefix', value: 'https://ex.com/covered/', host: null, createdAt: purgeAt, createdBy: 'admin', nodeId: 'n1', soft: false })
      }
    }
    const hotA = hotStatements(a.sqlite)
    const hotB = hotStatements(b.sqlite)
    inTransaction(a.sqlite, () => applyHotOps(hotA, ops, hotA.newestPurgeAt()))
    inTransaction(b.sqlite, () => {
      for (const op of ops) applyHotOp(hotB, op)
    })
    const many = manifestTables(a.sqlite)
    expect(many).toEqual(manifestTables(b.sqlite))
    return many
  }

  it('records a long run of new entries, two holders each, as one statement per op does', async () => {
    const ops: HotOp[] = []
    for (let i = 0; i < 3 * STORED_ROWS_PER_STATEMENT + 7; i++) ops.push(stored(`n${i % 2}`, `https://ex.com/p/${i}`, T + i))
    for (let i = 0; i < 3 * STORED_ROWS_PER_STATEMENT + 7; i += 3) ops.push(stored('n2', `https://ex.com/p/${i}`, T + i))
    const after = await sameAsOneByOne(ops)
    expect(after.entries).toHaveLength(3 * STORED_ROWS_PER_STATEMENT + 7)
    expect(after.holdings).toHaveLength(ops.length)
  })

  it('applies a key named twice in a run in order: an older store after a newer one changes neither its URL nor its metadata', async () => {
    const after = await sameAsOneByOne([
      stored('n1', 'https://ex.com/x', T + 1, { key: 'k' }),
      // Older, under another URL: its holding counts, nothing else does.
      stored('n2', 'https://ex.com/x-old', T, { key: 'k', size: 1 }),
      stored('n3', 'https://ex.com/y', T),
    ])
    expect(after.entries).toMatchObject([{ key: 'k', url: 'https://ex.com/x', stored_at: T + 1, size: 100 }, { url: 'https://ex.com/y' }])
    expect(after.holdings).toEqual([
      { key: 'https://ex.com/y', variant: '', node_id: 'n3', stored_at: T },
      { key: 'k', variant: '', node_id: 'n1', stored_at: T + 1 },
      { key: 'k', variant: '', node_id: 'n2', stored_at: T },
    ])
  })

  it('mixes new, newer, older and identical records, moved URLs, variants, deletes and heartbeats', async () => {
    const ops: HotOp[] = [{ type: 'node-heartbeat', node: { id: 'n1', region: 'fra', internalUrl: 'http://n1', startedAt: T }, at: T }]
    for (let i = 0; i < 40; i++) ops.push(stored('n1', `https://ex.com/m/${i}`, T + i, { key: `m${i}` }))
    for (let i = 0; i < 40; i++) {
      const key = `m${i}`
      if (i % 4 === 0) ops.push(stored('n2', `https://ex.com/m/${i}`, T + i, { key })) // identical: a populated copy
      if (i % 4 === 1) ops.push(stored('n2', `https://ex.com/moved/${i}`, T + i + 100, { key, size: 5 })) // newer, under a new URL
      if (i % 4 === 2) ops.push(stored('n2', `https://ex.com/older/${i}`, T + i - 100, { key, size: 6 })) // older
      if (i % 4 === 3) ops.push(stored('n2', `https://ex.com/m/${i}`, T + i, { key, staleAt: T + 9 })) // a new lifetime at the same time
      ops.push(stored('n3', `https://ex.com/m/${i}`, T + i, { key, variant: 'br' }))
      if (i % 10 === 0) ops.push({ type: 'deleted', nodeId: 'n1', key, variant: '' })
    }
    const after = await sameAsOneByOne(ops)
    expect(after.entries).toHaveLength(80)
    expect(after.entries.filter((e) => (e as { url: string }).url.includes('/moved/'))).toHaveLength(10)
    expect(after.entries.filter((e) => (e as { url: string }).url.includes('/older/'))).toHaveLength(0)
  })

  it('moves a key to another host in a statement of identical copies and new entries, non-ASCII keys and variants among them', async () => {
    const ops: HotOp[] = []
    for (let i = 0; i < 20; i++) ops.push(stored('n1', `https://ex.com/ü/${i}`, T + i, { key: `ké${i}`, variant: i % 2 ? 'gzip' : '' }))
    for (let i = 0; i < 20; i++) {
      const key = `ké${i}`
      const variant = i % 2 ? 'gzip' : ''
      // The same path on another host, newer: the row keeps its url text but not its host.
      if (i % 5 === 0) ops.push(stored('n2', `https://ex.com/ü/${i}`, T + i + 1, { key, variant, host: 'ex.org' }))
      else ops.push(stored('n2', `https://ex.com/ü/${i}`, T + i, { key, variant }))
      ops.push(stored('n3', `https://ex.com/new/${i}`, T + i))
    }
    const after = await sameAsOneByOne(ops)
    expect(after.entries).toHaveLength(40)
    expect(after.entries.filter((e) => (e as { host: string }).host === 'ex.org')).toHaveLength(4)
    expect(after.holdings).toHaveLength(60)
  })

  it('leaves out what a recorded purge covers, in the middle of a run', async () => {
    const ops: HotOp[] = []
    for (let i = 0; i < 60; i++) ops.push(stored('n1', `https://ex.com/${i % 3 === 0 ? 'covered' : 'kept'}/${i}`, T + (i % 2 ? -10 : 10)))
    const after = await sameAsOneByOne(ops, T)
    // Covered: under the prefix and stored before the purge (odd i among multiples of 3).
    const coveredCount = ops.filter((_, i) => i % 3 === 0 && i % 2 === 1).length
    expect(after.entries).toHaveLength(60 - coveredCount)
  })

  it('writes tags and vary headers as JSON text, empty or not, in runs and one by one', async () => {
    const shapes: Array<Pick<ReturnType<typeof entry>, 'tags' | 'varyHeaders'>> = [
      { tags: [], varyHeaders: {} },
      { tags: ['a', 'b "c"'], varyHeaders: {} },
      { tags: [], varyHeaders: { 'accept-encoding': 'br' } },
      { tags: ['t'], varyHeaders: { accept: 'image/avif', 'x-é': '' } },
      // Only own keys count, as for JSON.stringify.
      { tags: [], varyHeaders: Object.create({ inherited: 'x' }) as Record<string, string> },
    ]
    const ops = shapes.map((shape, i) => stored('n1', `https://ex.com/j/${i}`, T + i, shape))
    // One of each alone too (a group of one goes through the single-row statement).
    const after = await sameAsOneByOne([...ops, stored('n2', 'https://ex.com/j/alone', T, shapes[3])])
    const columns = (after.entries as Array<{ url: string; tags: string; vary_headers: string }>).map((e) => [e.url, e.tags, e.vary_headers])
    expect(columns).toEqual([
      ...shapes.map((shape, i) => [`https://ex.com/j/${i}`, JSON.stringify(shape.tags), JSON.stringify(shape.varyHeaders)]),
      ['https://ex.com/j/alone', '["t"]', '{"accept":"image/avif","x-é":""}'],
    ])
    for (const shape of shapes) expect(entryParams(entry({ url: 'https://ex.com/', ...shape })).slice(-2)).toEqual([JSON.stringify(shape.tags), JSON.stringify(shape.varyHeaders)])
  })

  it('names every kind it takes once: applyHotOp applies each, and refuses any other', () => {
    const hot = hotStatements(a.sqlite)
    const samples: Record<string, ManifestOp> = {
      stored: stored('n1', 'https://ex.com/1', T),
      deleted: { type: 'deleted', nodeId: 'n1', key: 'https://ex.com/1', variant: '' },
      'holdings-forgotten': { type: 'holdings-forgotten', nodeId: 'n1', entries: [] },
      'node-cleared': { type: 'node-cleared', nodeId: 'n1' },
      'node-heartbeat': { type: 'node-heartbeat', node: { id: 'n1', region: 'r', internalUrl: 'http://n1', startedAt: T }, at: T },
      'purge-applied': { type: 'purge-applied', nodeId: 'n1', purgeId: 1 },
      hits: { type: 'hits', nodeId: 'n1', at: T, counts: [{ key: 'https://ex.com/1', hits: 2 }] },
    }
    expect([...HOT_OP_TYPES].sort()).toEqual(Object.keys(samples).sort())
    inTransaction(a.sqlite, () => {
      for (const op of Object.values(samples)) {
        expect(isHotOp(op)).toBe(true)
        applyHotOp(hot, op as HotOp)
      }
    })
    const prune: ManifestOp = { type: 'prune', before: T }
    expect(isHotOp(prune)).toBe(false)
    expect(() => applyHotOp(hot, prune as unknown as HotOp)).toThrow("'prune' ops are not applied with the prepared statements")
  })

  it('prepares the hot writes once per handle: a later batch prepares none of them again', async () => {
    const prepared: string[] = []
    const prepare = a.sqlite.prepare.bind(a.sqlite)
    a.sqlite.prepare = ((source: string) => {
      prepared.push(source)
      return prepare(source)
    }) as typeof a.sqlite.prepare
    const batch = (n: number): ManifestOp[] => Array.from({ length: 120 }, (_, i) => stored('n1', `https://ex.com/${n}/${i}`, T + i))
    await applyOps(a.db, batch(1))
    expect(prepared.filter((sql) => sql.startsWith('insert into entries'))).not.toEqual([])
    prepared.length = 0
    await applyOps(a.db, batch(2))
    // What is left is the transaction itself (begin, commit) and the busy wait around it.
    expect(prepared.filter((sql) => !/^(begin|commit|PRAGMA )/.test(sql))).toEqual([])
    expect(await a.db.selectFrom('entries').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).toEqual({ n: 240 })
  })

  it('runs every hot statement by index: none sorts in a temporary B-tree or reads a table whole', () => {
    // What SQLite plans, not how long it takes (speed belongs to bench/): the apply thread runs
    // these for every batch, on tables of up to millions of rows. A sort or a whole-table read
    // there costs every batch in proportion to the table (the hit counts' prune once sorted up to
    // 200,000 rows per batch: migration 2026120501).
    const { many, ...single } = HOT_SQL
    const rows = (head: string, row: string, tail: string) => `${head} ${[row, row].join(', ')} ${tail}`
    const statements: Array<[string, string]> = [
      ...Object.entries(single).flatMap(([name, v]): Array<[string, string]> => (typeof v === 'string' ? [[name, v]] : Object.entries(v).map(([n, sql]): [string, string] => [`${name}.${n}`, sql as string]))),
      ['many.entries', rows(many.entriesHead, many.entryRow, many.entriesTail)],
      ['many.holdings', rows(many.holdingsHead, many.holdingRow, many.holdingsTail)],
    ]
    // Scans on purpose: a purge's tags (json_each of one row's text); the hit counts' count(*) of
    // at most MAX_HIT_ROWS rows on the smallest index (the prune's bound), and the prune's walk of
    // its (hits, last_hit_at) index in order, which stops after the rows it drops.
    const allowed = new Set([
      'covered: SCAN t VIRTUAL TABLE INDEX 1:',
      'hits.pruneOver: SCAN url_hits USING COVERING INDEX url_hits_last_hit_at',
      'hits.pruneOver: SCAN url_hits USING COVERING INDEX url_hits_hits_last_hit_at',
    ])
    const found: string[] = []
    for (const [name, sql] of statements) {
      const parameters = new Array<null>((sql.match(/\?/g) ?? []).length).fill(null)
      for (const { detail } of a.sqlite.prepare(`explain query plan ${sql}`).all(...parameters) as Array<{ detail: string }>) {
        // A statement's own rows (VALUES) are no table.
        if (/TEMP B-TREE|^SCAN (?!\d+-ROW VALUES CLAUSE)/.test(detail) && !allowed.has(`${name}: ${detail}`)) found.push(`${name}: ${detail}`)
      }
    }
    expect(statements.length).toBeGreaterThan(15)
    expect(found).toEqual([])
  })
})
