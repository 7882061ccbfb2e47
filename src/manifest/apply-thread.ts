// The manifest's hot writes on a thread of their own.
//
// Every response a node stores is one 'stored' op, which the writer applies to
// the manifest (writer.ts) a batch at a time. better-sqlite3 is synchronous:
// applied on the event loop, the statements and the COMMIT (its WAL write) were
// a tenth of the main thread's time in a storm of misses, taken from the
// requests being served. Here a worker thread holds a connection of its own to
// the same file and applies those ops with the same prepared statements
// (statements.ts, run from their source text); the event loop only posts the
// batch and waits for the answer. The thread also indexes the URLs its
// transactions queue for the admin filter (search.ts). The rare ops (purge, clear, prune, traffic
// minutes, hit counts) stay with Kysely on the event loop, but for the removal of a purge's
// entries: built there, each chunk of it runs here as a statement of its own (run), so 10,000
// entries leaving the manifest cost the loop no SQLite time and no COMMIT.
//
// The writer holds its Kysely connection while the thread works (see
// DirectWriter), so the process's handles on the file still take turns
// (database.ts, "one lock per file per process") and no handle of this
// process ever meets the thread's transaction in SQLite's busy handler. Other
// processes on the file meet SQLite's own lock: the thread may wait for it
// (busy_timeout) without holding up any request.

import { createRequire } from 'node:module'
import type { Worker } from 'node:worker_threads'
import { startWorker } from '../thread-heap.ts'
import type { CheckpointStats } from './checkpointer.ts'
import { jsonLog, type ManifestLog } from './log.ts'
import { PIECE_CHARS, parseBatch, splitBatch } from './batch-body.ts'
import { expandStored, isRecord, isStr, isTime, isWhole, opsListOf, parseEntry, parseHotBatch, parseHotOp } from './hot-op-shapes.ts'
import { MAX_FORGOTTEN_PER_OP, MAX_OPS_PER_BATCH } from './ops.ts'
import { SEARCH_INDEX_SQL, indexQueuedNow } from './search.ts'
import {
  HOT_SQL,
  applyHotOp,
  applyHotOps,
  coveredParams,
  entryParams,
  holdingByKeyParams,
  holdingParams,
  nodeParams,
  prepareHotStatements,
  isEmptyObject,
  pushEntryParams,
  storedKeyOf,
  urlNeedsFix,
} from './statements.ts'
import type { HotOp } from './statements.ts'

export interface ThreadApplyResult {
  applied: number
  /** Ops that failed on their own and were dropped (the rest of the batch was applied). */
  failed: Array<{ op: string; error: string }>
  /** URL changes left queued for the admin filter's index (search.ts) after the transaction, counted up to one past searchBacklogRows. */
  searchBacklog: number
}

/**
 * What became of a batch handed over as the bytes of its body (applyBodies): applied, or not a
 * batch of hot ops alone (`parsed`: the body as JSON.parse reads it, for the caller to check with
 * parseOps and apply as ops), or not JSON at all.
 */
export type BodyApplyResult = ({ kind: 'applied' } & ThreadApplyResult) | { kind: 'parsed'; body: unknown } | { kind: 'not-json' }

