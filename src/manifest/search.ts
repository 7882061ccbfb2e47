// The admin list's URL filter at a million entries: a trigram index of URLs
// (entries_search, see the 2026120102 migration) kept up to date by the
// manifest writer in the background, and the queries that use it.
//
// Triggers on `entries` queue every rowid whose URL changed; indexQueued()
// moves a chunk of the queue into the FTS5 index in one short transaction.
// Queries read the index for what it holds and the queue for what it does
// not hold yet, and check every candidate against the row itself, so a
// result is never stale or missing while the writer catches up.

import { setImmediate as nextTurn } from 'node:timers/promises'
import { CompiledQuery, sql } from 'kysely'
import type { Kysely, RawBuilder } from 'kysely'
import type SQLite from 'better-sqlite3'
import { sqliteHandleOf } from './database.ts'
import type { Database } from './database.ts'
import { withoutBusyWait } from './ops.ts'

type Db = Kysely<Database>

/** Queue rows indexed per transaction: a few milliseconds of tokenizing. */
const CHUNK = 100
/** The trigram tokenizer needs three characters; a shorter filter scans. */
export const MIN_INDEXED_FILTER = 3

/**
 * Index up to `maxRows` queued URL changes, CHUNK rows per transaction
 * (each its own turn of the event loop). Resolves to whether rows are left.
 * Reading and writing the queue in one write transaction keeps two writers
 * (every node writes the file when there is no LiteFS) from applying a
 * change twice, which FTS5 would not survive.
 */
export async function indexQueued(db: Db, maxRows = 2000): Promise<boolean> {
  const sqlite = sqliteHandleOf(db)
  let done = 0
  while (done < maxRows) {
    const count = await withoutBusyWait(db, async (trx) => {
      if (sqlite) return indexChunk(preparedIndexer(sqlite))
      // A handle not opened by openDatabase (or a caller's transaction): the same statements through Kysely.
      return indexChunk({
        next: async () => (await trx.executeQuery<QueueRow>(CompiledQuery.raw(NEXT_SQL, [CHUNK]))).rows,
        remove: async (rid, url) => void (await trx.executeQuery(CompiledQuery.raw(REMOVE_SQL, [rid, url]))),
        add: async (rid, url) => void (await trx.executeQuery(CompiledQuery.raw(ADD_SQL, [rid, url]))),
        dequeue: async (rid) => void (await trx.executeQuery(CompiledQuery.raw(DEQUEUE_SQL, [rid]))),
      })
    })
    done += count
    if (count < CHUNK) return false
    await nextTurn()
  }
  return true
}

interface QueueRow {
  rid: number
  old_url: string | null
  url: string | null
}

const NEXT_SQL = 'select q.rid, q.old_url, e.url from entries_search_queue q left join entries e on e.rowid = q.rid order by q.rid limit ?'
const REMOVE_SQL = `insert into entries_search (entries_search, rowid, url) values ('delete', ?, ?)`
const ADD_SQL = 'insert into entries_search (rowid, url) values (?, ?)'
const DEQUEUE_SQL = 'delete from entries_search_queue where rid = ?'

/**
 * The first `?` queued rows at once (indexQueuedNow): what the index holds for them out, their
 * entries' URLs in, then off the queue. Each reads the same rows (only the last changes the
 * queue), and a row's old URL leaves before its new one comes in, as row by row.
 */
const QUEUED_HEAD = '(select rid, old_url from entries_search_queue order by rid limit ?)'
const REMOVE_MANY_SQL = `insert into entries_search (entries_search, rowid, url) select 'delete', rid, old_url from ${QUEUED_HEAD} where old_url is not null`
const ADD_MANY_SQL = `insert into entries_search (rowid, url) select q.rid, e.url from ${QUEUED_HEAD} q join entries e on e.rowid = q.rid`
const DEQUEUE_MANY_SQL = `delete from entries_search_queue where rid in (select rid from ${QUEUED_HEAD})`

/** The indexing statements by name, for a thread that prepares them itself (indexQueuedNow). */
export const SEARCH_INDEX_SQL = { removeMany: REMOVE_MANY_SQL, addMany: ADD_MANY_SQL, dequeueMany: DEQUEUE_MANY_SQL, queued: 'select count(*) as n from (select 1 from entries_search_queue limit ?)' } as const

/** SEARCH_INDEX_SQL prepared on one handle. */
export interface SearchIndexStatements {
  removeMany: { run(limit: number): unknown }
  addMany: { run(limit: number): unknown }
  dequeueMany: { run(limit: number): { changes: number } }
}

/**
 * Index up to about `maxRows` queued URL changes synchronously, inside the caller's write
 * transaction on the statements' handle (the manifest's apply thread, apply-thread.ts, which
 * indexes what each of its transactions queued). It refers to nothing but its arguments: that
 * thread runs it from its source text. Returns the rows handled.
 */
