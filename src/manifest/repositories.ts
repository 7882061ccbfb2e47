// Every read and write of the manifest's cluster tables (nodes, entries,
// entry_nodes, purges). Free functions taking the database first, so the same
// function runs on the Kysely instance or inside a transaction.
//
// Writes are idempotent: a replica's batch may be delivered twice (the primary
// committed, the answer was lost, the replica retried), so every write is an
// upsert on a unique key or a delete, never read-then-insert.
//
// Callers outside this folder should not write through these directly: writes
// go through the ManifestWriter (writer.ts), which sends them to the primary
// when this node is a LiteFS replica.

import { CompiledQuery, sql } from 'kysely'
import type { Expression, ExpressionBuilder, Kysely, RawBuilder, SelectQueryBuilder, SqlBool } from 'kysely'
import type { PurgeKind } from '../vocabulary.ts'
import type { Database, EntryRow, NodeRow, PurgeRow } from './database.ts'
import {
  CLEAR_NODE_SQL,
  COVERED_BY_PURGE_SQL,
  DELETE_HOLDING_SQL,
  FIX_ENTRY_URL_SQL,
  MARK_PURGE_APPLIED_SQL,
  RECORD_PURGE_NODE_SQL,
  UPSERT_ENTRY_SQL,
  UPSERT_HOLDING_BY_KEY_SQL,
  UPSERT_HOLDING_SQL,
  UPSERT_NODE_SQL,
  coveredParams,
  entryParams,
  holdingByKeyParams,
  holdingParams,
  nodeParams,
  urlNeedsFix,
} from './statements.ts'
import type { UpsertedEntry } from './statements.ts'
import { MIN_INDEXED_FILTER, candidateRowids, clearSearchIndex, indexedMatchesUpTo } from './search.ts'

type Db = Kysely<Database>

/**
 * What the manifest keeps of a stored variant. The cache's EntryMeta is a
 * superset, so a StoreEvent's meta can be passed as is; headers and the cache
 * policy stay on the node that holds the body.
 */
export interface EntryRecord {
  key: string
  variant: string
  host: string
  url: string
  status: number
  size: number
  contentType: string
  storedAt: number
  staleAt: number
  deleteAt: number
  tags: string[]
  varyHeaders: Record<string, string>
}

export interface ListedEntry extends EntryRecord {
  /** Nodes whose disk holds this variant, sorted. */
  nodeIds: string[]
}

export interface Holder {
  nodeId: string
  internalUrl: string
  lastSeenAt: number
}

export interface MissingEntry extends EntryRecord {
  /** Peers holding the variant, most recently seen first; empty means "fetch from the origin". */
  holders: Holder[]
}

/** A node's identity as announced by its heartbeat. */
export interface NodeInfo {
  id: string
  region: string
  internalUrl: string
  startedAt: number
}

export interface ClusterNode extends NodeInfo {
  lastSeenAt: number
  lastPurgeId: number
}

export interface NewPurge {
  /** Unique per purge request (e.g. crypto.randomUUID()), so redelivery records it once. */
  requestId: string
  kind: PurgeKind
  /** URL, prefix or tag; '' for 'all'. */
  value: string
  /** Only entries of this host; null for every host. */
  host: string | null
  createdAt: number
  createdBy: string
  nodeId: string
  /** Mark covered entries stale (revalidate on next use) instead of removing them. Absent: hard (ops from older nodes). */
  soft?: boolean
}

export interface Purge extends NewPurge {
  id: number
}

/**
 * Pick the manifest's fields out of anything entry-shaped (an EntryMeta carries headers and policy too).
 * Tags and vary values are shared, not copied: a stored entry's metadata is frozen (freezeMeta), an
 * op's record is only read, and every 'stored' op of a miss storm would otherwise copy both.
 */
export function toEntryRecord(meta: EntryRecord): EntryRecord {
  return {
    key: meta.key,
    variant: meta.variant,
    host: meta.host,
    url: meta.url,
    status: meta.status,
    size: meta.size,
    contentType: meta.contentType,
    storedAt: meta.storedAt,
    staleAt: meta.staleAt,
    deleteAt: meta.deleteAt,
    tags: meta.tags,
    varyHeaders: meta.varyHeaders,
  }
}

/** Run fn in a transaction, or in the caller's when db already is one (Kysely cannot nest them). */
export async function inTransaction<T>(db: Db, fn: (trx: Db) => Promise<T>): Promise<T> {
  if (db.isTransaction) return fn(db)
  return db.transaction().execute(fn)
}

// ── nodes ───────────────────────────────────────────────────────────────

export async function upsertNode(db: Db, node: NodeInfo, seenAt: number): Promise<void> {
  await db.executeQuery(CompiledQuery.raw(UPSERT_NODE_SQL, nodeParams(node, seenAt)))
}

export async function listNodes(db: Db): Promise<ClusterNode[]> {
  const rows = await db.selectFrom('nodes').selectAll().orderBy('id').execute()
  return rows.map(nodeFromRow)
}

export async function getNode(db: Db, id: string): Promise<ClusterNode | undefined> {
  const row = await db.selectFrom('nodes').selectAll().where('id', '=', id).executeTakeFirst()
  return row ? nodeFromRow(row) : undefined
}