export interface ApplyThread {
  /**
   * Apply hot ops (statements.ts isHotOp), in order, in one transaction. When that fails
   * for a reason that will not pass, each op is applied in a transaction of its own and the ones
   * that fail again are dropped and reported. Rejects with the SQLite error (its `code` kept)
   * when the file is busy, locked or read-only, so the caller keeps the ops and retries; rejects
   * with ApplyThreadGoneError when the thread ended.
   */
  apply(ops: readonly HotOp[]): Promise<ThreadApplyResult>
  /**
   * Batches as the bytes of their request bodies (`{"ops": [...]}`), one result per body in
   * their order: the thread parses and checks each (batch-body.ts, hot-op-shapes.ts) and applies
   * the ones whose ops are all hot ops of the right shape in one transaction, each batch in order
   * (group commit: batches that waited behind each other share one COMMIT). When that
   * transaction fails for a reason that will not pass, each batch is applied on its own as
   * apply() applies one, so a batch with an op that cannot be applied costs the others nothing.
   * Rejects as apply() does, for every body at once (a busy or read-only file fails them all
   * alike). The event loop only copies the bytes, once. `compact[i]`: body i is in the compact
   * form (batch-body.ts COMPACT_CONTENT_TYPE, `{"c": [...]}`), else the JSON one.
   */
  applyBodies(bodies: ReadonlyArray<readonly Uint8Array[]>, compact?: readonly boolean[]): Promise<BodyApplyResult[]>
  /**
   * Index up to maxRows queued URL changes for the admin filter in a transaction of their own
   * (what apply() left queued), failing as apply() does. Resolves to the rows still queued.
   */
  indexSearch(maxRows: number): Promise<{ searchBacklog: number }>
  /**
   * Run one statement (with its parameters) in a transaction of its own, failing as apply() does:
   * a chunk of a purge's sweep (ops.ts), which would otherwise hold the event loop for its SQLite
   * time and its COMMIT. Resolves to the rows it changed and the search index's backlog after it.
   */
  run(statement: ThreadStatement): Promise<{ changes: number; searchBacklog: number }>
  /** The WAL checkpoints this thread ran (checkpointIntervalMs): how many copied pages back, the WAL frames they copied, the last failure. */
  checkpoints(): CheckpointStats
  /** Close the thread's connection and end the thread (after the apply in flight; with checkpoints, after a last one). */
  close(): Promise<void>
}

/** A statement as a query builder compiles it: its text and the values of its parameters. */
export interface ThreadStatement {
  sql: string
  parameters: readonly unknown[]
}

export interface ApplyThreadOptions {
  /** The database file (not ':memory:'); it must exist (the writer migrated it). */
  path: string
  /**
   * How long the thread waits for another process's write lock before SQLITE_BUSY (then the
   * writer retries with backoff). Default 100 ms: the writer holds its connection meanwhile, so
   * this process's other queries on the file wait as long.
   */
  busyTimeoutMs?: number
  /** Called with the thread once started (tests end it, to see the writer start another). */
  onThread?: (thread: Worker) => void
  /**
   * URL changes a transaction of stores may leave queued for the admin filter's index
   * (search.ts), to be indexed later (indexSearch, when no batch waits); past it, each
   * transaction of stores indexes more than it queued. Default SEARCH_BACKLOG_ROWS.
   */
  searchBacklogRows?: number
  /**
   * The thread connection's wal_autocheckpoint: the writer's own handle's, so that with the WAL
   * checkpointed in the background (checkpointer.ts) the apply thread's commits checkpoint only
   * past the same backstop. Left at SQLite's default (1,000 pages), every commit of a batch of stores
   * (2,000 pages and more) crossed it and copied the WAL back into the file and synced it on
   * this thread. Default 1,000.
   */
  walAutocheckpointPages?: number
  /**
   * Also copy the WAL back into the database file, with a PASSIVE checkpoint on this thread's
   * connection every this many ms between the messages it handles (checkpointer.ts says why),
   * rather than on a thread of its own: one thread (a V8 isolate, its stacks, its connection)
   * fewer. PASSIVE never waits for a reader or a writer, so the event loop's transactions never
   * wait for it; a batch that arrives during one waits for it on this thread. Default: none (the
   * WAL is then left to the writing handles' wal_autocheckpoint).
   */
  checkpointIntervalMs?: number
  /** Where a failed checkpoint is reported. Default: JSON lines on stderr. */
  log?: ManifestLog
}

/**
 * Default of searchBacklogRows. Indexing a URL (trigram tokens into the FTS5 index, flushed at
 * commit) was about a sixth of the thread's time per stored op; a burst of batches leaves it for
 * when no batch waits. The filter reads the queue too and checks each queued row (search.ts
 * candidateRowids), so a row queued is found all the same: the bound keeps that read small.
 */
export const SEARCH_BACKLOG_ROWS = 5000

