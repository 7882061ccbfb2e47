// The manifest's hot writes as SQL text, prepared once per database handle.
//
// The primary applies every node's ops: a store on any node is one 'stored'
// op, so at scale this is the manifest's hot loop. Built through Kysely, each
// op cost a query build, a compile and a fresh better-sqlite3 prepare (about
// 9,000 ops/s, two thirds of it in building and preparing). Here each
// statement is written once and prepared once per handle; applying an op is
// binding values and stepping.
//
// The same SQL also runs through Kysely (CompiledQuery.raw) in repositories.ts,
// so the two paths cannot drift apart.

import type SQLite from 'better-sqlite3'
import { HITS_SQL } from './hits-sql.ts'
import type { ManifestOp } from './ops.ts'
import type { EntryRecord, NodeInfo } from './repositories.ts'

/**
 * Whether a recorded purge covers an entry (parameters: coveredParams): a
 * purge covers what was stored before it (purge.ts purgeCovers), and matches
 * as matchesPurge in repositories.ts does. The created_at index makes this a
 * look at the few purges newer than the entry. A soft purge removes nothing,
 * so it never keeps a store out: a node that revalidated an entry a soft purge
 * marked records it again, fresh (its storedAt is the original one).
 */
export const COVERED_BY_PURGE_SQL = `select 1 from purges p
  where p.created_at >= ?
    and p.soft = 0
    and (p.host is null or p.host = ?)
    and (
      p.kind = 'all'
      or (p.kind = 'url' and (p.value = ? or p.value = ?))
      or (p.kind = 'prefix' and substr(?, 1, length(p.value)) = p.value)
      or (p.kind = 'tag' and exists (select 1 from json_each(?) t where t.value = p.value))
    )
  limit 1`

/** The newest purge's time: a purge covers only what was stored at or before it (COVERED_BY_PURGE_SQL). */
export const NEWEST_PURGE_SQL = 'select max(created_at) from purges'

/**
 * Ops from different nodes arrive in any order: an older copy must not
 * overwrite the freshness of a newer one.
 *
 * This runs once per stored op, so it writes as little as it can. SQLite
 * rewrites an index when the UPDATE's SET list names one of its columns,
 * whatever the values: so host and url, which a key keeps (they are part of
 * it), are left out here and set by FIX_ENTRY_URL_SQL only when they differ,
 * and a copy of the same store (a node that populated it records the very
 * same record) updates nothing at all. An equal stored_at with other values
 * still updates: a node that revalidated an entry a soft purge marked stale
 * records it again with its original stored_at and a new lifetime.
 *
 * It returns the row it inserted or updated (none when it changed nothing):
 * its id for the holding, and its host and url, which differ from the op's
 * only when an existing row took the update (FIX_ENTRY_URL_SQL). A new entry
 * costs this statement and the holding's, nothing more.
 */
const UPSERT_ENTRY_HEAD = `insert into entries
  (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers)
  values`
const ENTRY_ROW = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
const UPSERT_ENTRY_CONFLICT = `on conflict (key, variant) do update set
    status = excluded.status, size = excluded.size, content_type = excluded.content_type,
    stored_at = excluded.stored_at, stale_at = excluded.stale_at, delete_at = excluded.delete_at,
    tags = excluded.tags, vary_headers = excluded.vary_headers
  where entries.stored_at < excluded.stored_at
    or (entries.stored_at = excluded.stored_at
      and (entries.stale_at, entries.delete_at, entries.status, entries.size, entries.content_type, entries.tags, entries.vary_headers)
        <> (excluded.stale_at, excluded.delete_at, excluded.status, excluded.size, excluded.content_type, excluded.tags, excluded.vary_headers))`

export const UPSERT_ENTRY_SQL = `${UPSERT_ENTRY_HEAD} ${ENTRY_ROW}
  ${UPSERT_ENTRY_CONFLICT}
  returning id, host, url`

/** The row UPSERT_ENTRY_SQL returns. */
export interface UpsertedEntry {
  id: number
  host: string
  url: string
}

/**
 * After UPSERT_ENTRY_SQL updated a row whose host or url differ from the op's
 * (a rule rewrote the URL a key stands for): set them (parameters: host, url,
 * entry id). Only then, so the host and url indexes and the URL search
 * trigger (which fires on an update of url) do no work for the others.
 */
export const FIX_ENTRY_URL_SQL = 'update entries set host = ?, url = ? where id = ?'