function nodeFromRow(row: NodeRow): ClusterNode {
  return {
    id: row.id,
    region: row.region,
    internalUrl: row.internal_url,
    startedAt: row.started_at,
    lastSeenAt: row.last_seen_at,
    lastPurgeId: row.last_purge_id,
  }
}

// ── entries and holdings ───────────────────────────────────────────────

/**
 * nodeId now holds this variant. The entry's metadata follows the most recent
 * store of it on any node. Nothing is recorded when a purge already in the
 * log covers it (stored before the purge, delivered after it): the node that
 * stored it drops it when it applies that purge, without an op per entry.
 * Resolves to whether it was recorded.
 */
export async function recordStored(db: Db, nodeId: string, meta: EntryRecord): Promise<boolean> {
  return inTransaction(db, async (trx) => {
    const covered = await trx.executeQuery(CompiledQuery.raw(COVERED_BY_PURGE_SQL, coveredParams(meta)))
    if (covered.rows.length > 0) return false
    // The same statements as statements.ts runs prepared: see there.
    const row = (await trx.executeQuery<UpsertedEntry>(CompiledQuery.raw(UPSERT_ENTRY_SQL, entryParams(meta)))).rows[0]
    if (row === undefined) {
      await trx.executeQuery(CompiledQuery.raw(UPSERT_HOLDING_BY_KEY_SQL, holdingByKeyParams(nodeId, meta)))
      return true
    }
    if (urlNeedsFix(row, meta)) await trx.executeQuery(CompiledQuery.raw(FIX_ENTRY_URL_SQL, [meta.host, meta.url, row.id]))
    await trx.executeQuery(CompiledQuery.raw(UPSERT_HOLDING_SQL, holdingParams(nodeId, row.id, meta)))
    return true
  })
}

/**
 * nodeId no longer holds this variant (evicted, expired, corrupt). The entry
 * itself stays until it expires or is purged: other nodes may hold it, and
 * populate can still fetch it from the origin.
 */
export async function recordDeleted(db: Db, nodeId: string, key: string, variant: string): Promise<boolean> {
  const res = await db.executeQuery(CompiledQuery.raw(DELETE_HOLDING_SQL, [key, variant, nodeId]))
  return Number(res.numAffectedRows ?? 0) > 0
}

/** nodeId no longer holds any of these variants (it reconciled its disk with the manifest). */
export async function forgetHoldings(db: Db, nodeId: string, entries: readonly { key: string; variant: string }[]): Promise<void> {
  await inTransaction(db, async (trx) => {
    for (const e of entries) await trx.executeQuery(CompiledQuery.raw(DELETE_HOLDING_SQL, [e.key, e.variant, nodeId]))
  })
}

/** Every variant the manifest records nodeId as holding. */
export async function heldBy(db: Db, nodeId: string): Promise<Array<{ key: string; variant: string }>> {
  return db.selectFrom('entry_nodes as h').innerJoin('entries as e', 'e.id', 'h.entry_id').select(['e.key', 'e.variant']).where('h.node_id', '=', nodeId).execute()
}

/** nodeId emptied its whole body cache (its "clear FS"). Resolves to how many holdings were dropped. */
export async function recordNodeCleared(db: Db, nodeId: string): Promise<number> {
  const res = await db.executeQuery(CompiledQuery.raw(CLEAR_NODE_SQL, [nodeId]))
  return Number(res.numAffectedRows ?? 0)
}

/**
 * Drop a node that is gone (an admin's "forget node"): its holdings, its row, its purge
 * times and its traffic minutes, in one transaction. Resolves to the holdings dropped.
 */
export async function forgetNode(db: Db, nodeId: string): Promise<number> {
  return inTransaction(db, async (trx) => {
    const dropped = await recordNodeCleared(trx, nodeId)
    await trx.deleteFrom('nodes').where('id', '=', nodeId).execute()
    await trx.deleteFrom('purge_nodes').where('node_id', '=', nodeId).execute()
    await trx.deleteFrom('node_minutes').where('node_id', '=', nodeId).execute()
    await trx.deleteFrom('node_minute_paths').where('node_id', '=', nodeId).execute()
    return dropped
  })
}

export interface ListManifestOptions {
  /** Case-insensitive substring of the URL; empty matches everything. */
  filter?: string
  host?: string
  /** Only entries this node holds. */
  nodeId?: string
  /** Rows to skip, up to MAX_LIST_OFFSET: deeper pages are found by cursor. */
  offset?: number
  limit?: number
  /**
   * Keyset paging: a previous page's nextCursor, prevCursor or lastCursor;
   * offset is ignored. A deep page costs as little as the first.
   */
  cursor?: string
}

export interface ManifestPage {
  /** Matching entries; with a filter, counted up to FILTER_COUNT_CAP (see totalIsLowerBound). */
  total: number
  /** True when a filter matches more than FILTER_COUNT_CAP entries: there are at least `total`. */
  totalIsLowerBound: boolean
  entries: ListedEntry[]
  /** Pass as `cursor` for the next page; undefined on the last page. */
  nextCursor: string | undefined
  /** Pass as `cursor` for the page before this one; undefined on the first page. */
  prevCursor: string | undefined
  /** Pass as `cursor` for the last page (the oldest entries); undefined when `total` is a lower bound. */
  lastCursor: string | undefined
  /** How many entries come before this page, when known (the first and last pages, an offset); a page found by cursor elsewhere leaves it to the caller. */
  offset: number | undefined
}