/**
 * The thread connection's page cache, in MiB (PRAGMA cache_size). SQLite's default of 2 MiB holds
 * a few hundred pages; at a million entries the key index alone is about 100 MB, and each new
 * entry lands on a random leaf of it, so nearly every op read its leaf page again from the
 * file. The cache is this connection's memory only: it changes nothing in the file or the WAL
 * (what LiteFS replicates), and SQLite drops it whenever another connection wrote the file.
 * It fills under a storm of misses and stays: at 32 MiB it was most of the malloc arena the
 * worker threads share (41-44 MB at a 20 s storm's peak RSS, 25 at 16 MiB). bench/manifest-upsert.ts
 * at 1,000,000 entries, alternated: 57,900 and 52,900 new entries a second at 16 MiB against
 * 55,700 and 57,200 at 32 (the thread's CPU 14.5-15.5 µs per op for both); at 8 MiB, 54,300
 * against 61,700, and a storm's manifest once took 975 ms of its 1 s to settle.
 */
export const APPLY_CACHE_MIB = 16

/**
 * The apply thread's young generation, in MB (thread-heap.ts startWorker; other threads get 3).
 * A batch of 1,000 stored ops parsed is about a megabyte of objects that live until its
 * transaction ends: in a new space of 2 MB nearly every batch met a scavenge, which copied it
 * and promoted it on the next (a replica's batches back to back: 665 scavenges for 205 batches;
 * with 12 MB, 153, and the process's scavenge time 808 → 445 ms). Up to 9 MB more of this thread's memory
 * when it is busy, on the primary only.
 */
export const APPLY_YOUNG_GENERATION_MB = 12

/** The apply thread ended (it failed, or was closed): the ops were not applied. */
export class ApplyThreadGoneError extends Error {
  constructor(reason: string) {
    super(`the manifest apply thread ended: ${reason}`)
    this.name = 'ApplyThreadGoneError'
  }
}

/** What became of one batch on the thread: applied (some ops maybe dropped), or a body that is not hot ops alone (as parsed), or not JSON. */
type BatchOutcome = { applied: number; failed: ThreadApplyResult['failed'] } | { parsed: unknown } | { notJson: true }

interface Reply {
  id: number
  /** One per batch sent, in their order. */
  outcomes?: BatchOutcome[]
  searchBacklog?: number
  /** Rows the statement changed (a `statement` message). */
  changes?: number
  error?: { message: string; code?: string }
}

/** The id of the thread's reports of its own checkpoints (`changes`: WAL frames copied back, or `error`); answers count from 1. */
const CHECKPOINT_REPLY = 0

/** The inbox starts this large and doubles as bodies need it: a replica's batch of 1,000 stored ops is about 300 KB. */
const INBOX_BYTES = 512 * 1024
/** The inbox grows no larger than this (a replica sends at most 1,000 ops a batch); a larger body gets memory of its own. */
const INBOX_KEPT_BYTES = 4 * 1024 * 1024