/** Holdings name their entry by id (2026120115): a new entry's land at the end of the table. Parameters: holdingParams. */
const UPSERT_HOLDING_HEAD = 'insert into entry_nodes (entry_id, node_id, stored_at) values'
const HOLDING_ROW = '(?, ?, ?)'
const UPSERT_HOLDING_CONFLICT = 'on conflict (entry_id, node_id) do update set stored_at = excluded.stored_at'
export const UPSERT_HOLDING_SQL = `${UPSERT_HOLDING_HEAD} ${HOLDING_ROW} ${UPSERT_HOLDING_CONFLICT}`

/**
 * A run of stored ops is written STORED_ROWS_PER_STATEMENT at a time: one
 * UPSERT_ENTRY_SQL with that many rows (returning each row it inserted or
 * updated with its key, to match it to its op), then one UPSERT_HOLDING_SQL
 * with a row per holding. Every statement inside a transaction that runs
 * triggers first copies each page it changes into a statement journal, and
 * binds, steps and resets on its own: one statement per row made that the
 * larger part of a new entry's cost, while the pages a run changes are
 * mostly the same few (the end of the tables and of the stored_at index, the
 * count rows). A statement never names one key twice (recordStoredRun), so
 * each returned row is one op's, and the ops' order still decides.
 */
export const STORED_ROWS_PER_STATEMENT = 50

/** The parts the statements of many rows are made of (prepareHotStatements), by the number of rows. */
export const MANY_ROWS_SQL = {
  entriesHead: UPSERT_ENTRY_HEAD,
  entryRow: ENTRY_ROW,
  entriesTail: `${UPSERT_ENTRY_CONFLICT}
  returning id, key, variant, host, url`,
  holdingsHead: UPSERT_HOLDING_HEAD,
  holdingRow: HOLDING_ROW,
  holdingsTail: UPSERT_HOLDING_CONFLICT,
  rows: STORED_ROWS_PER_STATEMENT,
} as const

/**
 * The holding when UPSERT_ENTRY_SQL changed nothing (an older or identical
 * record: the entry exists), found by key (parameters: node id, stored_at,
 * key, variant). The WHERE clause also keeps SQLite from reading ON CONFLICT
 * as a join's ON.
 */
export const UPSERT_HOLDING_BY_KEY_SQL = `insert into entry_nodes (entry_id, node_id, stored_at)
  select id, ?, ? from entries where key = ? and variant = ?
  on conflict (entry_id, node_id) do update set stored_at = excluded.stored_at`

/** Parameters: key, variant, node id. */
export const DELETE_HOLDING_SQL = 'delete from entry_nodes where entry_id = (select id from entries where key = ? and variant = ?) and node_id = ?'

export const CLEAR_NODE_SQL = 'delete from entry_nodes where node_id = ?'

/** A delayed heartbeat must not move last_seen_at backwards. */
export const UPSERT_NODE_SQL = `insert into nodes (id, region, internal_url, started_at, last_seen_at) values (?, ?, ?, ?, ?)
  on conflict (id) do update set region = excluded.region, internal_url = excluded.internal_url,
    started_at = excluded.started_at, last_seen_at = max(nodes.last_seen_at, excluded.last_seen_at)`

/** Never moves backwards: batches may be redelivered. */
export const MARK_PURGE_APPLIED_SQL = 'update nodes set last_purge_id = max(last_purge_id, ?) where id = ?'

/** The first time a node reported applying a purge stays (parameters: purge id, node id, epoch ms). */
export const RECORD_PURGE_NODE_SQL = 'insert into purge_nodes (purge_id, node_id, applied_at) values (?, ?, ?) on conflict (purge_id, node_id) do nothing'

export function coveredParams(entry: EntryRecord): unknown[] {
  return [entry.storedAt, entry.host, entry.url, entry.key, entry.url, JSON.stringify(entry.tags)]
}

/** One entry's parameters for the entries columns, appended to `params` (a statement of many rows takes several). */
export function pushEntryParams(params: unknown[], entry: EntryRecord): void {
  params.push(
    entry.key,
    entry.variant,
    entry.host,
    entry.url,
    entry.status,
    entry.size,
    entry.contentType,
    entry.storedAt,
    entry.staleAt,
    entry.deleteAt,
    // Most entries have no tags and vary on nothing: their text without a call to JSON.stringify.
    entry.tags.length === 0 ? '[]' : JSON.stringify(entry.tags),
    isEmptyObject(entry.varyHeaders) ? '{}' : JSON.stringify(entry.varyHeaders),
  )
}