/**
 * The deepest offset a list reads: skipping rows costs a walk over them
 * (about 90 ms at a million entries, on the event loop of whoever asks).
 * Deeper pages are found by cursor, which costs what the first page does.
 */
export const MAX_LIST_OFFSET = 10_000

/** An offset past MAX_LIST_OFFSET is a client error, said with what to do instead. */
export class DeepOffsetError extends Error {
  constructor() {
    super(`the manifest list skips at most ${MAX_LIST_OFFSET.toLocaleString('en')} entries: page deeper by cursor (nextCursor, prevCursor or lastCursor of a page), or narrow the list with a filter`)
    this.name = 'DeepOffsetError'
  }
}

/**
 * A filtered list counts its matches up to this many. Counting all of a
 * common substring's matches among a million entries takes longer than the
 * page itself; "10,000+" says as much.
 */
export const FILTER_COUNT_CAP = 10_000

/**
 * One page of entries, newest first, each with the nodes holding it.
 *
 * A filter of three characters or more finds its candidates through the
 * trigram index (search.ts). When they are few (up to FILTER_COUNT_CAP) the
 * page is sorted from them; when they are many, matches are dense, and
 * walking the stored_at index until the page is full is faster than sorting
 * them. Every path costs a few milliseconds at a million entries.
 *
 * Pages are found by keyset: the page after a cursor walks on from it, the
 * page before one walks back from it (oldest first, then turned round), and
 * the last page walks back from the end. An offset is read only up to
 * MAX_LIST_OFFSET.
 */
export async function listManifest(db: Db, options: ListManifestOptions = {}): Promise<ManifestPage> {
  const limit = clampInt(options.limit ?? 50, 1, 1000)
  const cursor = options.cursor ? decodeCursor(options.cursor) : undefined
  const offset = cursor ? 0 : clampInt(options.offset ?? 0, 0, Number.MAX_SAFE_INTEGER)
  if (offset > MAX_LIST_OFFSET) throw new DeepOffsetError()
  let base = db.selectFrom('entries as e')
  if (options.host) base = base.where('e.host', '=', options.host)
  const nodeId = options.nodeId
  if (nodeId) {
    base = base.where((eb) =>
      eb.exists(
        eb
          .selectFrom('entry_nodes as h')
          .select(sql`1`.as('one'))
          .whereRef('h.entry_id', '=', 'e.id')
          .where('h.node_id', '=', nodeId),
      ),
    )
  }
  let total: number
  let totalIsLowerBound = false
  const filter = options.filter?.trim()
  if (filter) {
    const pattern = `%${escapeLike(filter)}%`
    // SQLite's LIKE is case-insensitive for ASCII, which is what a URL search wants.
    const matching = base.where(sql<SqlBool>`e.url like ${pattern} escape '\\'`)
    const useIndex = filter.length >= MIN_INDEXED_FILTER
    const indexed = useIndex ? matching.where(sql<SqlBool>`e.rowid in ${candidateRowids(filter)}`) : matching
    // A common substring ("/blog/" at a million entries) has hundreds of thousands of
    // candidates, and `rowid in (...)` collects them all before counting. The index alone,
    // read up to the cap, says so in a few ms; only fewer candidates are counted exactly.
    const common = useIndex && !options.host && !nodeId && (await indexedMatchesUpTo(db, filter, FILTER_COUNT_CAP + 1)) > FILTER_COUNT_CAP
    const counted = common ? FILTER_COUNT_CAP + 1 : await countUpTo(db, indexed, FILTER_COUNT_CAP + 1)
    totalIsLowerBound = counted > FILTER_COUNT_CAP
    total = Math.min(counted, FILTER_COUNT_CAP)
    base = totalIsLowerBound ? matching : indexed
  } else if (options.host || nodeId) {
    total = Number((await base.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow()).total)
  } else {
    total = await entryCount(db)
  }
  // Walking back (the page before a cursor, the last page) reads the list oldest first.
  const back = cursor !== undefined && cursor.kind !== 'after'
  // The last page holds what is left after whole pages, so the pages before it line up with
  // the ones counted from the first.
  const size = cursor?.kind === 'last' && !totalIsLowerBound && total > 0 ? total - Math.floor((total - 1) / limit) * limit : limit
  if (cursor?.kind === 'after') {
    base = base.where((eb) => eb(eb.refTuple('e.stored_at', 'e.id'), '<', eb.tuple(cursor.storedAt, cursor.id)))
  } else if (cursor?.kind === 'before') {
    base = base.where((eb) => eb(eb.refTuple('e.stored_at', 'e.id'), '>', eb.tuple(cursor.storedAt, cursor.id)))
  }
  const order = back ? 'asc' : 'desc'

  // Find the page's rowids first: without a filter that walks the stored_at
  // index only (its entries end with the id: 2026120203), so an OFFSET skips
  // index entries rather than whole rows. Then fetch just those rows. One row
  // more than the page says whether there is another page beyond it.
  const pageIds = base
    .select(sql<number>`e.rowid`.as('rid'))
    .orderBy('e.stored_at', order)
    .orderBy('e.id', order)
    .limit(size + 1)
    .offset(offset)
  const rows = await db
    .selectFrom('entries as e')
    .selectAll('e')
    .select((eb) =>
      eb
        .selectFrom('entry_nodes as en')
        .select(sql<string>`json_group_array(en.node_id)`.as('ids'))
        .whereRef('en.entry_id', '=', 'e.id')
        .as('node_ids'),
    )
    .where(sql<number>`e.rowid`, 'in', pageIds)
    .orderBy('e.stored_at', 'desc')
    .orderBy('e.id', 'desc')
    .execute()

  // The extra row is the newest when walking back, the oldest otherwise.
  const more = rows.length > size
  const pageRows = !more ? rows : back ? rows.slice(1) : rows.slice(0, size)
  // Walking back from a cursor reached the newest entries before filling a page: show the first page whole instead.
  if (cursor?.kind === 'before' && !more && pageRows.length < limit) return listManifest(db, { ...options, cursor: undefined, offset: 0 })
  const entries = pageRows.map((row) => ({ ...entryFromRow(row), nodeIds: parseJson<string[]>(row.node_ids, []).sort() }))
  const first = pageRows[0]
  const last = pageRows[pageRows.length - 1]
  const atStart = back ? !more : cursor === undefined && offset === 0
  const atEnd = back ? cursor.kind === 'last' : !more
  return {
    total,
    totalIsLowerBound,
    entries,
    nextCursor: last && !atEnd ? encodeCursor({ kind: 'after', storedAt: last.stored_at, id: last.id }) : undefined,
    prevCursor: first && !atStart ? encodeCursor({ kind: 'before', storedAt: first.stored_at, id: first.id }) : undefined,
    lastCursor: totalIsLowerBound ? undefined : encodeCursor({ kind: 'last' }),
    offset: atStart ? 0 : cursor?.kind === 'last' && !totalIsLowerBound ? Math.max(0, total - entries.length) : cursor === undefined ? offset : undefined,
  }
}