export function startApplyThread(options: ApplyThreadOptions): ApplyThread {
  // The thread loads the same better-sqlite3 as the rest of caje does (under the bundle too).
  const resolveFrom = createRequire(import.meta.url).resolve('better-sqlite3')
  const workerData = {
    path: options.path,
    checkpointIntervalMs: options.checkpointIntervalMs === undefined ? 0 : Math.max(10, options.checkpointIntervalMs),
    busyTimeoutMs: options.busyTimeoutMs ?? 100,
    resolveFrom,
    searchBacklogRows: Math.max(0, Math.floor(options.searchBacklogRows ?? SEARCH_BACKLOG_ROWS)),
    walAutocheckpointPages: Math.max(0, Math.floor(options.walAutocheckpointPages ?? 1000)),
    cacheMib: APPLY_CACHE_MIB,
  }
  const worker = startWorker(THREAD_SOURCE, { workerData }, 'manifest apply', APPLY_YOUNG_GENERATION_MB)
  // An idle thread must not keep the process alive.
  worker.unref()
  options.onThread?.(worker)
  const log = options.log ?? jsonLog
  const checkpoints: CheckpointStats = { runs: 0, frames: 0, lastError: undefined }
  const pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>()
  let nextId = 1
  let gone: string | undefined
  const failAll = (reason: string) => {
    gone ??= reason
    for (const p of pending.values()) p.reject(new ApplyThreadGoneError(reason))
    pending.clear()
  }
  let exited!: () => void
  const ended = new Promise<void>((resolve) => (exited = resolve))
  worker.on('message', (reply: Reply) => {
    if (reply.id === CHECKPOINT_REPLY) {
      if (reply.error) {
        if (checkpoints.lastError !== reply.error.message) log('warn', 'WAL checkpoint failed on the apply thread; the writer checkpoints itself past its backstop', { error: reply.error.message })
        checkpoints.lastError = reply.error.message
      } else {
        checkpoints.runs++
        checkpoints.frames += reply.changes ?? 0
      }
      return
    }
    const p = pending.get(reply.id)
    pending.delete(reply.id)
    if (!p) return
    if (reply.error) p.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }))
    else p.resolve(reply)
  })
  worker.on('error', (err) => failAll(err.message))
  worker.on('exit', () => {
    failAll('it exited')
    exited()
  })
  const send = (message: { ops: readonly HotOp[] } | { inbox: SharedArrayBuffer; bodies: Array<[number, number, boolean]> } | { index: number } | { statement: ThreadStatement }) => {
    if (gone !== undefined) return Promise.reject(new ApplyThreadGoneError(gone))
    const id = nextId++
    return new Promise<Reply>((resolve, reject) => {
      pending.set(id, { resolve, reject })
      worker.postMessage({ id, ...message })
    })
  }
  // Bodies reach the thread through memory both share, reused from one group to the next: a
  // structured clone of the parsed ops was about a quarter of the thread's time, and a buffer
  // transferred per batch is fresh memory each time (a body is larger than glibc's mmap
  // threshold under bin/caje, and every page of a fresh mapping faults). The bodies of a group
  // lie one after the other; one group at a time: the next waits until the thread has answered
  // for the last.
  let inbox = new SharedArrayBuffer(INBOX_BYTES)
  let inboxFree: Promise<unknown> = Promise.resolve()
  const applyBodies = async (bodies: ReadonlyArray<readonly Uint8Array[]>, compact: readonly boolean[]): Promise<BodyApplyResult[]> => {
    let length = 0
    for (const chunks of bodies) for (const c of chunks) length += c.length
    // An odd large group gets memory of its own, dropped with it.
    let memory = length > INBOX_KEPT_BYTES ? new SharedArrayBuffer(length) : inbox
    if (length > memory.byteLength) {
      let size = memory.byteLength
      while (size < length) size *= 2
      memory = inbox = new SharedArrayBuffer(size)
    }
    const into = new Uint8Array(memory)
    const places: Array<[number, number, boolean]> = []
    let at = 0
    for (let i = 0; i < bodies.length; i++) {
      const from = at
      for (const c of bodies[i]!) {
        into.set(c, at)
        at += c.length
      }
      places.push([from, at - from, compact[i] === true])
    }
    const reply = await send({ inbox: memory, bodies: places })
    const searchBacklog = reply.searchBacklog ?? 0
    return (reply.outcomes ?? []).map((o): BodyApplyResult => {
      if ('notJson' in o) return { kind: 'not-json' }
      if ('parsed' in o) return { kind: 'parsed', body: o.parsed }
      return { kind: 'applied', applied: o.applied, failed: o.failed, searchBacklog }
    })
  }
  return {
    async apply(ops) {
      // Ops are plain data (they also travel as JSON to a primary): the structured clone keeps them as they are.
      const reply = await send({ ops })
      const outcome = reply.outcomes?.[0]
      const done = outcome !== undefined && 'applied' in outcome ? outcome : { applied: 0, failed: [] }
      return { applied: done.applied, failed: done.failed, searchBacklog: reply.searchBacklog ?? 0 }
    },
    async indexSearch(maxRows) {
      const reply = await send({ index: maxRows })
      return { searchBacklog: reply.searchBacklog ?? 0 }
    },
    async run(statement) {
      // Only the text and the values: a compiled query carries more (its syntax tree).
      const reply = await send({ statement: { sql: statement.sql, parameters: statement.parameters } })
      return { changes: reply.changes ?? 0, searchBacklog: reply.searchBacklog ?? 0 }
    },
    checkpoints: () => ({ ...checkpoints }),
    applyBodies(bodies, compact = []) {
      const done = inboxFree.then(() => applyBodies(bodies, compact))
      inboxFree = done.catch(() => undefined)
      return done
    },
    async close() {
      if (gone === undefined) worker.postMessage('close')
      gone ??= 'closed'
      // A thread stuck behind another process's lock is not waited for forever.
      const timer = setTimeout(() => void worker.terminate(), 5_000)
      await ended
      clearTimeout(timer)
    },
  }
}

