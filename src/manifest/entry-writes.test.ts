// How a stored op writes its entry row: only what changed, so the indexes and
// the URL search queue are left alone when nothing they hold changed, and the
// migration that dropped the unread index keeps every query's answer.

import path from 'node:path'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { openDatabase, sqliteHandleOf } from './database.ts'
import type { Database } from './database.ts'
import type { Kysely } from 'kysely'
import { migrateTo, migrateToLatest } from './migrate.ts'
import {
  countEntries,
  entriesMissingOn,
  listManifest,
  pruneExpired,
  purgeCoverage,
  recordStored,
  sweepPurge,
  upsertNode,
} from './repositories.ts'
import type { EntryRecord } from './repositories.ts'
import { indexQueued, queuedForIndex } from './search.ts'
import { hotStatements } from './statements.ts'
import { entry, freshManifest, recordStoredOnOldSchema, tempDir } from './test-helpers.ts'

const T = 1_700_000_000_000

describe('recording a stored entry', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function manifest(): Promise<Kysely<Database>> {
    const m = await freshManifest()
    cleanups.push(m.cleanup)
    return m.db
  }

  const row = (db: Kysely<Database>, key: string) => db.selectFrom('entries').selectAll().where('key', '=', key).executeTakeFirstOrThrow()
  const found = async (db: Kysely<Database>, filter: string) => (await listManifest(db, { filter, limit: 1000 })).entries.map((e) => e.url)

  // Both ways of recording: the writer's prepared statements and the Kysely path.
  const recorders: [string, (db: Kysely<Database>, nodeId: string, e: EntryRecord) => Promise<unknown>][] = [
    ['prepared statements', async (db, nodeId, e) => hotStatements(sqliteHandleOf(db)!).recordStored(nodeId, e)],
    ['repositories', (db, nodeId, e) => recordStored(db, nodeId, e)],
  ]

  for (const [name, record] of recorders) {
    it(`${name}: a newer store of a key under a new URL is found by its new URL only`, async () => {
      const db = await manifest()
      const first = entry({ url: 'https://ex.com/old-name', key: 'k1', storedAt: T })
      await record(db, 'n1', first)
      await indexQueued(db, 100)
      expect(await found(db, 'old-name')).toEqual(['https://ex.com/old-name'])

      await record(db, 'n2', { ...first, url: 'https://ex.com/new-name', storedAt: T + 1, staleAt: T + 5000 })
      expect(await queuedForIndex(db)).toBe(1)
      await indexQueued(db, 100)
      expect(await found(db, 'new-name')).toEqual(['https://ex.com/new-name'])
      expect(await found(db, 'old-name')).toEqual([])
      expect(await row(db, 'k1')).toMatchObject({ url: 'https://ex.com/new-name', stored_at: T + 1, stale_at: T + 5000 })
    })

    it(`${name}: a newer store under the same URL updates the row and leaves the URL index alone`, async () => {
      const db = await manifest()
      const first = entry({ url: 'https://ex.com/same', key: 'k1', storedAt: T })
      await record(db, 'n1', first)
      await indexQueued(db, 100)
      expect(await queuedForIndex(db)).toBe(0)

      await record(db, 'n2', { ...first, storedAt: T + 10, staleAt: T + 9000, deleteAt: T + 19_000, size: 7 })
      expect(await queuedForIndex(db)).toBe(0)
      expect(await row(db, 'k1')).toMatchObject({ url: 'https://ex.com/same', stored_at: T + 10, stale_at: T + 9000, delete_at: T + 19_000, size: 7 })
      expect(await found(db, 'same')).toEqual(['https://ex.com/same'])
    })

    it(`${name}: an older store changes nothing; the same store again adds only its holder; a new lifetime at the same time applies`, async () => {
      const db = await manifest()
      const first = entry({ url: 'https://ex.com/a', key: 'k1', storedAt: T, staleAt: T + 100 })
      await record(db, 'n1', first)
      await record(db, 'n2', { ...first, storedAt: T - 5, url: 'https://ex.com/older', size: 1 })
      expect(await row(db, 'k1')).toMatchObject({ url: 'https://ex.com/a', stored_at: T, size: first.size })

      // A populated copy: the very same record from another node.
      await record(db, 'n3', first)
      expect(await row(db, 'k1')).toMatchObject({ stored_at: T, stale_at: T + 100 })
      const holders = await db.selectFrom('entry_nodes').innerJoin('entries', 'entries.id', 'entry_nodes.entry_id').select('node_id').where('key', '=', 'k1').orderBy('node_id').execute()
      expect(holders.map((h) => h.node_id)).toEqual(['n1', 'n2', 'n3'])

      // Revalidated after a soft purge: the original stored_at, a new lifetime.
      await record(db, 'n1', { ...first, staleAt: T + 777 })
      expect(await row(db, 'k1')).toMatchObject({ stored_at: T, stale_at: T + 777 })
    })
  }
})