type ListCursor = { kind: 'after' | 'before'; storedAt: number; id: number } | { kind: 'last' }

/**
 * A cursor is the position of a page's edge row in the list's order (stored_at, then id),
 * base64url JSON: `["after", storedAt, id]` for the page after it, `["before", storedAt, id]`
 * for the page before it, `["last"]` for the last page.
 */
function encodeCursor(c: ListCursor): string {
  const v = c.kind === 'last' ? ['last'] : [c.kind, c.storedAt, c.id]
  return Buffer.from(JSON.stringify(v), 'utf8').toString('base64url')
}

/** A cursor this code did not make is a client error, said as such. */
export class InvalidCursorError extends Error {
  constructor(message = 'the list cursor is not valid: use the nextCursor, prevCursor or lastCursor of a previous page, or leave it out for the first page') {
    super(message)
    this.name = 'InvalidCursorError'
  }
}

/**
 * A cursor made before the list ordered equal times by id (2026120203): it names its row by
 * key (`[storedAt, key, variant]` or `["before", storedAt, key, variant]`), a position the
 * list's order no longer has. Refused with what to do; a client that pages from the first
 * page again gets cursors of the current kind.
 */
export class OldCursorError extends InvalidCursorError {
  constructor() {
    super('the list cursor was made by an earlier version of caje, which ordered the list otherwise: ask for the first page again (leave the cursor out) and page on from there')
    this.name = 'OldCursorError'
  }
}

function decodeCursor(text: string): ListCursor {
  let v: unknown
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidCursorError()
  }
  if (!Array.isArray(v)) throw new InvalidCursorError()
  if (v.length === 1 && v[0] === 'last') return { kind: 'last' }
  const [kind, storedAt, id] = v as unknown[]
  if (v.length === 3 && (kind === 'after' || kind === 'before') && Number.isSafeInteger(storedAt) && Number.isSafeInteger(id)) {
    return { kind, storedAt: storedAt as number, id: id as number }
  }
  if (isKeyCursor(v)) throw new OldCursorError()
  throw new InvalidCursorError()
}

/** The cursors of the (stored_at, key, variant) order, before 2026120203. */
function isKeyCursor(v: unknown[]): boolean {
  const at = v.length === 4 && v[0] === 'before' ? 1 : 0
  const [storedAt, key, variant] = v.slice(at)
  return v.length === at + 3 && Number.isSafeInteger(storedAt) && typeof key === 'string' && typeof variant === 'string'
}