export function indexQueuedNow(st: SearchIndexStatements, maxRows: number): number {
  // Three statements for the lot: one statement per row bound, stepped and journalled each
  // row on its own, about a third of the cost of indexing a new entry.
  st.removeMany.run(maxRows)
  st.addMany.run(maxRows)
  return st.dequeueMany.run(maxRows).changes
}

interface Indexer {
  next(): QueueRow[] | Promise<QueueRow[]>
  remove(rid: number, url: string): void | Promise<void>
  add(rid: number, url: string): void | Promise<void>
  dequeue(rid: number): void | Promise<void>
}

/** One chunk of the queue into the index; resolves to the rows handled. */
async function indexChunk(ix: Indexer): Promise<number> {
  const rows = await ix.next()
  for (const row of rows) {
    if (row.old_url !== null) await ix.remove(row.rid, row.old_url)
    if (row.url !== null) await ix.add(row.rid, row.url)
    await ix.dequeue(row.rid)
  }
  return rows.length
}

const indexers = new WeakMap<SQLite.Database, Indexer>()

function preparedIndexer(sqlite: SQLite.Database): Indexer {
  let ix = indexers.get(sqlite)
  if (ix) return ix
  const next = sqlite.prepare(NEXT_SQL)
  const remove = sqlite.prepare(REMOVE_SQL)
  const add = sqlite.prepare(ADD_SQL)
  const dequeue = sqlite.prepare(DEQUEUE_SQL)
  ix = {
    next: () => next.all(CHUNK) as QueueRow[],
    remove: (rid, url) => void remove.run(rid, url),
    add: (rid, url) => void add.run(rid, url),
    dequeue: (rid) => void dequeue.run(rid),
  }
  indexers.set(sqlite, ix)
  return ix
}

/** Changes not yet indexed (0 once the writer has caught up). */
export async function queuedForIndex(db: Db): Promise<number> {
  const row = (await db.executeQuery<{ n: number }>(CompiledQuery.raw('select count(*) as n from entries_search_queue'))).rows[0]
  return Number(row?.n ?? 0)
}

/** After a clear of every entry: an empty index and queue, without tokenizing a million deletions. */
export async function clearSearchIndex(trx: Db): Promise<void> {
  await trx.executeQuery(CompiledQuery.raw('delete from entries_search_queue'))
  await trx.executeQuery(CompiledQuery.raw(`insert into entries_search (entries_search) values ('delete-all')`))
}

/**
 * Rowids that may match `filter` (three characters or more): what the
 * index finds plus everything still queued. Callers check each candidate
 * against the row (an index entry can be stale until the writer catches up).
 */
export function candidateRowids(filter: string): RawBuilder<number> {
  return sql<number>`(select rowid from entries_search where entries_search match ${trigramQuery(filter)} union select rid from entries_search_queue)`
}

/** Most trigrams one filter asks the index for: FTS5 nests an AND per term, and a few already narrow a URL down. */
const MAX_QUERY_TRIGRAMS = 32

/**
 * The FTS5 query for the rows whose URL holds the trigrams that cover `filter` (three
 * characters or more) end to end: each trigram a string of its own, all of them ANDed. The
 * index keeps no positions (migration 2026120202), so it cannot match the filter as one phrase;
 * rows that hold the trigrams elsewhere in the URL are candidates the callers' check against the
 * row drops. The index reads every row list asked for, so the trigrams do not overlap (but
 * for the last, which ends the filter): a third of them, nearly as narrow. The trigram
 * tokenizer folds case, so the match is case-insensitive, as the filter's LIKE is.
 */
export function trigramQuery(filter: string): string {
  // Trigrams of characters, as the tokenizer cuts them (not of UTF-16 units).
  const chars = Array.from(filter)
  const last = chars.length - 3
  const starts: number[] = []
  for (let at = 0; at < last; at += 3) starts.push(at)
  starts.push(last)
  const trigrams = [...new Set(starts.map((at) => chars.slice(at, at + 3).join('')))]
  // A long filter: trigrams spread over all of it.
  const step = Math.max(1, trigrams.length / MAX_QUERY_TRIGRAMS)
  const picked: string[] = []
  for (let at = 0; at < trigrams.length && picked.length < MAX_QUERY_TRIGRAMS; at += step) picked.push(trigrams[Math.floor(at)]!)
  // An FTS5 string: double quotes inside are doubled.
  return picked.map((t) => `"${t.replace(/"/g, '""')}"`).join(' AND ')
}

/**
 * How many rows the index finds for `filter` (three characters or more),
 * read only up to `cap`. An upper bound of the matches until the writer has
 * indexed a deletion, so callers use it only to tell "more than cap" apart.
 */
export async function indexedMatchesUpTo(db: Kysely<Database>, filter: string, cap: number): Promise<number> {
  const row = await sql<{ n: number }>`select count(*) as n from (select rowid from entries_search where entries_search match ${trigramQuery(filter)} limit ${cap})`.execute(db)
  return Number(row.rows[0]?.n ?? 0)
}