describe('migrations 2026120113_entries_write_indexes to 2026120201_url_index_not_key', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('applies on a file with entries and keeps every query’s results, up and down', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const { db } = openDatabase({ path: path.join(dir, 'manifest.db') })
    cleanups.push(() => db.destroy())
    await migrateTo(db, '2026120112_node_minute_paths')
    for (const id of ['n1', 'n2', 'n3']) await upsertNode(db, { id, region: 'r', internalUrl: `http://${id}`, startedAt: T }, T)
    for (let i = 0; i < 60; i++) {
      const host = i % 5 === 0 ? 'rare.example' : 'ex.com'
      await recordStoredOnOldSchema(
        db,
        `n${(i % 3) + 1}`,
        entry({ url: `https://${host}/${i % 2 ? 'blog' : 'shop'}/${i}`, storedAt: T + i, staleAt: T + 100 * (i % 7), deleteAt: T + 1000 * (i % 4), tags: i % 3 ? [] : ['t'] }),
      )
    }
    await indexQueued(db, 1000)

    const answers = async () => ({
      list: await listManifest(db, { limit: 7, offset: 3 }),
      host: await listManifest(db, { host: 'rare.example' }),
      filter: await listManifest(db, { filter: 'blog/1' }),
      node: await listManifest(db, { nodeId: 'n2', limit: 5 }),
      missing: await entriesMissingOn(db, 'n1', T + 250),
      coverage: await purgeCoverage(db, { kind: 'prefix', value: 'https://ex.com/shop/', host: null }),
      count: await countEntries(db),
      // Writes, each undone so the next call sees the same rows.
      ...(await undone(db, async () => ({
        purgedHost: await sweepPurge(db, { kind: 'all', value: '', host: 'rare.example', createdAt: T + 1000, soft: false }),
        softTag: await sweepPurge(db, { kind: 'tag', value: 't', host: null, createdAt: T + 1000, soft: true }),
        pruned: await pruneExpired(db, T + 1500),
        after: await countEntries(db),
      }))),
    })
    // The queries read entries_count (2026120114): they run on the latest schema, made from the old one with its rows.
    expect(await migrateToLatest(db)).toEqual(['2026120113_entries_write_indexes', '2026120114_counts', '2026120115_holdings_by_entry_id', '2026120201_url_index_not_key', '2026120202_entries_search_rowids', '2026120203_stored_at_index_by_id', '2026120501_url_hits_prune_order'])
    expect(await indexNames(db)).toEqual(['entries_host', 'entries_key', 'entries_stored_at', 'entries_url_not_key'])
    const before = await answers()
    expect(before.pruned).toBeGreaterThan(0)
    expect(before.host.entries.length).toBe(12)
    expect(before.count).toBe(60)
    expect(before.list.total).toBe(60)

    // Down past all four and up again: the same rows, the same answers.
    await migrateTo(db, '2026120112_node_minute_paths')
    expect(await indexNames(db)).toEqual(['entries_delete_at', 'entries_host', 'entries_stale_at', 'entries_stored_at', 'entries_url', 'sqlite_autoindex_entries_1'])
    await migrateToLatest(db)
    expect(await answers()).toEqual(before)
  })
})

async function indexNames(db: Kysely<Database>): Promise<string[]> {
  const r = await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'entries' order by name`.execute(db)
  return r.rows.map((x) => x.name)
}

/** Run writes and roll them back. */
async function undone<T>(db: Kysely<Database>, run: () => Promise<T>): Promise<T> {
  const sqlite = sqliteHandleOf(db)!
  sqlite.exec('savepoint undone')
  try {
    return await run()
  } finally {
    sqlite.exec('rollback to undone; release undone')
  }
}