/** count(*) of a query's rows, stopping at `cap`. */
async function countUpTo(db: Db, query: SelectQueryBuilder<Database & { e: Database['entries'] }, 'e', object>, cap: number): Promise<number> {
  const limited = query.select(sql<number>`1`.as('one')).limit(cap)
  const row = await db
    .selectFrom(limited.as('c'))
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

export interface MissingOptions {
  /** Page size; populate calls again with `after` set to the last entry it got. */
  limit?: number
  after?: { key: string; variant: string }
  /** Only the variants of this key (populate one entry from the admin list). */
  key?: string
  /**
   * With `key`: also every other key whose URL form is this (a rule that adds a request
   * header or cookie value to the key makes one key per value, all under one URL).
   */
  url?: string
}

/**
 * Entries still fresh at `now` that nodeId does not hold, in key order, each
 * with the peers that hold it (and how to reach them), for populate.
 */
export async function entriesMissingOn(db: Db, nodeId: string, now: number, options: MissingOptions = {}): Promise<MissingEntry[]> {
  const limit = clampInt(options.limit ?? 1000, 1, 10_000)
  let q = db
    .selectFrom('entries as e')
    .selectAll('e')
    .select((eb) =>
      eb
        .selectFrom('entry_nodes as en')
        .innerJoin('nodes as n', 'n.id', 'en.node_id')
        .select(HOLDERS_JSON.as('h'))
        .whereRef('en.entry_id', '=', 'e.id')
        .where('en.node_id', '!=', nodeId)
        .as('holders'),
    )
    .where('e.stale_at', '>', now)
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('entry_nodes as mine')
            .select(sql`1`.as('one'))
            .whereRef('mine.entry_id', '=', 'e.id')
            .where('mine.node_id', '=', nodeId),
        ),
      ),
    )
  const { key, url } = options
  if (key !== undefined) q = url === undefined ? q.where('e.key', '=', key) : q.where((eb) => eb.or([eb('e.key', '=', key), urlIs('e', url)]))
  const after = options.after
  if (after) q = q.where((eb) => eb(eb.refTuple('e.key', 'e.variant'), '>', eb.tuple(after.key, after.variant)))
  const rows = await q.orderBy('e.key').orderBy('e.variant').limit(limit).execute()
  return rows.map(missingEntryFromRow)
}

/** The holders of one entry (other nodes, and how to reach them), as a JSON array in a subquery. */
export const HOLDERS_JSON = sql<string>`json_group_array(json_object('nodeId', n.id, 'internalUrl', n.internal_url, 'lastSeenAt', n.last_seen_at))`

/** An entry row with its holders (HOLDERS_JSON), most recently seen holder first. */
export function missingEntryFromRow(row: EntryRow & { holders: string | null }): MissingEntry {
  return { ...entryFromRow(row), holders: parseJson<Holder[]>(row.holders, []).sort((a, b) => b.lastSeenAt - a.lastSeenAt) }
}

export async function countEntries(db: Db, options: { nodeId?: string } = {}): Promise<number> {
  if (options.nodeId) {
    // Kept by triggers on entry_nodes (2026120114): one row, not a walk of the node's holdings.
    const row = await db.selectFrom('node_holdings').select('n').where('node_id', '=', options.nodeId).executeTakeFirst()
    return Number(row?.n ?? 0)
  }
  return entryCount(db)
}

/** Every entry, counted by the triggers that keep entries_count (a one-row read, not a walk of an index). */
async function entryCount(db: Db): Promise<number> {
  const row = await db.selectFrom('entries_count').select('n').where('id', '=', 0).executeTakeFirst()
  return Number(row?.n ?? 0)
}

/** Empty the shared manifest ("Clear DB"): entries and holdings; nodes and the purge log stay. Resolves to the entries removed. */
export async function clearManifest(db: Db): Promise<number> {
  return inTransaction(db, async (trx) => {
    await trx.deleteFrom('entry_nodes').execute()
    const res = await trx.deleteFrom('entries').executeTakeFirst()
    await clearSearchIndex(trx)
    return Number(res.numDeletedRows)
  })
}

/**
 * Drop entries no node may serve any more, even stale (their holdings
 * cascade). No index on delete_at (every stored op would write one more
 * B-tree for it): this scans the table, so it is for an operator's one-off
 * 'prune' op, not for a schedule.
 */
export async function pruneExpired(db: Db, now: number): Promise<number> {
  const res = await db.deleteFrom('entries').where('delete_at', '<=', now).executeTakeFirst()
  return Number(res.numDeletedRows)
}

// ── purges ─────────────────────────────────────────────────────────────

/**
 * Record a purge and drop the matching entries from the manifest. A repeated
 * request id changes nothing: in particular it does not delete entries stored
 * since the first delivery.
 */
export async function insertPurge(db: Db, purge: NewPurge): Promise<{ id: number; inserted: boolean; removed: number }> {
  return inTransaction(db, async (trx) => {
    const recorded = await recordPurge(trx, purge)
    return { ...recorded, removed: recorded.inserted ? await sweepPurge(trx, purge) : 0 }
  })
}

/** Record a purge in the log, once per request id; its entries are removed by sweepPurge. */
export async function recordPurge(db: Db, purge: NewPurge): Promise<{ id: number; inserted: boolean }> {
  const inserted = await db
    .insertInto('purges')
    .values({
      request_id: purge.requestId,
      kind: purge.kind,
      value: purge.kind === 'all' ? '' : purge.value,
      host: purge.host,
      created_at: purge.createdAt,
      created_by: purge.createdBy,
      node_id: purge.nodeId,
      soft: purge.soft ? 1 : 0,
    })
    .onConflict((oc) => oc.column('request_id').doNothing())
    .returning('id')
    .executeTakeFirst()
  if (inserted) return { id: inserted.id, inserted: true }
  const existing = await db.selectFrom('purges').select('id').where('request_id', '=', purge.requestId).executeTakeFirstOrThrow()
  return { id: existing.id, inserted: false }
}