/** Whether `o` has no own enumerable keys, without making a list of them. */
export function isEmptyObject(o: object): boolean {
  for (const k in o) if (Object.hasOwn(o, k)) return false
  return true
}

/** UPSERT_ENTRY_SQL's parameters for one entry. */
export function entryParams(entry: EntryRecord): unknown[] {
  const params: unknown[] = []
  pushEntryParams(params, entry)
  return params
}

/** Whether the row UPSERT_ENTRY_SQL returned needs FIX_ENTRY_URL_SQL. */
export function urlNeedsFix(row: UpsertedEntry, entry: EntryRecord): boolean {
  return row.host !== entry.host || row.url !== entry.url
}

export function holdingParams(nodeId: string, entryId: number, entry: EntryRecord): unknown[] {
  return [entryId, nodeId, entry.storedAt]
}

export function holdingByKeyParams(nodeId: string, entry: EntryRecord): unknown[] {
  return [nodeId, entry.storedAt, entry.key, entry.variant]
}

export function nodeParams(node: NodeInfo, seenAt: number): unknown[] {
  return [node.id, node.region, node.internalUrl, node.startedAt, seenAt]
}

/** The hot writes, prepared on one handle. Every method runs synchronously inside the caller's transaction. */
export interface HotStatements {
  /**
   * Resolves to false when a recorded purge already covers the entry (nothing written).
   * `newestPurgeAt` (newestPurgeAt(), read in the same transaction): an entry stored after it
   * cannot be covered, and the per-entry purge query is skipped.
   */
  recordStored(nodeId: string, entry: EntryRecord, newestPurgeAt?: number | null): boolean
  /**
   * ops[start..end), every one a 'stored' op, recorded as recordStored would one after the
   * other, STORED_ROWS_PER_STATEMENT rows per statement.
   */
  recordStoredRun(ops: readonly StoredOp[], start: number, end: number, newestPurgeAt?: number | null): void
  /** created_at of the newest recorded purge, or null when there is none. */
  newestPurgeAt(): number | null
  recordDeleted(nodeId: string, key: string, variant: string): void
  forgetHoldings(nodeId: string, entries: readonly { key: string; variant: string }[]): void
  recordNodeCleared(nodeId: string): void
  upsertNode(node: NodeInfo, seenAt: number): void
  markPurgeApplied(nodeId: string, purgeId: number, applied?: readonly { id: number; at: number }[]): void
  /** A batch of hit counts taken at `at` (hot-set.ts), then the counts pruned (hits-sql.ts). */
  recordHits(at: number, counts: readonly { key: string; hits: number }[]): void
}

/** The SQL of the hot writes, by statement (prepareHotStatements prepares each once). */
export const HOT_SQL = {
  covered: COVERED_BY_PURGE_SQL,
  newestPurge: NEWEST_PURGE_SQL,
  upsertEntry: UPSERT_ENTRY_SQL,
  fixUrl: FIX_ENTRY_URL_SQL,
  upsertHolding: UPSERT_HOLDING_SQL,
  upsertHoldingByKey: UPSERT_HOLDING_BY_KEY_SQL,
  deleteHolding: DELETE_HOLDING_SQL,
  clearNode: CLEAR_NODE_SQL,
  upsertNode: UPSERT_NODE_SQL,
  markApplied: MARK_PURGE_APPLIED_SQL,
  recordPurgeNode: RECORD_PURGE_NODE_SQL,
  many: MANY_ROWS_SQL,
  hits: HITS_SQL,
} as const

export type HotSql = typeof HOT_SQL

const prepared = new WeakMap<SQLite.Database, HotStatements>()

/** The statements for this handle, prepared on first use and kept as long as the handle lives. */
export function hotStatements(sqlite: SQLite.Database): HotStatements {
  let s = prepared.get(sqlite)
  if (!s) {
    s = prepareHotStatements(sqlite, HOT_SQL)
    prepared.set(sqlite, s)
  }
  return s
}

/**
 * Prepare the hot writes on a handle. It refers to nothing but its arguments and the
 * parameter functions above (all plain function declarations), so the manifest's apply
 * thread (apply-thread.ts) runs this very code from its source text.
 */
