// Manifest writes as data. Every write to the shared manifest is a ManifestOp:
// the primary (or a node without LiteFS) applies it to its own file, a replica
// sends it as JSON to the primary, which applies it the same way. Ops carry
// their own timestamps and node ids, so applying one later, or on another
// machine, records the same thing.

import { setImmediate as nextTurn } from 'node:timers/promises'
import { sql, type CompiledQuery, type Kysely, type Transaction } from 'kysely'
import { sqliteHandleOf } from './database.ts'
import type { PurgeKind } from '../vocabulary.ts'
import type { Database } from './database.ts'
import { describeError } from './log.ts'
import type { ManifestLog } from './log.ts'
import {
  clearManifest,
  forgetHoldings,
  inTransaction,
  insertPurge,
  markPurgeApplied,
  pruneExpired,
  recordPurge,
  recordDeleted,
  forgetNode,
  recordMinutes,
  recordNodeCleared,
  recordStored,
  sweepPurge,
  sweepPurgeQuery,
  upsertNode,
} from './repositories.ts'
import type { EntryRecord, MinuteStats, NewPurge, NodeInfo, PathMisses, PurgeAppliedAt } from './repositories.ts'
import { STORED_ROWS_PER_STATEMENT, applyHotOp, applyHotOps, hotStatements, isHotOp } from './statements.ts'
import { parseHitsOp, recordHits } from './hot-set.ts'
import type { HitsOp } from './hot-set.ts'
import type { HotOp, HotStatements } from './statements.ts'
import { expandStored, isRecord, isStr, isTime, opsListOf, parseHotOp } from './hot-op-shapes.ts'

export type ManifestOp =
  /** nodeId committed this variant to its disk cache. */
  | { type: 'stored'; nodeId: string; entry: EntryRecord }
  /** nodeId dropped this variant from its disk cache. */
  | { type: 'deleted'; nodeId: string; key: string; variant: string }
  /** nodeId does not hold these variants (any more): its disk reconciled with the manifest at start. */
  | { type: 'holdings-forgotten'; nodeId: string; entries: Array<{ key: string; variant: string }> }
  /** nodeId emptied its disk cache. */
  | { type: 'node-cleared'; nodeId: string }
  /** nodeId's traffic, one row per finished minute. */
  | { type: 'minutes'; nodeId: string; minutes: MinuteStats[] }
  /** nodeId is gone for good (an admin forgot it): drop its holdings and its row. */
  | { type: 'node-forgotten'; nodeId: string }
  /** nodeId is alive and reachable at node.internalUrl. */
  | { type: 'node-heartbeat'; node: NodeInfo; at: number }
  /**
   * Record a purge (any node may ask; the primary assigns its id) and remove the entries it
   * covers. `sweepAfterAck`: the sender waits only for the purge to be in the log (it answers its
   * admin then), so the primary may acknowledge the op once the purge is recorded and remove the
   * entries afterwards (applyOps' deferSweep). Older primaries ignore it and do both first.
   */
  | { type: 'purge'; purge: NewPurge; sweepAfterAck?: boolean }
  /**
   * nodeId has applied every purge up to purgeId to its own cache; `applied` says when it
   * applied each purge it has not reported before (absent from older nodes).
   */
  | { type: 'purge-applied'; nodeId: string; purgeId: number; applied?: PurgeAppliedAt[] }
  /** Empty the shared manifest (admin "Clear DB"). */
  | { type: 'clear'; at: number; by: string }
  /** Drop entries whose delete_at has passed. */
  | { type: 'prune'; before: number }
  /** Requests per cache key a node served since its last batch (hot-set.ts). */
  | HitsOp
// Admin writes (passkeys, sessions, challenges, invites, tokens) are made by
// the primary itself (replicas forward admin posts to it), through
// writeWhenFree below; they join this union if they ever move onto the writer.

export type ManifestOpType = ManifestOp['type']