/**
 * Remove (up to `limit` of) the entries a purge covers; resolves to how many.
 * Only what was stored before the purge: an entry stored later (by the
 * clocks involved) is newer content, whatever order the ops arrive in. So a
 * sweep may run again at any time (a redelivered purge whose first sweep was
 * cut short) without touching anything stored since.
 *
 * A soft purge removes nothing: it ends the freshness of what it covers at
 * the purge's time (stale_at), so populate no longer copies those entries as
 * fresh and the admin shows them stale. A node that revalidates one records
 * it again with its new lifetime. Only entries still fresh at the purge are
 * touched, so a repeated sweep finds nothing left to do.
 */
export async function sweepPurge(db: Db, purge: Pick<NewPurge, 'kind' | 'value' | 'host' | 'createdAt' | 'soft'>, limit?: number): Promise<number> {
  const res = await db.executeQuery(sweepPurgeQuery(db, purge, limit))
  return Number(res.numAffectedRows ?? 0n)
}

/**
 * The statement sweepPurge runs, compiled: a connection of its own (the manifest apply thread,
 * apply-thread.ts) can run it as it is, its result's `changes` the rows removed or marked.
 */
export function sweepPurgeQuery(db: Db, purge: Pick<NewPurge, 'kind' | 'value' | 'host' | 'createdAt' | 'soft'>, limit?: number): CompiledQuery {
  if (purge.soft) {
    const some = db
      .selectFrom('entries')
      .select(sql<number>`entries.rowid`.as('rid'))
      .where((eb) => purgeCondition(eb, purge))
      .where('entries.stored_at', '<=', purge.createdAt)
      .where('entries.stale_at', '>', purge.createdAt)
    return db
      .updateTable('entries')
      .set({ stale_at: purge.createdAt })
      .where(sql<number>`entries.rowid`, 'in', limit === undefined ? some : some.limit(Math.max(1, Math.floor(limit))))
      .compile()
  }
  let q = db.deleteFrom('entries')
  if (limit === undefined) {
    q = q.where((eb) => purgeCondition(eb, purge)).where('entries.stored_at', '<=', purge.createdAt)
  } else {
    const some = db
      .selectFrom('entries')
      .select(sql<number>`entries.rowid`.as('rid'))
      .where((eb) => purgeCondition(eb, purge))
      .where('entries.stored_at', '<=', purge.createdAt)
      .limit(Math.max(1, Math.floor(limit)))
    q = q.where(sql<number>`entries.rowid`, 'in', some)
  }
  return q.compile()
}

/** Purges with id > afterId, oldest first: what a node that applied up to afterId still has to apply. */
export async function purgesAfter(db: Db, afterId: number, limit = 500): Promise<Purge[]> {
  const rows = await db
    .selectFrom('purges')
    .selectAll()
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(clampInt(limit, 1, 10_000))
    .execute()
  return rows.map(purgeFromRow)
}

export async function latestPurgeId(db: Db): Promise<number> {
  const row = await db.selectFrom('purges').select((eb) => eb.fn.max('id').as('id')).executeTakeFirst()
  return Number(row?.id ?? 0)
}

/**
 * nodeId has applied every purge up to purgeId, and (`applied`) these ones at these times.
 * Never moves backwards, and the first time recorded for a purge stays (batches may be
 * redelivered).
 */
export async function markPurgeApplied(db: Db, nodeId: string, purgeId: number, applied: readonly PurgeAppliedAt[] = []): Promise<void> {
  await db.executeQuery(CompiledQuery.raw(MARK_PURGE_APPLIED_SQL, [purgeId, nodeId]))
  for (const a of applied) await db.executeQuery(CompiledQuery.raw(RECORD_PURGE_NODE_SQL, [a.id, nodeId, a.at]))
}

/** When a node applied one purge: the purge's id and epoch ms. */
export interface PurgeAppliedAt {
  id: number
  at: number
}

/** When each node applied each of these purges (those that reported a time). */
export async function purgeApplyTimes(db: Db, purgeIds: readonly number[]): Promise<Map<number, Map<string, number>>> {
  const out = new Map<number, Map<string, number>>()
  if (purgeIds.length === 0) return out
  const rows = await db.selectFrom('purge_nodes').selectAll().where('purge_id', 'in', [...purgeIds]).execute()
  for (const r of rows) {
    let perNode = out.get(r.purge_id)
    if (!perNode) out.set(r.purge_id, (perNode = new Map()))
    perNode.set(r.node_id, r.applied_at)
  }
  return out
}

export async function lastAppliedPurge(db: Db, nodeId: string): Promise<number> {
  const row = await db.selectFrom('nodes').select('last_purge_id').where('id', '=', nodeId).executeTakeFirst()
  return row?.last_purge_id ?? 0
}

/**
 * Whether a purge covers an entry. The node applying a purge to its own
 * cache (CacheStore#deleteWhere) uses this; it must agree with
 * purgeCondition below, which does the same in SQL for the manifest.
 */
export function matchesPurge(purge: Pick<NewPurge, 'kind' | 'value' | 'host'>, entry: Pick<EntryRecord, 'key' | 'url' | 'host' | 'tags'>): boolean {
  if (purge.host !== null && entry.host !== purge.host) return false
  switch (purge.kind) {
    case 'url':
      // Every variant of the URL; a script may name the entry by its cache key instead.
      return entry.url === purge.value || entry.key === purge.value
    case 'prefix':
      return entry.url.startsWith(purge.value)
    case 'tag':
      return entry.tags.includes(purge.value)
    case 'all':
      return true
  }
}