export function prepareHotStatements(sqlite: SQLite.Database, sql: HotSql): HotStatements {
  const covered = sqlite.prepare(sql.covered).pluck()
  const newestPurge = sqlite.prepare(sql.newestPurge).pluck()
  const upsertEntry = sqlite.prepare(sql.upsertEntry)
  const fixUrl = sqlite.prepare(sql.fixUrl)
  const upsertHolding = sqlite.prepare(sql.upsertHolding)
  const upsertHoldingByKey = sqlite.prepare(sql.upsertHoldingByKey)
  const deleteHolding = sqlite.prepare(sql.deleteHolding)
  const clearNode = sqlite.prepare(sql.clearNode)
  const upsertNode = sqlite.prepare(sql.upsertNode)
  const markApplied = sqlite.prepare(sql.markApplied)
  const recordPurgeNode = sqlite.prepare(sql.recordPurgeNode)
  const addHits = sqlite.prepare(sql.hits.add)
  const pruneOldHits = sqlite.prepare(sql.hits.pruneOld)
  const pruneHitsOver = sqlite.prepare(sql.hits.pruneOver)
  // The statements of n rows, prepared the first time a run needs n (at most sql.many.rows of each).
  const entriesOf = new Map<number, SQLite.Statement>()
  const holdingsOf = new Map<number, SQLite.Statement>()
  const rowsOf = (head: string, row: string, tail: string, n: number) => `${head} ${new Array<string>(n).fill(row).join(', ')} ${tail}`
  const upsertEntries = (n: number) => {
    let st = entriesOf.get(n)
    if (st === undefined) entriesOf.set(n, (st = sqlite.prepare(rowsOf(sql.many.entriesHead, sql.many.entryRow, sql.many.entriesTail, n)).raw()))
    return st
  }
  const upsertHoldings = (n: number) => {
    let st = holdingsOf.get(n)
    if (st === undefined) holdingsOf.set(n, (st = sqlite.prepare(rowsOf(sql.many.holdingsHead, sql.many.holdingRow, sql.many.holdingsTail, n))))
    return st
  }
  const isCovered = (entry: EntryRecord, newestPurgeAt: number | null | undefined) =>
    // A batch of stores checks the purge log once (newestPurgeAt), not once per entry.
    (newestPurgeAt === undefined || (newestPurgeAt !== null && newestPurgeAt >= entry.storedAt)) && covered.get(...coveredParams(entry)) !== undefined
  const recordOne = (nodeId: string, entry: EntryRecord) => {
    const row = upsertEntry.get(...entryParams(entry)) as UpsertedEntry | undefined
    // No row: an older or identical record changed nothing, and nothing of the row can need fixing.
    if (row === undefined) {
      upsertHoldingByKey.run(...holdingByKeyParams(nodeId, entry))
      return
    }
    if (urlNeedsFix(row, entry)) fixUrl.run(entry.host, entry.url, row.id)
    upsertHolding.run(...holdingParams(nodeId, row.id, entry))
  }
  /** Ops of distinct keys, none covered: their entries in one statement, then their holdings in one. */
  const recordMany = (group: readonly StoredOp[]) => {
    const params: unknown[] = []
    for (const op of group) pushEntryParams(params, op.entry)
    // Raw rows: [id, key, variant, host, url], one per entry inserted or updated.
    const rows = upsertEntries(group.length).all(...params) as Array<[number, string, string, string, string]>
    const byKey = new Map<string, [number, string, string, string, string]>()
    for (const row of rows) byKey.set(storedKeyOf(row[1], row[2]), row)
    const holdings: unknown[] = []
    for (const op of group) {
      const e = op.entry
      const row = byKey.get(storedKeyOf(e.key, e.variant))
      if (row === undefined) {
        upsertHoldingByKey.run(...holdingByKeyParams(op.nodeId, e))
        continue
      }
      if (urlNeedsFix({ id: row[0], host: row[3], url: row[4] }, e)) fixUrl.run(e.host, e.url, row[0])
      holdings.push(row[0], op.nodeId, e.storedAt)
    }
    if (holdings.length > 0) upsertHoldings(holdings.length / 3).run(...holdings)
  }
  return {
    recordStored(nodeId, entry, newestPurgeAt) {
      if (isCovered(entry, newestPurgeAt)) return false
      recordOne(nodeId, entry)
      return true
    },
    recordStoredRun(ops, start, end, newestPurgeAt) {
      const group: StoredOp[] = []
      const keys = new Set<string>()
      for (let i = start; i < end; ) {
        group.length = 0
        keys.clear()
        // A group ends before a key it already names: a later store of a key must see the earlier one applied.
        for (; i < end && group.length < sql.many.rows; i++) {
          const op = ops[i]!
          const key = storedKeyOf(op.entry.key, op.entry.variant)
          if (keys.has(key)) break
          if (isCovered(op.entry, newestPurgeAt)) continue
          keys.add(key)
          group.push(op)
        }
        if (group.length === 1) recordOne(group[0]!.nodeId, group[0]!.entry)
        else if (group.length > 1) recordMany(group)
      }
    },
    newestPurgeAt() {
      const at = newestPurge.get()
      return typeof at === 'number' ? at : null
    },
    recordDeleted(nodeId, key, variant) {
      deleteHolding.run(key, variant, nodeId)
    },
    forgetHoldings(nodeId, entries) {
      for (const e of entries) deleteHolding.run(e.key, e.variant, nodeId)
    },
    recordNodeCleared(nodeId) {
      clearNode.run(nodeId)
    },
    upsertNode(node, seenAt) {
      upsertNode.run(...nodeParams(node, seenAt))
    },
    markPurgeApplied(nodeId, purgeId, applied = []) {
      markApplied.run(purgeId, nodeId)
      for (const a of applied) recordPurgeNode.run(a.id, nodeId, a.at)
    },
    recordHits(at, counts) {
      for (const c of counts) addHits.run(c.key, c.hits, at)
      pruneOldHits.run(at)
      pruneHitsOver.run()
    },
  }
}