/** Most variants one 'holdings-forgotten' op may name (a batch stays a few hundred KB). */
export const MAX_FORGOTTEN_PER_OP = 1000

/** How much of a batch an op is: one, or one per variant it names. The writers bound batches by this. */
export function opWeight(op: ManifestOp): number {
  if (op.type === 'holdings-forgotten') return Math.max(1, op.entries.length)
  if (op.type === 'hits') return Math.max(1, op.counts.length)
  return 1
}

/** Longest stretch a batch runs before letting the event loop serve requests, in ms. */
const YIELD_EVERY_MS = 4

export interface ApplyResult {
  applied: number
  /** Ops that could not be applied and were dropped (logged). */
  failed: number
}

/** Apply one op inside the caller's transaction. */
export async function applyOp(db: Kysely<Database>, op: ManifestOp): Promise<void> {
  switch (op.type) {
    case 'stored':
      await recordStored(db, op.nodeId, op.entry)
      return
    case 'deleted':
      await recordDeleted(db, op.nodeId, op.key, op.variant)
      return
    case 'holdings-forgotten':
      await forgetHoldings(db, op.nodeId, op.entries)
      return
    case 'node-cleared':
      await recordNodeCleared(db, op.nodeId)
      return
    case 'node-heartbeat':
      await upsertNode(db, op.node, op.at)
      return
    case 'node-forgotten':
      await forgetNode(db, op.nodeId)
      return
    case 'minutes':
      await recordMinutes(db, op.nodeId, op.minutes)
      return
    case 'purge':
      await insertPurge(db, op.purge)
      return
    case 'purge-applied':
      await markPurgeApplied(db, op.nodeId, op.purgeId, op.applied)
      return
    case 'clear':
      await clearManifest(db)
      return
    case 'prune':
      await pruneExpired(db, op.before)
      return
    case 'hits':
      await recordHits(db, op)
      return
  }
}

/**
 * Apply a batch in a few short transactions (applyBatch), each purge in
 * transactions of its own (applyPurge). If the
 * batch fails for a reason that will pass (the file is locked or read-only
 * right now), the error is thrown so the caller keeps the ops and retries.
 * Any other failure is blamed on single ops: the batch is replayed one op per
 * transaction and only the ops that fail again are dropped, so one bad op
 * never blocks the queue behind it.
 */
export async function applyOps(db: Kysely<Database>, ops: readonly ManifestOp[], log?: ManifestLog, options: ApplyOptions = {}): Promise<ApplyResult> {
  if (ops.length === 0) return { applied: 0, failed: 0 }
  // Inside a caller's transaction nothing can be split: everything in it.
  if (db.isTransaction) return applyBatch(db, ops, log)
  // A purge may remove 10,000 entries (and their holdings and index rows):
  // in one transaction that is half a second of SQLite with the event loop
  // stopped. It gets transactions of its own, a chunk of entries each.
  const result: ApplyResult = { applied: 0, failed: 0 }
  let start = 0
  for (let i = 0; i <= ops.length; i++) {
    const op = ops[i]
    if (op !== undefined && op.type !== 'purge') continue
    if (i > start) add(result, await applyBatch(db, ops.slice(start, i), log))
    if (op?.type === 'purge') add(result, await applyPurge(db, op.purge, { log, deferSweep: op.sweepAfterAck === true ? options.deferSweep : undefined, runSweepChunk: options.runSweepChunk }))
    start = i + 1
  }
  return result
}

export interface ApplyOptions {
  /**
   * Takes the removal of a purge's entries when the op allows it (sweepAfterAck): applyOps then
   * resolves once the purge is recorded, and `sweep` (which throws what applyOps would) runs later.
   * The primary's internal route passes one, so a replica's purge is acknowledged without waiting
   * for 10,000 entries to leave the manifest.
   */
  deferSweep?: (sweep: () => Promise<void>) => void
  /**
   * Runs one chunk of a purge's sweep (the statement sweepPurgeQuery compiles) in a transaction
   * of its own on another connection, resolving to the rows it changed: the writer's apply
   * thread (writer.ts DirectWriter), so the chunks' SQLite time and COMMITs leave the event loop.
   * Without it each chunk runs here, on the loop.
   */
  runSweepChunk?: (statement: CompiledQuery) => Promise<number>
}