/**
 * `<table>.url = url`, through the indexes: an entry whose url is its key (almost every one) is
 * found by key, the others through entries_url_not_key, which holds only them (2026120201).
 */
function urlIs(table: 'e' | 'entries', url: string): RawBuilder<SqlBool> {
  const key = sql.ref(`${table}.key`)
  const column = sql.ref(`${table}.url`)
  return sql<SqlBool>`((${key} = ${url} and ${column} = ${key}) or (${column} = ${url} and ${column} <> ${key}))`
}

function purgeCondition(eb: ExpressionBuilder<Database, 'entries'>, purge: Pick<NewPurge, 'kind' | 'value' | 'host'>): Expression<SqlBool> {
  const parts: Expression<SqlBool>[] = []
  if (purge.host !== null) parts.push(eb('entries.host', '=', purge.host))
  switch (purge.kind) {
    case 'url':
      parts.push(eb.or([eb('entries.key', '=', purge.value), urlIs('entries', purge.value)]))
      break
    case 'prefix':
      // The ranges let SQLite walk the key index and the url index (urlIs)
      // instead of scanning every entry (a million on a large cluster); every
      // URL with the prefix sorts inside them (URLs are ASCII). substr
      // decides, not LIKE: LIKE ignores case and would purge /A when asked for /a.
      parts.push(
        eb.or([
          eb.and([eb('entries.key', '>=', purge.value), eb('entries.key', '<', `${purge.value}\u{10FFFF}`), eb('entries.url', '=', eb.ref('entries.key'))]),
          eb.and([eb('entries.url', '>=', purge.value), eb('entries.url', '<', `${purge.value}\u{10FFFF}`), eb('entries.url', '<>', eb.ref('entries.key'))]),
        ]),
      )
      parts.push(sql<SqlBool>`substr(entries.url, 1, length(${purge.value})) = ${purge.value}`)
      break
    case 'tag':
      parts.push(sql<SqlBool>`exists (select 1 from json_each(entries.tags) where json_each.value = ${purge.value})`)
      break
    case 'all':
      break
  }
  return parts.length === 0 ? sql<SqlBool>`1 = 1` : eb.and(parts)
}

function purgeFromRow(row: PurgeRow): Purge {
  return {
    id: row.id,
    requestId: row.request_id,
    kind: row.kind,
    value: row.value,
    host: row.host,
    createdAt: row.created_at,
    createdBy: row.created_by,
    nodeId: row.node_id,
    soft: row.soft === 1,
  }
}

// ── row mapping ─────────────────────────────────────────────────────────

export function entryFromRow(row: EntryRow): EntryRecord {
  return {
    key: row.key,
    variant: row.variant,
    host: row.host,
    url: row.url,
    status: row.status,
    size: row.size,
    contentType: row.content_type,
    storedAt: row.stored_at,
    staleAt: row.stale_at,
    deleteAt: row.delete_at,
    tags: parseJson<string[]>(row.tags, []),
    varyHeaders: parseJson<Record<string, string>>(row.vary_headers, {}),
  }
}

