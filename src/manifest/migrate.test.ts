import path from 'node:path'
import type SQLite from 'better-sqlite3'
import { sql } from 'kysely'
import type { Kysely } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { openDatabase } from './database.ts'
import type { Database } from './database.ts'
import { MIGRATIONS, MigrationFailedError, appliedMigrations, migrateTo, migrateToLatest } from './migrate.ts'
import { OldCursorError, clearManifest, countEntries, entriesMissingOn, listManifest, purgeCoverage, recordStored, sweepPurge } from './repositories.ts'
import { indexQueued, queuedForIndex } from './search.ts'
import { applyOps } from './ops.ts'
import { entry, queryPlans, recordStoredOnOldSchema, tableNames, tempDir } from './test-helpers.ts'

const ALL_TABLES = [
  'admins',
  'api_tokens',
  'challenges',
  'entries',
  'entries_count',
  'entries_search',
  'entries_search_config',
  'entries_search_data',
  'entries_search_docsize',
  'entries_search_idx',
  'entries_search_queue',
  'entry_nodes',
  'invites',
  'node_holdings',
  'node_minute_paths',
  'node_minutes',
  'nodes',
  'passkeys',
  'purge_nodes',
  'purges',
  'sessions',
  'url_hits',
]

describe('migrations', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  function open(): { db: Kysely<Database>; file: string; sqlite: SQLite.Database } {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const { db, sqlite } = openDatabase({ path: file })
    cleanups.push(() => db.destroy())
    return { db, file, sqlite }
  }

  it('builds the whole schema on a fresh file, and a second run does nothing', async () => {
    const { db } = open()
    const applied = await migrateToLatest(db)
    expect(applied).toEqual(Object.keys(MIGRATIONS))
    expect((await tableNames(db)).filter((t) => !t.startsWith('kysely_'))).toEqual(ALL_TABLES)
    expect(await migrateToLatest(db)).toEqual([])
    expect(await appliedMigrations(db)).toEqual(Object.keys(MIGRATIONS))
  })

  it('upgrades a database made by the first migration, keeping its rows', async () => {
    const { db } = open()
    const [first] = Object.keys(MIGRATIONS)
    expect(await migrateTo(db, first!)).toEqual([first])
    await db
      .insertInto('nodes')
      .values({ id: 'n1', region: 'ams', internal_url: 'http://n1:8080', started_at: 1, last_seen_at: 2 } as never)
      .execute()
    const before = await db.introspection.getTables()
    expect(before.find((t) => t.name === 'nodes')!.columns.map((c) => c.name)).not.toContain('last_purge_id')

    expect(await migrateToLatest(db)).toEqual(Object.keys(MIGRATIONS).slice(1))
    const node = await db.selectFrom('nodes').selectAll().executeTakeFirstOrThrow()
    expect(node).toMatchObject({ id: 'n1', region: 'ams', last_purge_id: 0 })
    const indexes = await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'entries'`.execute(db)
    // Each index is written on every stored op: only those a query reads are kept.
    expect(indexes.rows.map((r) => r.name).sort()).toEqual(['entries_host', 'entries_key', 'entries_stored_at', 'entries_url_not_key'])
  })

  it('counts the entries of an existing manifest, and the count follows every write after it', async () => {
    const { db } = open()
    await migrateTo(db, '2026120113_entries_write_indexes')
    const T = 1_700_000_000_000
    for (let i = 0; i < 30; i++) await recordStoredOnOldSchema(db, 'a', entry({ url: `https://h.test/old/${i}`, storedAt: T + i }))
    expect(await migrateToLatest(db)).toEqual(['2026120114_counts', '2026120115_holdings_by_entry_id', '2026120201_url_index_not_key', '2026120202_entries_search_rowids', '2026120203_stored_at_index_by_id', '2026120501_url_hits_prune_order'])
    const total = async () => (await listManifest(db, { limit: 1 })).total
    const counted = async () => Number((await sql<{ n: number }>`select count(*) as n from entries`.execute(db)).rows[0]!.n)
    const holdings = async () => Number((await sql<{ n: number }>`select count(*) as n from entry_nodes where node_id = 'b'`.execute(db)).rows[0]!.n)
    expect(await total()).toBe(30)
    expect(await countEntries(db, { nodeId: 'a' })).toBe(30)

    // New rows count; an upsert that updates, a copy and an older record do not.
    await applyOps(db, [
      { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://h.test/new/1', storedAt: T + 100 }) },
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://h.test/old/1', storedAt: T + 1 }) },
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://h.test/old/2', storedAt: T + 200 }) },
      { type: 'stored', nodeId: 'c', entry: entry({ url: 'https://h.test/old/3', storedAt: T - 5 }) },
    ])
    await sql`insert or ignore into entries (key, variant, host, url, status, size, stored_at, stale_at, delete_at) values ('https://h.test/old/4', '', 'h.test', 'https://h.test/old/4', 200, 1, 1, 1, 1)`.execute(db)
    expect(await total()).toBe(31)
    expect(await counted()).toBe(31)
    // A node's holdings: new ones count, a copy again does not, a dropped one counts down.
    await applyOps(db, [
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://h.test/old/1', storedAt: T + 1 }) },
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://h.test/old/5', storedAt: T + 5 }) },
      { type: 'deleted', nodeId: 'b', key: 'https://h.test/old/2', variant: '' },
    ])
    expect(await countEntries(db, { nodeId: 'b' })).toBe(2)
    expect(await countEntries(db, { nodeId: 'c' })).toBe(1)
    expect(await countEntries(db, { nodeId: 'nobody' })).toBe(0)

    // Deletes count down, through a purge's chunks and a clear.
    await sweepPurge(db, { kind: 'prefix', value: 'https://h.test/old/1', host: null, createdAt: T + 1000, soft: false }, 4)
    expect(await total()).toBe(await counted())
    // The purge's entries took their holdings with them (a cascade), counted too.
    expect(await countEntries(db, { nodeId: 'b' })).toBe(await holdings())
    await sweepPurge(db, { kind: 'prefix', value: 'https://h.test/old/', host: null, createdAt: T + 1000, soft: false })
    expect(await total()).toBe(1)
    await applyOps(db, [{ type: 'node-cleared', nodeId: 'c' }])
    expect(await countEntries(db, { nodeId: 'c' })).toBe(0)
    await clearManifest(db)
    expect(await total()).toBe(0)
    expect(await countEntries(db, { nodeId: 'a' })).toBe(0)
    await recordStored(db, 'a', entry({ url: 'https://h.test/after-clear', storedAt: T }))
    expect(await total()).toBe(1)

    // Down again: the index the count replaced is back, the count table gone.
    await migrateTo(db, '2026120113_entries_write_indexes')
    const indexes = await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'entries'`.execute(db)
    expect(indexes.rows.map((r) => r.name)).toContain('entries_delete_at')
    expect(await tableNames(db)).not.toContain('entries_count')
    expect(await tableNames(db)).not.toContain('node_holdings')
  })

  it('keys holdings by entry id (2026120115) on a file with rows, and back, keeping rowids, holdings, counts and the search index', async () => {
    const { db } = open()
    await migrateTo(db, '2026120114_counts')
    const T = 1_700_000_000_000
    for (let i = 0; i < 20; i++) {
      const e = entry({ url: `https://h.test/${i % 2 ? 'blog' : 'shop'}/${i}`, storedAt: T + i, variant: i % 4 === 0 ? 'gzip' : '' })
      await recordStoredOnOldSchema(db, 'a', e)
      if (i % 3 === 0) await recordStoredOnOldSchema(db, 'b', e)
    }
    // A removed row leaves a gap in the rowids: the copy must keep them, not renumber.
    await sql`delete from entries where key = 'https://h.test/shop/2'`.execute(db)
    await indexQueued(db, 1000)
    const rowsByRowid = async (idColumn: 'rowid' | 'id') =>
      (await sql<{ rid: number; key: string; variant: string }>`select ${sql.raw(idColumn)} as rid, key, variant from entries order by 1`.execute(db)).rows
    const holdingsBefore = (await sql<{ key: string; variant: string; node_id: string; stored_at: number }>`select key, variant, node_id, stored_at from entry_nodes order by 1, 2, 3`.execute(db)).rows
    const rowids = await rowsByRowid('rowid')
    expect(rowids.at(-1)!.rid).toBeGreaterThan(rowids.length)
    expect(holdingsBefore).toHaveLength(19 + 7)

    expect(await migrateTo(db, '2026120115_holdings_by_entry_id')).toEqual(['2026120115_holdings_by_entry_id'])
    expect(await rowsByRowid('id')).toEqual(rowids)
    const holdingsUp = (await sql<{ key: string; variant: string; node_id: string; stored_at: number }>`
      select e.key, e.variant, h.node_id, h.stored_at from entry_nodes h join entries e on e.id = h.entry_id order by 1, 2, 3`.execute(db)).rows
    expect(holdingsUp).toEqual(holdingsBefore)
    expect(await countEntries(db)).toBe(19)
    expect(await countEntries(db, { nodeId: 'a' })).toBe(19)
    expect(await countEntries(db, { nodeId: 'b' })).toBe(7)
    // Nothing queued: the index built before the move still names the right rows.
    expect(await queuedForIndex(db)).toBe(0)
    expect((await listManifest(db, { filter: 'blog/1' })).entries.map((e) => e.url).sort()).toEqual(['https://h.test/blog/1', 'https://h.test/blog/11', 'https://h.test/blog/13', 'https://h.test/blog/15', 'https://h.test/blog/17', 'https://h.test/blog/19'])
    expect((await listManifest(db, { nodeId: 'b' })).entries.map((e) => [e.url, e.nodeIds])).toContainEqual(['https://h.test/shop/0', ['a', 'b']])
    // Writes after the move keep the counts, and a purge still takes the holdings with it.
    await applyOps(db, [
      { type: 'stored', nodeId: 'b', entry: entry({ url: 'https://h.test/shop/4', storedAt: T + 4, variant: 'gzip' }) },
      { type: 'stored', nodeId: 'c', entry: entry({ url: 'https://h.test/new', storedAt: T + 50 }) },
      { type: 'deleted', nodeId: 'a', key: 'https://h.test/blog/1', variant: '' },
    ])
    expect(await countEntries(db)).toBe(20)
    expect(await countEntries(db, { nodeId: 'a' })).toBe(18)
    expect(await countEntries(db, { nodeId: 'b' })).toBe(8)
    await sweepPurge(db, { kind: 'prefix', value: 'https://h.test/shop/', host: null, createdAt: T + 1000, soft: false })
    expect(await countEntries(db, { nodeId: 'b' })).toBe(Number((await sql<{ n: number }>`select count(*) as n from entry_nodes where node_id = 'b'`.execute(db)).rows[0]!.n))

    // Down: holdings by key again, the same rowids, the same counts.
    const idsNow = await rowsByRowid('id')
    const holdingsNow = (await sql<{ key: string; variant: string; node_id: string; stored_at: number }>`
      select e.key, e.variant, h.node_id, h.stored_at from entry_nodes h join entries e on e.id = h.entry_id order by 1, 2, 3`.execute(db)).rows
    await migrateTo(db, '2026120114_counts')
    expect(await rowsByRowid('rowid')).toEqual(idsNow)
    expect((await sql`select key, variant, node_id, stored_at from entry_nodes order by 1, 2, 3`.execute(db)).rows).toEqual(holdingsNow)
    const counts = (await sql<{ node_id: string; n: number }>`select node_id, n from node_holdings where n > 0 order by node_id`.execute(db)).rows
    const counted = (await sql<{ node_id: string; n: number }>`select node_id, count(*) as n from entry_nodes group by node_id order by node_id`.execute(db)).rows
    expect(counts).toEqual(counted)
    expect((await sql<{ n: number }>`select n from entries_count`.execute(db)).rows[0]!.n).toBe(idsNow.length)
    // The old shape's cascade is back.
    await sql`delete from entries`.execute(db)
    expect((await sql<{ n: number }>`select count(*) as n from entry_nodes`.execute(db)).rows[0]!.n).toBe(0)
  })

  it('makes the URL search index again without positions (2026120202) and queues every entry for it; the filter finds them throughout', async () => {
    const { db } = open()
    await migrateTo(db, '2026120201_url_index_not_key')
    const T = 1_700_000_000_000
    await applyOps(db, Array.from({ length: 30 }, (_, i) => ({ type: 'stored' as const, nodeId: 'a', entry: entry({ url: `https://h.test/${i % 3 ? 'blog' : 'shop'}/${i}`, storedAt: T + i }) })))
    await indexQueued(db, 10_000)
    await db.deleteFrom('entries').where('url', '=', 'https://h.test/blog/1').execute()
    const found = async (filter: string) => (await listManifest(db, { filter, limit: 100 })).total

    expect(await migrateToLatest(db)).toEqual(['2026120202_entries_search_rowids', '2026120203_stored_at_index_by_id', '2026120501_url_hits_prune_order'])
    // Every entry, and nothing else (the deleted row's change has nothing to take out of the new index).
    expect(await queuedForIndex(db)).toBe(29)
    expect(await found('shop/')).toBe(10)
    await indexQueued(db, 10_000)
    expect(await queuedForIndex(db)).toBe(0)
    expect(await found('shop/')).toBe(10)
    expect(await found('BLOG/2')).toBe(8) // blog/2 and blog/20 to blog/29 but the shop's 21, 24 and 27
    await sql`insert into entries_search (entries_search) values ('integrity-check')`.execute(db)
    // No positions: a phrase is refused, which is why the filter asks for trigrams.
    await expect(sql`select rowid from entries_search where entries_search match '"shop/1"'`.execute(db)).rejects.toThrow(/phrase queries are not supported/)
  })

  it('indexes only the URLs that are not their key (2026120201) on a file with rows, and still finds every entry by url', async () => {
    const { db, sqlite } = open()
    await migrateTo(db, '2026120115_holdings_by_entry_id')
    const T = 1_700_000_000_000
    const ops = []
    for (let i = 0; i < 40; i++) ops.push({ type: 'stored' as const, nodeId: 'a', entry: entry({ url: `https://h.test/${i % 2 ? 'blog' : 'shop'}/${i}`, storedAt: T + i }) })
    // Keys a rule rewrote: one key per language under one URL (stored before the rule too, as its own key), and a URL whose key sorts elsewhere.
    const rewritten = [
      entry({ url: 'https://h.test/shop/page', storedAt: T + 99 }),
      entry({ url: 'https://h.test/shop/page', key: 'https://h.test/shop/page#lang=de', storedAt: T + 100 }),
      entry({ url: 'https://h.test/shop/page', key: 'https://h.test/shop/page#lang=fr', storedAt: T + 101 }),
      entry({ url: 'https://h.test/shop/moved', key: 'https://h.test/a-key-elsewhere', storedAt: T + 102 }),
      entry({ url: 'https://h.test/elsewhere', key: 'https://h.test/shop/a-key-inside', storedAt: T + 103 }),
    ]
    for (const e of rewritten) ops.push({ type: 'stored' as const, nodeId: 'b', entry: e })
    await applyOps(db, ops)

    expect(await migrateToLatest(db)).toEqual(['2026120201_url_index_not_key', '2026120202_entries_search_rowids', '2026120203_stored_at_index_by_id', '2026120501_url_hits_prune_order'])
    const indexes = await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'entries'`.execute(db)
    expect(indexes.rows.map((r) => r.name).sort()).toEqual(['entries_host', 'entries_key', 'entries_stored_at', 'entries_url_not_key'])
    const inUrlIndex = await sql<{ url: string }>`select url from entries indexed by entries_url_not_key where url <> key order by url`.execute(db)
    expect(inUrlIndex.rows.map((r) => r.url)).toEqual(['https://h.test/elsewhere', 'https://h.test/shop/moved', 'https://h.test/shop/page', 'https://h.test/shop/page'])
    // Written after the upgrade too: a new rewritten key goes in, a key that is its URL stays out.
    await applyOps(db, [
      { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://h.test/shop/page', key: 'https://h.test/shop/page#lang=it', storedAt: T + 200 }) },
      { type: 'stored', nodeId: 'a', entry: entry({ url: 'https://h.test/shop/new', storedAt: T + 201 }) },
    ])
    expect(Number((await sql<{ n: number }>`select count(*) as n from entries indexed by entries_url_not_key where url <> key`.execute(db)).rows[0]!.n)).toBe(5)

    // By url: the variants of every key of that URL; by key: that key's.
    const missing = async (key: string, url?: string) => (await entriesMissingOn(db, 'c', T, { key, url })).map((e) => e.key).sort()
    expect(await missing('https://h.test/shop/page#lang=de', 'https://h.test/shop/page')).toEqual(['https://h.test/shop/page', 'https://h.test/shop/page#lang=de', 'https://h.test/shop/page#lang=fr', 'https://h.test/shop/page#lang=it'])
    expect(await missing('https://h.test/shop/2', 'https://h.test/shop/2')).toEqual(['https://h.test/shop/2'])
    expect(await missing('https://h.test/shop/page#lang=de')).toEqual(['https://h.test/shop/page#lang=de'])
    const coverage = async (kind: 'url' | 'prefix', value: string) => (await purgeCoverage(db, { kind, value, host: null })).entries
    expect(await coverage('url', 'https://h.test/shop/page')).toBe(4)
    expect(await coverage('url', 'https://h.test/a-key-elsewhere')).toBe(1)
    expect(await coverage('url', 'https://h.test/blog/3')).toBe(1)
    // A prefix matches the URL, not the key: /shop/moved is in, the key /shop/a-key-inside (URL /elsewhere) is not.
    expect(await coverage('prefix', 'https://h.test/shop/')).toBe(20 + 4 + 2)

    // Each lookup walks indexes, never the whole table.
    const plans = await queryPlans(sqlite, async () => {
      await entriesMissingOn(db, 'c', T, { key: 'https://h.test/shop/page#lang=de', url: 'https://h.test/shop/page' })
      await sweepPurge(db, { kind: 'url', value: 'https://h.test/shop/page', host: null, createdAt: T + 1000, soft: false })
      await sweepPurge(db, { kind: 'prefix', value: 'https://h.test/blog/', host: null, createdAt: T + 1000, soft: true }, 5)
      await sweepPurge(db, { kind: 'prefix', value: 'https://h.test/shop/', host: null, createdAt: T + 1000, soft: false }, 5)
    })
    expect(plans).toHaveLength(4)
    for (const plan of plans) {
      expect(plan).toContain('entries_url_not_key')
      expect(plan).not.toMatch(/\bSCAN (e|entries)\b/)
    }
    expect(await coverage('url', 'https://h.test/shop/page')).toBe(0)

    // Down: the full url index again.
    await migrateTo(db, '2026120115_holdings_by_entry_id')
    const after = await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'entries'`.execute(db)
    expect(after.rows.map((r) => r.name).sort()).toEqual(['entries_host', 'entries_key', 'entries_stored_at', 'entries_url'])
  })

  it('orders the stored_at index by id (2026120203) on a file with rows, keeping them; the list pages across equal times; and back', async () => {
    const { db } = open()
    await migrateTo(db, '2026120202_entries_search_rowids')
    const T = 1_700_000_000_000
    // Three entries per millisecond, two holders for some, one removed (a gap in the ids).
    const ops = []
    for (let i = 0; i < 30; i++) {
      const e = entry({ url: `https://h.test/${i % 2 ? 'blog' : 'shop'}/${i}`, storedAt: T + Math.floor(i / 3), variant: i % 4 === 0 ? 'gzip' : '' })
      ops.push({ type: 'stored' as const, nodeId: 'a', entry: e })
      if (i % 5 === 0) ops.push({ type: 'stored' as const, nodeId: 'b', entry: e })
    }
    await applyOps(db, ops)
    await sql`delete from entries where key = 'https://h.test/shop/8'`.execute(db)
    await indexQueued(db, 1000)
    const rows = async () => (await sql`select * from entries order by id`.execute(db)).rows
    const holdings = async () => (await sql`select * from entry_nodes order by entry_id, node_id`.execute(db)).rows
    const indexColumns = async () => (await sql<{ name: string }>`select name from pragma_index_info('entries_stored_at') order by seqno`.execute(db)).rows.map((r) => r.name)
    const rowsBefore = await rows()
    const holdingsBefore = await holdings()
    expect(rowsBefore).toHaveLength(29)
    expect(await indexColumns()).toEqual(['stored_at', 'key', 'variant'])

    expect(await migrateToLatest(db)).toEqual(['2026120203_stored_at_index_by_id', '2026120501_url_hits_prune_order'])
    // The index names no key: each of its entries is stored_at and the row's id.
    expect(await indexColumns()).toEqual(['stored_at'])
    expect(await rows()).toEqual(rowsBefore)
    expect(await holdings()).toEqual(holdingsBefore)
    expect(await countEntries(db)).toBe(29)
    expect(await countEntries(db, { nodeId: 'b' })).toBe(6)
    // Every entry once, newest first, by cursor; a cursor of the old order is refused.
    const seen: string[] = []
    let page = await listManifest(db, { limit: 4 })
    for (;;) {
      seen.push(...page.entries.map((e) => `${e.key} ${e.variant}`))
      if (!page.nextCursor) break
      page = await listManifest(db, { limit: 4, cursor: page.nextCursor })
    }
    expect(seen).toHaveLength(29)
    expect(new Set(seen).size).toBe(29)
    const oldCursor = Buffer.from(JSON.stringify([T + 5, 'https://h.test/blog/15', ''])).toString('base64url')
    await expect(listManifest(db, { cursor: oldCursor })).rejects.toThrow(OldCursorError)
    expect((await listManifest(db, { filter: 'blog/1' })).entries.map((e) => e.url).sort()).toEqual(['https://h.test/blog/1', 'https://h.test/blog/11', 'https://h.test/blog/13', 'https://h.test/blog/15', 'https://h.test/blog/17', 'https://h.test/blog/19'])

    // Down: the key columns again, the same rows.
    await migrateTo(db, '2026120202_entries_search_rowids')
    expect(await indexColumns()).toEqual(['stored_at', 'key', 'variant'])
    expect(await rows()).toEqual(rowsBefore)
  })

  it('lets several processes migrate the same file at once', async () => {
    const { db, file } = open()
    const others = [openDatabase({ path: file }), openDatabase({ path: file })]
    cleanups.push(async () => {
      for (const o of others) await o.db.destroy()
    })
    await Promise.all([migrateToLatest(db), ...others.map((o) => migrateToLatest(o.db))])
    expect(await appliedMigrations(db)).toEqual(Object.keys(MIGRATIONS))
  })

  it('names the failing migration and applies nothing of a failed run', async () => {
    const { db } = open()
    const broken = {
      ...MIGRATIONS,
      '2999010101_broken': {
        async up(k: Kysely<unknown>) {
          await sql`create table nodes (id text)`.execute(k)
        },
      },
    }
    const err = await migrateToLatest(db, { migrations: broken }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MigrationFailedError)
    expect((err as MigrationFailedError).migration).toBe('2999010101_broken')
    expect((err as Error).message).toMatch(/2999010101_broken.*already exists/)
    // One transaction: the good migrations before it were rolled back too.
    expect(await appliedMigrations(db)).toEqual([])
    expect((await tableNames(db)).filter((t) => !t.startsWith('kysely_'))).toEqual([])

    await migrateToLatest(db)
    await expect(migrateToLatest(db, { migrations: broken })).rejects.toThrow(/2999010101_broken/)
    expect(await appliedMigrations(db)).toEqual(Object.keys(MIGRATIONS))
  })
})