function add(total: ApplyResult, part: ApplyResult): void {
  total.applied += part.applied
  total.failed += part.failed
}

/**
 * Entries one purge transaction removes, at most: a few milliseconds of SQLite each on a quiet
 * machine. Each entry also takes its holdings, counts and search rows with it, so the size is
 * fitted to the time the last transaction took (aiming at YIELD_EVERY_MS), down to
 * PURGE_SWEEP_MIN: on a busy primary a 250-entry transaction held the event loop for 100s of ms.
 */
const PURGE_SWEEP_CHUNK = 250
const PURGE_SWEEP_MIN = 10

/**
 * Entries one purge transaction removes at most on another connection (runSweepChunk), and the
 * time it aims at: the event loop does not wait for these, only the writes queued behind them do.
 */
const THREAD_SWEEP_CHUNK = 1000
const THREAD_SWEEP_MS = 10

/**
 * Record a purge, then remove its entries in transactions of at most
 * PURGE_SWEEP_CHUNK (sized to the time the last one took), letting the event
 * loop turn in between. Stores the purge covers are never
 * recorded once it is in the log (statements.ts), so the chunks cannot race
 * them; a redelivered purge sweeps again and finishes what a crash cut short.
 */
async function applyPurge(
  db: Kysely<Database>,
  purge: NewPurge,
  options: { log?: ManifestLog; deferSweep?: ApplyOptions['deferSweep']; runSweepChunk?: ApplyOptions['runSweepChunk'] },
): Promise<ApplyResult> {
  const { log, deferSweep, runSweepChunk } = options
  try {
    await withoutBusyWait(db, (trx) => recordPurge(trx, purge))
    // In the log: from here on no node records a store it covers, and every node applies it.
    if (deferSweep) deferSweep(() => sweepInChunks(db, purge, runSweepChunk))
    else await sweepInChunks(db, purge, runSweepChunk)
    return { applied: 1, failed: 0 }
  } catch (err) {
    if (isTransientDbError(err)) throw err
    log?.('error', 'manifest op dropped: it cannot be applied', { op: 'purge', error: describeError(err) })
    return { applied: 0, failed: 1 }
  }
}

/**
 * Remove a recorded purge's entries in transactions sized to about YIELD_EVERY_MS each, with a
 * turn of the loop between them; with `runChunk`, each on that connection instead, sized to about
 * THREAD_SWEEP_MS (the loop only builds each statement and waits for its answer).
 */
async function sweepInChunks(db: Kysely<Database>, purge: NewPurge, runChunk?: ApplyOptions['runSweepChunk']): Promise<void> {
  const [targetMs, largest] = runChunk ? [THREAD_SWEEP_MS, THREAD_SWEEP_CHUNK] : [YIELD_EVERY_MS, PURGE_SWEEP_CHUNK]
  for (let chunk = PURGE_SWEEP_CHUNK / 5; ; ) {
    const started = performance.now()
    const removed = runChunk ? await runChunk(sweepPurgeQuery(db, purge, chunk)) : await withoutBusyWait(db, (trx) => sweepPurge(trx, purge, chunk))
    if (removed < chunk) break
    const perEntryMs = Math.max(performance.now() - started, 0.01) / removed
    chunk = Math.max(PURGE_SWEEP_MIN, Math.min(largest, Math.floor(targetMs / perEntryMs)))
    await nextTurn()
  }
}