/** The functions of statements.ts, search.ts, batch-body.ts and hot-op-shapes.ts the thread runs (from their source text, see THREAD_SOURCE). */
interface ThreadLibrary {
  prepareHotStatements: typeof prepareHotStatements
  applyHotOp: typeof applyHotOp
  applyHotOps: typeof applyHotOps
  indexQueuedNow: typeof indexQueuedNow
  parseBatch: typeof parseBatch
  parseHotBatch: typeof parseHotBatch
}

/** Limits the thread checks a body against, as the event loop's parseOps does. */
interface ThreadLimits {
  maxOps: number
  maxForgotten: number
  pieceChars: number
}

/**
 * The thread's body, run as a script of its own (eval): it refers to nothing outside itself but
 * its arguments (an imported name would be rewritten by a module transform into something the
 * script does not have).
 */
function applyThread(lib: ThreadLibrary, sql: typeof HOT_SQL, searchSql: typeof SEARCH_INDEX_SQL, limits: ThreadLimits): void {
  const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads')
  const { createRequire: requireFrom } = process.getBuiltinModule('node:module')
  const { StringDecoder } = process.getBuiltinModule('node:string_decoder')
  const data = workerData as { path: string; busyTimeoutMs: number; resolveFrom: string; searchBacklogRows: number; walAutocheckpointPages: number; cacheMib: number; checkpointIntervalMs: number }
  type Statement = { run(...p: unknown[]): unknown; get(...p: unknown[]): unknown }
  type Handle = { prepare(sql: string): Statement; pragma(source: string): unknown; close(): void; inTransaction: boolean }
  const SQLite = requireFrom(data.resolveFrom)(data.resolveFrom) as new (path: string, options: { fileMustExist: boolean; timeout: number }) => Handle
  const port = parentPort!
  let open:
    | {
        db: Handle
        hot: ReturnType<ThreadLibrary['prepareHotStatements']>
        search: Parameters<ThreadLibrary['indexQueuedNow']>[0]
        queued: Statement
        begin: Statement
        commit: Statement
        rollback: Statement
        tempStore: number
        /** Statements sent as text (run messages), by their text: a purge's chunks repeat a few. */
        statements: Map<string, Statement & { run(...p: unknown[]): { changes: number } }>
      }
    | undefined
  const connect = () => {
    const db = new SQLite(data.path, { fileMustExist: true, timeout: data.busyTimeoutMs })
    // As the writer's own handle is set up (database.ts openDatabase); the file is in WAL mode already.
    db.pragma('foreign_keys = ON')
    db.pragma('synchronous = NORMAL')
    db.pragma(`wal_autocheckpoint = ${data.walAutocheckpointPages}`)
    // Negative: KiB rather than pages (APPLY_CACHE_MIB says why it is larger than SQLite's default).
    db.pragma(`cache_size = ${-1024 * data.cacheMib}`)
    // IMMEDIATE: take the write lock at the start, waiting for it here rather than failing mid-way.
    const hot = lib.prepareHotStatements(db as never, sql)
    // A LIMIT bound as a parameter makes SQLite prepare the statement again each time it runs
    // (the planner reads the limit): a few percent of this thread's time, five statements per
    // batch. The limit is written into the text instead, rounded up to a hundred rows, and the
    // statement prepared once per limit (a handful: a batch's ops and a hundred, an idle run's).
    const limited = (text: string) => {
      const byLimit = new Map<number, Statement>()
      return {
        run(limit: number) {
          const rows = Math.ceil(limit / 100) * 100
          let st = byLimit.get(rows)
          if (st === undefined) {
            if (byLimit.size >= 16) byLimit.clear()
            byLimit.set(rows, (st = db.prepare(text.replaceAll('limit ?', `limit ${rows}`))))
          }
          return st.run()
        },
      }
    }
    const search = {
      removeMany: limited(searchSql.removeMany),
      addMany: limited(searchSql.addMany),
      dequeueMany: limited(searchSql.dequeueMany),
    } as unknown as Parameters<ThreadLibrary['indexQueuedNow']>[0]
    const queued = db.prepare(searchSql.queued.replace('limit ?', `limit ${data.searchBacklogRows + 1}`))
    return { db, hot, search, queued, begin: db.prepare('BEGIN IMMEDIATE'), commit: db.prepare('COMMIT'), rollback: db.prepare('ROLLBACK'), tempStore: 0, statements: new Map() }
  }
  const transient = (err: unknown) => /^SQLITE_(BUSY|LOCKED|READONLY|IOERR|FULL|CANTOPEN|PROTOCOL)/.test(String((err as { code?: unknown } | null)?.code ?? ''))
  const message = (err: unknown) => (err instanceof Error ? err.message : String(err))
  const inTransaction = (c: NonNullable<typeof open>, fn: () => void) => {
    c.begin.run()
    try {
      fn()
      c.commit.run()
    } catch (err) {
      if (c.db.inTransaction) c.rollback.run()
      throw err
    }
  }
  /** The ops of one body in the inbox, or the outcome that says why there are none to apply. */
  const opsOfBody = (inbox: SharedArrayBuffer, at: number, length: number, compact: boolean): HotOp[] | { parsed: unknown } | { notJson: true } => {
    let body: unknown
    try {
      body = lib.parseBatch([new Uint8Array(inbox, at, length)], new StringDecoder('utf8'), limits.pieceChars, compact)
    } catch {
      return { notJson: true }
    }
    // Anything but hot ops of the right shape goes back as parsed: the event loop checks it (parseOps) and says what is wrong.
    return lib.parseHotBatch(body, compact, limits.maxOps, limits.maxForgotten) ?? { parsed: body }
  }
  /** Rows queued for the search index now, in the caller's transaction, counted up to one past the bound (a count of a million rows reads them all). */
  const searchQueued = (c: NonNullable<typeof open>) => (c.queued.get() as { n: number }).n
  /**
   * Statement journals in memory (ops.ts placeStatementJournal says why), but on disk for a
   * transaction that clears a node's holdings: that one statement journals every page they fill.
   * Changing it makes the handle prepare its statements again, so only when it changes.
   */
  const placeJournal = (c: NonNullable<typeof open>, batches: readonly HotOp[][]) => {
    const tempStore = batches.some((ops) => ops.some((op) => op.type === 'node-cleared')) ? 0 : 2
    if (c.tempStore !== tempStore) {
      c.db.pragma(`temp_store = ${tempStore}`)
      c.tempStore = tempStore
    }
  }
  /** Batches of hot ops, each in order, in one transaction: the stores' URLs left queued for the search index, up to its bound. */
  const applyTogether = (c: NonNullable<typeof open>, batches: readonly HotOp[][]): number => {
    let ops = 0
    let searchBacklog = 0
    inTransaction(c, () => {
      // A transaction of stores checks the purge log once (ops.ts applyChunk).
      const purgeAt = batches.some((b) => b.some((op) => op.type === 'stored')) ? c.hot.newestPurgeAt() : undefined
      for (const batch of batches) {
        lib.applyHotOps(c.hot, batch, purgeAt)
        ops += batch.length
      }
      // The URLs these ops added or changed wait in the index's queue (search.ts) for a
      // transaction of their own when no batch waits (indexSearch). Past the bound, this
      // transaction indexes more than it added, as many as it added and a hundred more: a
      // backlog of a million (a manifest indexed for the first time) goes down a little with
      // each batch, not all in one transaction.
      searchBacklog = searchQueued(c)
      if (searchBacklog > data.searchBacklogRows) {
        lib.indexQueuedNow(c.search, ops + 100)
        searchBacklog = searchQueued(c)
      }
    })
    return searchBacklog
  }
  /** One batch whose transaction failed for a reason that will not pass: each op in a transaction of its own, and only those that fail again are dropped. */
  const applyOneByOne = (c: NonNullable<typeof open>, ops: readonly HotOp[]) => {
    const failed: Array<{ op: string; error: string }> = []
    let applied = 0
    for (const op of ops) {
      try {
        // An op of a kind applyHotOp does not take throws: dropped and reported, never counted as applied.
        inTransaction(c, () => lib.applyHotOp(c.hot, op))
        applied++
      } catch (e) {
        if (transient(e)) throw e
        failed.push({ op: op.type, error: message(e) })
      }
    }
    return { applied, failed }
  }
  type Applied = { applied: number; failed: Array<{ op: string; error: string }> }
  /**
   * Batches in one transaction (applyTogether), and the search index's backlog after it. When it
   * fails for a reason that will not pass, each batch in a transaction of its own, and a batch
   * that fails again op by op (applyOneByOne): the batches that can be applied whole are,
   * whatever another one holds.
   */
  const applyBatches = (c: NonNullable<typeof open>, batches: readonly HotOp[][]): { done: Applied[]; searchBacklog: number } => {
    placeJournal(c, batches)
    try {
      const searchBacklog = applyTogether(c, batches)
      return { done: batches.map((ops) => ({ applied: ops.length, failed: [] })), searchBacklog }
    } catch (err) {
      if (transient(err)) throw err
    }
    const done = batches.map((ops): Applied => {
      if (batches.length > 1) {
        try {
          applyTogether(c, [ops])
          return { applied: ops.length, failed: [] }
        } catch (err) {
          if (transient(err)) throw err
        }
      }
      return applyOneByOne(c, ops)
    })
    let searchBacklog = 0
    inTransaction(c, () => (searchBacklog = searchQueued(c)))
    return { done, searchBacklog }
  }
  // WAL checkpoints (checkpointIntervalMs), run by a timer between messages: never inside this
  // thread's own transaction. Each reports the frames it copied back since the previous one.
  let lastCheckpointed = 0
  const checkpoint = () => {
    try {
      const c = (open ??= connect())
      const [result] = c.db.pragma('wal_checkpoint(PASSIVE)') as Array<{ busy: number; log: number; checkpointed: number }>
      if (!result) return
      // nBackfill (checkpointed) counts from the WAL's last restart: the progress since the previous run.
      const moved = result.checkpointed >= lastCheckpointed ? result.checkpointed - lastCheckpointed : result.checkpointed
      lastCheckpointed = result.checkpointed
      // id 0: CHECKPOINT_REPLY (this function runs as a script of its own and cannot name it).
      if (moved > 0) port.postMessage({ id: 0, changes: moved })
    } catch (err) {
      // Another connection is checkpointing right now: the next run catches up.
      if (/^SQLITE_(BUSY|LOCKED)/.test(String((err as { code?: unknown } | null)?.code ?? ''))) return
      port.postMessage({ id: 0, error: { message: message(err) } })
    }
  }
  const checkpoints = data.checkpointIntervalMs > 0 ? setInterval(checkpoint, data.checkpointIntervalMs) : undefined
  port.on('message', (received: 'close' | { id: number; ops: HotOp[] } | { id: number; inbox: SharedArrayBuffer; bodies: Array<[number, number, boolean]> } | { id: number; index: number } | { id: number; statement: { sql: string; parameters: unknown[] } }) => {
    if (received === 'close') {
      if (checkpoints !== undefined) {
        clearInterval(checkpoints)
        checkpoint()
      }
      try {
        open?.db.close()
      } finally {
        port.close()
      }
      return
    }
    if ('statement' in received) {
      try {
        const c = (open ??= connect())
        const text = received.statement.sql
        let st = c.statements.get(text)
        if (st === undefined) {
          if (c.statements.size >= 16) c.statements.clear()
          c.statements.set(text, (st = c.db.prepare(text) as Statement & { run(...p: unknown[]): { changes: number } }))
        }
        // A bounded statement (a chunk of a sweep): its statement journal in memory, as for stores.
        placeJournal(c, [])
        let changes = 0
        let searchBacklog = 0
        inTransaction(c, () => {
          changes = st.run(...received.statement.parameters).changes
          searchBacklog = searchQueued(c)
        })
        port.postMessage({ id: received.id, changes, searchBacklog })
      } catch (err) {
        port.postMessage({ id: received.id, error: { message: message(err), code: (err as { code?: string } | null)?.code } })
      }
      return
    }
    if ('index' in received) {
      try {
        const c = (open ??= connect())
        let searchBacklog = 0
        inTransaction(c, () => {
          lib.indexQueuedNow(c.search, received.index)
          searchBacklog = searchQueued(c)
        })
        port.postMessage({ id: received.id, searchBacklog })
      } catch (err) {
        port.postMessage({ id: received.id, error: { message: message(err), code: (err as { code?: string } | null)?.code } })
      }
      return
    }
    // Each body's ops, or what it is instead (parsed, not JSON); the batches of hot ops are applied together.
    const outcomes: Array<HotOp[] | { parsed: unknown } | { notJson: true }> = 'inbox' in received ? received.bodies.map(([at, length, compact]) => opsOfBody(received.inbox, at, length, compact)) : [received.ops]
    const batches = outcomes.filter((o): o is HotOp[] => Array.isArray(o))
    try {
      if (batches.length === 0) {
        port.postMessage({ id: received.id, outcomes })
        return
      }
      const c = (open ??= connect())
      const { done, searchBacklog } = applyBatches(c, batches)
      let next = 0
      port.postMessage({ id: received.id, outcomes: outcomes.map((o) => (Array.isArray(o) ? done[next++] : o)), searchBacklog })
    } catch (err) {
      port.postMessage({ id: received.id, error: { message: message(err), code: (err as { code?: string } | null)?.code } })
    }
  })
}