/** One string per (key, variant): a key holds no NUL, and if one did, two pairs would only look alike and start a new statement. */
export function storedKeyOf(key: string, variant: string): string {
  return `${key}\u0000${variant}`
}

/**
 * The ops applied with the statements above (applyHotOps): the hot writes and the hit counts
 * (a batch every few seconds, but as many rows as keys were asked for), on the apply thread or
 * inside the event loop's transaction. The rest (purge, clear, prune, traffic minutes) go
 * through Kysely on the event loop. applyHotOp's switch takes exactly these
 * (TypeScript checks that it covers every one of them and no other).
 */
export const HOT_OP_TYPES = new Set(['stored', 'deleted', 'holdings-forgotten', 'node-cleared', 'node-heartbeat', 'purge-applied', 'hits'] as const)

export type HotOpType = typeof HOT_OP_TYPES extends Set<infer T> ? T : never
export type HotOp = Extract<ManifestOp, { type: HotOpType }>
export type StoredOp = Extract<ManifestOp, { type: 'stored' }>

export function isHotOp(op: ManifestOp): op is HotOp {
  return (HOT_OP_TYPES as ReadonlySet<string>).has(op.type)
}

/**
 * Apply one hot op with the prepared statements, synchronously, inside the transaction the
 * caller holds on their handle. Like prepareHotStatements, it refers to nothing but its
 * arguments (the apply thread runs it from its source text); an op of another kind throws.
 */
export function applyHotOp(hot: HotStatements, op: HotOp, newestPurgeAt?: number | null): void {
  switch (op.type) {
    case 'stored':
      hot.recordStored(op.nodeId, op.entry, newestPurgeAt)
      return
    case 'deleted':
      hot.recordDeleted(op.nodeId, op.key, op.variant)
      return
    case 'holdings-forgotten':
      hot.forgetHoldings(op.nodeId, op.entries)
      return
    case 'node-cleared':
      hot.recordNodeCleared(op.nodeId)
      return
    case 'node-heartbeat':
      hot.upsertNode(op.node, op.at)
      return
    case 'purge-applied':
      hot.markPurgeApplied(op.nodeId, op.purgeId, op.applied)
      return
    case 'hits':
      hot.recordHits(op.at, op.counts)
      return
    default: {
      const other: never = op
      throw new Error(`'${(other as ManifestOp).type}' ops are not applied with the prepared statements`)
    }
  }
}

/**
 * Apply hot ops in order (applyHotOp), each run of 'stored' ops many rows per statement
 * (recordStoredRun). Self-contained like applyHotOp.
 */
export function applyHotOps(hot: HotStatements, ops: readonly HotOp[], newestPurgeAt?: number | null): void {
  for (let i = 0; i < ops.length; ) {
    if (ops[i]!.type !== 'stored') {
      applyHotOp(hot, ops[i]!, newestPurgeAt)
      i++
      continue
    }
    let end = i + 1
    while (end < ops.length && ops[end]!.type === 'stored') end++
    hot.recordStoredRun(ops as readonly StoredOp[], i, end, newestPurgeAt)
    i = end
  }
}