/**
 * Apply a batch in transactions of about YIELD_EVERY_MS each, letting the
 * event loop turn between them; a chunk that fails is replayed op by op
 * (see applyOps).
 *
 * Each chunk commits before the pause. A commit writes every page the
 * transaction changed to the WAL in one synchronous call: a whole
 * 1,000-op batch in one transaction wrote about 2,500 pages (10 MB) in a
 * single COMMIT, 20-90 ms with nothing else served. The pages a chunk
 * changes are nearly all its own (each op lands on random leaves of the
 * key and url indexes), so smaller commits write hardly more in total, and
 * in WAL mode with synchronous=NORMAL a commit does not sync. A chunk that
 * committed stays applied if a later one meets a busy file: the caller
 * retries the whole batch, and every op is idempotent (repositories.ts).
 */
async function applyBatch(db: Kysely<Database>, ops: readonly ManifestOp[], log?: ManifestLog): Promise<ApplyResult> {
  const sqlite = sqliteHandleOf(db)
  const hot = sqlite ? hotStatements(sqlite) : undefined
  // Inside a caller's transaction nothing can commit early: one pass, pausing as chunks would.
  if (db.isTransaction) {
    for (let start = 0; start < ops.length; ) {
      start = await applyChunk(db, sqlite, hot, ops, start)
      if (start < ops.length) await nextTurn()
    }
    return { applied: ops.length, failed: 0 }
  }
  const result: ApplyResult = { applied: 0, failed: 0 }
  let start = 0
  while (start < ops.length) {
    // The op being applied when a chunk fails: the chunk up to it is rolled back.
    const progress = { at: start }
    try {
      const end = await db.connection().execute(async (conn) => {
        // Holding the connection, outside any transaction: the only place the journal can move.
        if (sqlite) placeStatementJournal(sqlite, !UNBOUNDED_OPS.has(ops[start]!.type))
        return withoutBusyWait(conn, (trx) => applyChunk(trx, sqlite, hot, ops, start, progress, true))
      })
      result.applied += end - start
      start = end
    } catch (err) {
      if (isTransientDbError(err)) throw err
      log?.('warn', 'manifest batch failed; applying its ops one by one', { ops: progress.at + 1 - start, error: describeError(err) })
      add(result, await applyOneByOne(db, sqlite, hot, ops.slice(start, progress.at + 1), log))
      start = progress.at + 1
    }
    if (start < ops.length) await nextTurn()
  }
  return result
}

/**
 * Ops that change rows without bound: every entry, or every holding of a
 * node. The others change a few rows each (holdings-forgotten at most
 * MAX_FORGOTTEN_PER_OP; a purge sweeps in chunks), and their chunks keep
 * the statement journal in memory (placeStatementJournal); these never share
 * a chunk with them.
 */
const UNBOUNDED_OPS: ReadonlySet<ManifestOpType> = new Set(['clear', 'prune', 'node-cleared', 'node-forgotten'])

/**
 * Where SQLite keeps statement journals on this handle: in memory, or (not
 * inMemory) SQLite's default, a temp file once one passes 64 KiB.
 *
 * Every statement that writes `entries` or `entry_nodes` runs their triggers
 * (counts, search queue) and may abort part-way, so inside a transaction
 * SQLite first copies each page it changes into a statement journal, to undo
 * that one statement. On the primary's loop of 'stored' ops that journal went
 * to the temp file: about 2.4 pwrites per op, a quarter of an op's SQLite
 * time. In memory it is a copy. A statement's journal is dropped when the
 * statement ends, so bounded ops hold a few pages at a time; a statement that
 * deletes every entry ('clear') journals the whole table, so unbounded ops
 * keep the temp file. Changing the setting resets the handle's schema (every
 * prepared statement prepares again once), so it changes only when the kind
 * of chunk does, and never inside a transaction (SQLite refuses).
 */
function placeStatementJournal(sqlite: NonNullable<ReturnType<typeof sqliteHandleOf>>, inMemory: boolean): void {
  const want = inMemory ? 2 : 0
  if (sqlite.pragma('temp_store', { simple: true }) !== want) sqlite.pragma(`temp_store = ${want}`)
}