export function parseJson<T>(text: string | null | undefined, fallback: T): T {
  if (!text) return fallback
  try {
    return JSON.parse(text) as T
  } catch {
    // Only this code writes these columns; an unparsable value means a hand
    // edit, and an empty list is the safe reading of it.
    return fallback
  }
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`)
}

function clampInt(n: number, min: number, max: number): number {
  if (!Number.isFinite(n)) return min
  return Math.min(max, Math.max(min, Math.floor(n)))
}

/** A path that went to the origin: how often, how many bytes, and why (Cache-Status detail, or the kind of miss). */
export interface PathMisses {
  path: string
  misses: number
  originBytes: number
  reasons: Record<string, number>
}

/** One node's traffic in one minute. */
export interface MinuteStats {
  /** Epoch ms of the minute's start. */
  minute: number
  requests: number
  hits: number
  misses: number
  bytesCache: number
  bytesOrigin: number
  /** The minute's top paths to the origin (bounded by the node); absent from nodes that do not record them. */
  paths?: PathMisses[]
}

/** How long recorded minutes are kept. */
export const MINUTES_KEPT_MS = 2 * 24 * 3600_000

/**
 * Record a node's finished minutes and their top paths (a redelivered batch
 * overwrites itself) and drop its minutes older than two days.
 */
export async function recordMinutes(db: Db, nodeId: string, minutes: MinuteStats[]): Promise<void> {
  for (const m of minutes) {
    const row = { node_id: nodeId, minute: m.minute, requests: m.requests, hits: m.hits, misses: m.misses, bytes_cache: m.bytesCache, bytes_origin: m.bytesOrigin }
    await db
      .insertInto('node_minutes')
      .values(row)
      .onConflict((oc) => oc.columns(['node_id', 'minute']).doUpdateSet({ requests: row.requests, hits: row.hits, misses: row.misses, bytes_cache: row.bytes_cache, bytes_origin: row.bytes_origin }))
      .execute()
    // A minute without paths comes from a node that does not record them: leave its rows alone.
    if (m.paths === undefined) continue
    await db.deleteFrom('node_minute_paths').where('node_id', '=', nodeId).where('minute', '=', m.minute).execute()
    if (m.paths.length > 0) {
      await db
        .insertInto('node_minute_paths')
        .values(m.paths.map((p) => ({ node_id: nodeId, minute: m.minute, path: p.path, misses: p.misses, origin_bytes: p.originBytes, reasons: JSON.stringify(p.reasons) })))
        .execute()
    }
  }
  const newest = Math.max(...minutes.map((m) => m.minute))
  if (Number.isFinite(newest)) {
    await db.deleteFrom('node_minutes').where('node_id', '=', nodeId).where('minute', '<', newest - MINUTES_KEPT_MS).execute()
    await db.deleteFrom('node_minute_paths').where('node_id', '=', nodeId).where('minute', '<', newest - MINUTES_KEPT_MS).execute()
  }
}

/** Every node's recorded minutes since `since` (epoch ms), oldest first. */
export async function minutesSince(db: Db, since: number): Promise<Array<MinuteStats & { nodeId: string }>> {
  const rows = await db.selectFrom('node_minutes').selectAll().where('minute', '>=', since).orderBy('minute').orderBy('node_id').execute()
  return rows.map((r) => ({ nodeId: r.node_id, minute: r.minute, requests: r.requests, hits: r.hits, misses: r.misses, bytesCache: r.bytes_cache, bytesOrigin: r.bytes_origin }))
}

export interface TopPathsQuery {
  /** Epoch ms: minutes starting at or after it. */
  since: number
  /** One node, or null for every node summed. */
  nodeId: string | null
  by: 'misses' | 'bytes'
  limit: number
  /** Also return these paths' sums (when recorded), top or not: the caller adds counts not recorded yet. */
  alsoPaths?: readonly string[]
}

/** Recorded top paths summed over the window (and nodes), most misses (or origin bytes) first, with their reasons. */
export async function topPathsSince(db: Db, q: TopPathsQuery): Promise<PathMisses[]> {
  const base = () => {
    let query = db.selectFrom('node_minute_paths').where('minute', '>=', q.since)
    if (q.nodeId !== null) query = query.where('node_id', '=', q.nodeId)
    return query
  }
  const sums = base().select((eb) => ['path', eb.fn.sum<number>('misses').as('misses'), eb.fn.sum<number>('origin_bytes').as('origin_bytes')]).groupBy('path')
  const ordered = q.by === 'misses' ? sums.orderBy('misses', 'desc').orderBy('origin_bytes', 'desc') : sums.orderBy('origin_bytes', 'desc').orderBy('misses', 'desc')
  const top = await ordered.orderBy('path').limit(Math.max(1, Math.floor(q.limit))).execute()
  const extra = (q.alsoPaths ?? []).filter((p) => !top.some((t) => t.path === p))
  const more = extra.length === 0 ? [] : await sums.where('path', 'in', extra).execute()
  const rows = [...top, ...more]
  if (rows.length === 0) return []
  // SQLite's json_each sums each reason across the rows of the paths kept (a few dozen).
  // json_each has a column named path too: name the table's.
  const reasons = await base()
    .innerJoin(sql<{ key: string; value: number }>`json_each(node_minute_paths.reasons)`.as('r'), (join) => join.onTrue())
    .select((eb) => ['node_minute_paths.path', sql<string>`r.key`.as('reason'), eb.fn.sum<number>(sql`r.value`).as('n')])
    .where(
      'node_minute_paths.path',
      'in',
      rows.map((r) => r.path),
    )
    .groupBy(['node_minute_paths.path', sql`r.key`])
    .execute()
  const out = new Map(rows.map((r) => [r.path, { path: r.path, misses: Number(r.misses), originBytes: Number(r.origin_bytes), reasons: {} as Record<string, number> }]))
  for (const r of reasons) out.get(r.path)!.reasons[r.reason] = Number(r.n)
  return [...out.values()]
}

/** What a purge would remove from the manifest: variants, their bytes and the nodes holding them (the admin's preview). */
export async function purgeCoverage(db: Db, purge: Pick<NewPurge, 'kind' | 'value' | 'host'>): Promise<{ entries: number; bytes: number; nodes: string[] }> {
  const totals = await db
    .selectFrom('entries')
    .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number | null>('entries.size').as('bytes')])
    .where((eb) => purgeCondition(eb, purge))
    .executeTakeFirstOrThrow()
  const holders = await db
    .selectFrom('entry_nodes')
    .select('entry_nodes.node_id')
    .distinct()
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom('entries')
          .select(sql`1`.as('one'))
          .whereRef('entries.id', '=', 'entry_nodes.entry_id')
          .where((inner) => purgeCondition(inner as unknown as ExpressionBuilder<Database, 'entries'>, purge)),
      ),
    )
    .orderBy('entry_nodes.node_id')
    .execute()
  return { entries: Number(totals.n), bytes: Number(totals.bytes ?? 0), nodes: holders.map((h) => h.node_id) }
}

/** The latest purges, newest first. */
export async function recentPurges(db: Db, limit = 50): Promise<Purge[]> {
  const rows = await db.selectFrom('purges').selectAll().orderBy('id', 'desc').limit(clampInt(limit, 1, 1000)).execute()
  return rows.map(purgeFromRow)
}