// The functions by the names they have here: a bundler may rename a function (name and
// declaration alike), so the call below names each by its own .name.
const LIMITS: ThreadLimits = { maxOps: MAX_OPS_PER_BATCH, maxForgotten: MAX_FORGOTTEN_PER_OP, pieceChars: PIECE_CHARS }
const THREAD_SOURCE = [
  'var __name = (f) => f;',
  ...[coveredParams, entryParams, isEmptyObject, pushEntryParams, storedKeyOf, urlNeedsFix, holdingParams, holdingByKeyParams, nodeParams, prepareHotStatements, applyHotOp, applyHotOps, indexQueuedNow].map(String),
  ...[splitBatch, parseBatch, isRecord, isStr, isTime, isWhole, parseEntry, parseHotOp, expandStored, opsListOf, parseHotBatch].map(String),
  `(${applyThread.toString()})({ prepareHotStatements: ${prepareHotStatements.name}, applyHotOp: ${applyHotOp.name}, applyHotOps: ${applyHotOps.name}, indexQueuedNow: ${indexQueuedNow.name}, parseBatch: ${parseBatch.name}, parseHotBatch: ${parseHotBatch.name} }, ${JSON.stringify(HOT_SQL)}, ${JSON.stringify(SEARCH_INDEX_SQL)}, ${JSON.stringify(LIMITS)})`,
].join('\n')