/**
 * Apply ops from `start` inside the transaction `trx` until YIELD_EVERY_MS
 * has passed; resolves to the index of the first op not applied. In a
 * transaction of its own (`ownTransaction`), a chunk is all bounded ops or
 * all unbounded ones (UNBOUNDED_OPS), for placeStatementJournal.
 */
async function applyChunk(
  trx: Kysely<Database>,
  sqlite: ReturnType<typeof sqliteHandleOf>,
  hot: HotStatements | undefined,
  ops: readonly ManifestOp[],
  start: number,
  progress: { at: number } = { at: start },
  ownTransaction = false,
): Promise<number> {
  const started = performance.now()
  const unbounded = UNBOUNDED_OPS.has(ops[start]!.type)
  // Purges arrive as ops of their own (applyOps splits the batch around them), and this
  // transaction holds the file: the newest purge cannot change under the chunk.
  const purgeAt = hot && ops.some((op) => op.type === 'stored') ? hot.newestPurgeAt() : undefined
  let i = start
  while (i < ops.length) {
    const op = ops[i]!
    if (ownTransaction && i > start && UNBOUNDED_OPS.has(op.type) !== unbounded) break
    if (hot !== undefined && isHotOp(op)) {
      // A run of hot ops, many rows per statement (statements.ts), and no longer than
      // STORED_ROWS_PER_STATEMENT ops, so the clock below is still read every few hundred µs.
      let end = i + 1
      while (end < ops.length && end - i < STORED_ROWS_PER_STATEMENT && isHotOp(ops[end]!) && !(ownTransaction && UNBOUNDED_OPS.has(ops[end]!.type) !== unbounded)) end++
      // If the run fails, which of its ops failed is not known: all of them are replayed one by one.
      progress.at = end - 1
      applyHotOps(hot, ops.slice(i, end) as HotOp[], purgeAt)
      i = end
    } else {
      progress.at = i
      if (!applyPrepared(sqlite, hot, op, purgeAt)) await applyOp(trx, op)
      i++
    }
    // better-sqlite3 is synchronous: the rest waits for the next chunk, after requests are served.
    if (performance.now() - started >= YIELD_EVERY_MS) break
  }
  return i
}

/** Each op in a transaction of its own; the ops that fail again are dropped (logged). */
async function applyOneByOne(
  db: Kysely<Database>,
  sqlite: ReturnType<typeof sqliteHandleOf>,
  hot: HotStatements | undefined,
  ops: readonly ManifestOp[],
  log?: ManifestLog,
): Promise<ApplyResult> {
  let applied = 0
  let failed = 0
  for (const op of ops) {
    try {
      await withoutBusyWait(db, async (trx) => {
        if (!applyPrepared(sqlite, hot, op)) await applyOp(trx, op)
      })
      applied++
    } catch (err) {
      if (isTransientDbError(err)) throw err
      failed++
      log?.('error', 'manifest op dropped: it cannot be applied', { op: op.type, error: describeError(err) })
    }
  }
  return { applied, failed }
}

/** Ops with statements prepared once per handle: the hot writes, and hit counts (hot-set.ts). */
function applyPrepared(sqlite: ReturnType<typeof sqliteHandleOf>, hot: HotStatements | undefined, op: ManifestOp, newestPurgeAt?: number | null): boolean {
  // The ops that make up nearly all of the traffic run statements prepared once
  // (statements.ts), synchronously, inside the transaction the caller holds on the same handle.
  if (hot === undefined || !isHotOp(op)) return false
  applyHotOp(hot, op, newestPurgeAt)
  return true
}

/**
 * A transaction that fails at once with SQLITE_BUSY instead of waiting for
 * another process's lock. better-sqlite3 is synchronous: SQLite's busy wait
 * (busy_timeout, 5 s) would freeze the whole event loop, so every request the
 * node serves would stall behind a background manifest write while another
 * node or tool holds the file. Ops are applied by the writer (which keeps
 * them and retries with backoff) and by the internal endpoint (which answers
 * 503 retry), so not waiting here loses nothing. Writes that a person waits
 * for go through writeWhenFree, which retries this with timers.
 */
export async function withoutBusyWait<T>(db: Kysely<Database>, fn: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
  return inTransaction(db, async (trx) => {
    const previous = (await sql<{ timeout: number }>`PRAGMA busy_timeout`.execute(trx)).rows[0]?.timeout ?? 5000
    await sql`PRAGMA busy_timeout = 0`.execute(trx)
    try {
      // inTransaction hands over the caller's transaction or the one it opened: a Transaction either way.
      return await fn(trx as Transaction<Database>)
    } finally {
      await sql.raw(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(previous))}`).execute(trx)
    }
  })
}

/** How long writeWhenFree keeps trying by default: a person is waiting for the answer. */
export const DEFAULT_BUSY_RETRY_MS = 3000

export interface BusyRetryOptions {
  /** Give up after about this long; 0 makes one attempt. Default DEFAULT_BUSY_RETRY_MS. */
  totalMs?: number
  /** Pause after the first busy attempt; doubles up to maxDelayMs. Default 10. */
  firstDelayMs?: number
  /** Default 250. */
  maxDelayMs?: number
  /** The clock (ms) the window is measured on. Default Date.now. */
  now?: () => number
}

/** A manifest write gave up: another process held the file's write lock for the whole retry window. */
export class ManifestBusyError extends Error {
  constructor(
    readonly waitedMs: number,
    readonly attempts: number,
    options?: ErrorOptions,
  ) {
    super(`the manifest is busy: another process held its write lock for ${waitedMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'})`, options)
    this.name = 'ManifestBusyError'
  }
}

/**
 * Run fn as one write transaction without ever blocking the event loop on
 * another process's lock (admin sign-in, sessions, passkeys, invites, tokens).
 * Each attempt fails at once with SQLITE_BUSY (withoutBusyWait); the pauses
 * between attempts are timers, so the node keeps serving while it waits.
 * After options.totalMs it gives up with ManifestBusyError. Other errors
 * (read-only replica, constraint) are thrown at once: waiting cannot fix them.
 * Inside a caller's transaction fn runs once and the caller retries the whole.
 */
export async function writeWhenFree<T>(db: Kysely<Database>, fn: (trx: Transaction<Database>) => Promise<T>, options: BusyRetryOptions = {}): Promise<T> {
  if (db.isTransaction) return withoutBusyWait(db, fn)
  const totalMs = Math.max(0, options.totalMs ?? DEFAULT_BUSY_RETRY_MS)
  const maxDelayMs = Math.max(1, options.maxDelayMs ?? 250)
  let delayMs = Math.min(maxDelayMs, Math.max(1, options.firstDelayMs ?? 10))
  const now = options.now ?? Date.now
  const started = now()
  for (let attempt = 1; ; attempt++) {
    try {
      return await withoutBusyWait(db, fn)
    } catch (err) {
      if (!isLockContention(err)) throw err
      const waitedMs = now() - started
      if (waitedMs >= totalMs) throw new ManifestBusyError(waitedMs, attempt, { cause: err })
      // The last pause ends at the deadline, for one more attempt there.
      await new Promise((resolve) => setTimeout(resolve, Math.min(delayMs, totalMs - waitedMs)))
      delayMs = Math.min(delayMs * 2, maxDelayMs)
    }
  }
}

/** Another connection holds the lock: worth waiting for, unlike a read-only file or a full disk. */
export function isLockContention(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^SQLITE_(BUSY|LOCKED)/.test(code)
}

/** SQLite errors that say "not now" rather than "never": busy, locked, read-only (demoted), I/O, disk full. */
export function isTransientDbError(err: unknown): boolean {
  if (err instanceof ManifestBusyError) return true
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string') return false
  return /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN|PROTOCOL)/.test(code)
}

// ── validation of ops received over HTTP ────────────────────────────────

/**
 * `unknownTypes`: op types this version does not know, skipped. During a rolling deploy a newer
 * node may send an op its older primary has never seen: the primary applies the rest of the batch
 * instead of refusing it whole (which would drop the `stored` ops beside it), and says what it skipped.
 */
export type ParseResult = { ok: true; ops: ManifestOp[]; unknownTypes: string[] } | { ok: false; error: string }

const UNKNOWN_TYPE = Symbol('unknown op type')

/** Most ops one batch from a peer may hold (a replica sends at most 1,000). */
export const MAX_OPS_PER_BATCH = 10_000

const PURGE_KINDS: readonly PurgeKind[] = ['url', 'prefix', 'tag', 'all']

/**
 * Check a batch received from a peer. Peers are authenticated, but they may
 * run another version: anything that does not fit is refused whole with the
 * reason, rather than half-applied.
 */
export function parseOps(input: unknown, maxOps = MAX_OPS_PER_BATCH, compact = false): ParseResult {
  // The compact form (batch-body.ts COMPACT_CONTENT_TYPE): {"c": [...]}, its stored ops arrays.
  const name = compact ? 'c' : 'ops'
  const list = opsListOf(input, compact)
  if (list === undefined) return { ok: false, error: `body must be {"${name}": [...]}` }
  if (list.length > maxOps) return { ok: false, error: `too many ops in one batch (${list.length} > ${maxOps})` }
  const ops: ManifestOp[] = []
  const unknownTypes = new Set<string>()
  for (let i = 0; i < list.length; i++) {
    let v: unknown = list[i]
    if (compact && Array.isArray(v)) {
      v = expandStored(v)
      if (typeof v === 'string') return { ok: false, error: `${name}[${i}]: ${v}` }
    }
    const op = parseOp(v)
    if (op === UNKNOWN_TYPE) {
      unknownTypes.add(String((v as { type?: unknown }).type).slice(0, 64))
      continue
    }
    if (typeof op === 'string') return { ok: false, error: `${name}[${i}]: ${op}` }
    ops.push(op)
  }
  return { ok: true, ops, unknownTypes: [...unknownTypes] }
}

/** Bounds on one minute's top paths in a `minutes` op (a node sends far fewer: see src/traffic.ts). */
export const MAX_PATHS_PER_MINUTE = 1000
const MAX_PATH_CHARS = 2048
const MAX_REASONS_PER_PATH = 32
const MAX_REASON_CHARS = 100

function parseMinutePaths(v: unknown): PathMisses[] | string {
  if (!Array.isArray(v) || v.length > MAX_PATHS_PER_MINUTE) return `paths must be an array of at most ${MAX_PATHS_PER_MINUTE} {path, misses, originBytes, reasons}`
  const paths: PathMisses[] = []
  for (const p of v as unknown[]) {
    if (!isRecord(p) || !isStr(p.path) || p.path.length > MAX_PATH_CHARS) return `each path needs path, a string of 1 to ${MAX_PATH_CHARS} characters`
    if (!isCount(p.misses) || !isCount(p.originBytes)) return `path ${p.path.slice(0, 80)}: misses and originBytes must be whole numbers`
    if (!isRecord(p.reasons)) return `path ${p.path.slice(0, 80)}: reasons must be an object of reason → count`
    const entries = Object.entries(p.reasons)
    if (entries.length > MAX_REASONS_PER_PATH || !entries.every(([k, n]) => k.length > 0 && k.length <= MAX_REASON_CHARS && isCount(n))) {
      return `path ${p.path.slice(0, 80)}: reasons must map at most ${MAX_REASONS_PER_PATH} reasons (1 to ${MAX_REASON_CHARS} characters) to whole numbers`
    }
    paths.push({ path: p.path, misses: p.misses, originBytes: p.originBytes, reasons: Object.fromEntries(entries) as Record<string, number> })
  }
  return paths
}

const isCount = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0

function parseOp(v: unknown): ManifestOp | string | typeof UNKNOWN_TYPE {
  if (!isRecord(v)) return 'not an object'
  if (typeof v.type !== 'string') return 'type must be a string'
  // The hot ops (nearly every op of a batch) are checked by the functions the apply thread runs too.
  const hot = parseHotOp(v, MAX_FORGOTTEN_PER_OP)
  if (hot !== undefined) return hot
  switch (v.type) {
    case 'node-forgotten':
      if (!isStr(v.nodeId)) return 'nodeId must be a string'
      return { type: 'node-forgotten', nodeId: v.nodeId }
    case 'minutes': {
      if (!isStr(v.nodeId)) return 'nodeId must be a string'
      if (!Array.isArray(v.minutes) || v.minutes.length > 10_000) return 'minutes must be an array (at most 10000)'
      const minutes: MinuteStats[] = []
      for (const m of v.minutes as unknown[]) {
        if (!isRecord(m)) return 'each minute must be an object'
        const fields = ['minute', 'requests', 'hits', 'misses', 'bytesCache', 'bytesOrigin'] as const
        if (!fields.every((k) => Number.isSafeInteger(m[k]) && (m[k] as number) >= 0)) return `each minute needs whole numbers ${fields.join(', ')}`
        const stats: MinuteStats = { minute: m.minute as number, requests: m.requests as number, hits: m.hits as number, misses: m.misses as number, bytesCache: m.bytesCache as number, bytesOrigin: m.bytesOrigin as number }
        // Older nodes send no paths: the minute still counts, its top paths stay unknown.
        if (m.paths !== undefined) {
          const paths = parseMinutePaths(m.paths)
          if (typeof paths === 'string') return `minute ${stats.minute}: ${paths}`
          stats.paths = paths
        }
        minutes.push(stats)
      }
      return { type: 'minutes', nodeId: v.nodeId, minutes }
    }
    case 'purge': {
      const p = v.purge
      if (!isRecord(p)) return 'purge must be an object'
      if (!isStr(p.requestId) || !isStr(p.createdBy) || !isStr(p.nodeId)) return 'purge.requestId, createdBy and nodeId must be strings'
      if (!PURGE_KINDS.includes(p.kind as PurgeKind)) return `purge.kind must be one of ${PURGE_KINDS.join(', ')}`
      if (typeof p.value !== 'string' || (p.kind !== 'all' && p.value === '')) return 'purge.value must be a non-empty string'
      if (p.host !== null && typeof p.host !== 'string') return 'purge.host must be a string or null'
      if (!isTime(p.createdAt)) return 'purge.createdAt must be an epoch-ms number'
      // Absent from older nodes: their purges are hard.
      if (p.soft !== undefined && typeof p.soft !== 'boolean') return 'purge.soft must be true or false'
      if (v.sweepAfterAck !== undefined && typeof v.sweepAfterAck !== 'boolean') return 'sweepAfterAck must be true or false'
      return {
        type: 'purge',
        ...(v.sweepAfterAck === true ? { sweepAfterAck: true } : {}),
        purge: {
          requestId: p.requestId,
          kind: p.kind as PurgeKind,
          value: p.value,
          host: p.host,
          createdAt: p.createdAt,
          createdBy: p.createdBy,
          nodeId: p.nodeId,
          soft: p.soft === true,
        },
      }
    }
    case 'clear':
      if (!isTime(v.at) || !isStr(v.by)) return 'clear needs at (epoch ms) and by'
      return { type: 'clear', at: v.at, by: v.by }
    case 'prune':
      if (!isTime(v.before)) return 'before must be an epoch-ms number'
      return { type: 'prune', before: v.before }
    case 'hits':
      return parseHitsOp(v)
    default:
      return UNKNOWN_TYPE
  }
}
