// The manifest writer: every write to the shared manifest goes through here,
// off the request path. Callers submit() an op and move on; a background loop
// delivers batches.
//
//  - DirectWriter applies batches to the local SQLite file (the primary, or
//    every node when there is no LiteFS): one transaction every ~50 ms instead
//    of one fsync per cached response. With applyThread, the hot ops go to a
//    thread with its own connection (apply-thread.ts), off the event loop.
//  - RemoteWriter, on a LiteFS replica, POSTs batches to the primary's
//    /_caje/internal/manifest, retrying with exponential backoff while the
//    primary is away. Its queue is bounded: past the bound, ops are dropped,
//    counted and logged, because a cache must keep serving even when its
//    bookkeeping cannot keep up.
//  - createManifestWriter() follows the node's role (primary.ts) and moves
//    queued ops, in order, from one to the other when LiteFS moves the primary.

import { randomUUID } from 'node:crypto'
import type { Worker } from 'node:worker_threads'
import type { CompiledQuery, Kysely } from 'kysely'
import type { Database } from './database.ts'
import { CHECKPOINT_INTERVAL_MS, type CheckpointStats } from './checkpointer.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { ApplyThreadGoneError, startApplyThread, type ApplyThread, type BodyApplyResult, type ThreadApplyResult } from './apply-thread.ts'
import { BATCH_FORMS_HEADER, COMPACT_CONTENT_TYPE, parseBody } from './batch-body.ts'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { isHotOp } from './statements.ts'
import type { HotOp } from './statements.ts'
import { sqliteHandleOf } from './database.ts'
import { applyOps, isTransientDbError, opWeight } from './ops.ts'
import { indexQueued } from './search.ts'
import type { ApplyOptions, ApplyResult, ManifestOp } from './ops.ts'
import type { ClusterRole, RoleSource } from './primary.ts'

export type { ManifestOp } from './ops.ts'

/** Where a replica sends its batches, under the primary's base URL. */
export const MANIFEST_OPS_PATH = '/_caje/internal/manifest'

/**
 * Request header of a replica that sends its next batch while this one is applied (RemoteWriter):
 * `<line> <index>` (the line's name, this batch's place in it from 0), and ` last` on its last batch.
 */
export const PIPELINE_HEADER = 'x-caje-batch-line'
/**
 * Response header saying the batch is in line (PIPELINE_HEADER, internal-routes.ts): the answer's status is 200
 * and its body, once the batch is done, the JSON answer with its own `status`.
 */
export const QUEUED_HEADER = 'x-caje-batch-queued'

export interface WriterStats {
  mode: 'direct' | 'remote'
  /** Database path or primary URL, for the admin status page. */
  target: string | undefined
  /** Ops waiting (including a batch being delivered). */
  queued: number
  submitted: number
  /** Ops applied to the manifest (here, or by the primary). */
  written: number
  /** Ops refused because the queue was full or the writer closed. */
  dropped: number
  /** Ops delivered but refused as invalid, or that failed to apply; never retried. */
  rejected: number
  /** Successful deliveries (transactions here, requests to the primary). */
  batches: number
  /** Delivery attempts that failed and will be retried. */
  failedAttempts: number
  /**
   * The pause before the next attempt after a failed one, before its ±20 % jitter: doubles with
   * each failure in a row, up to the writer's maximum; 0 once a delivery succeeds.
   */
  backoffMs: number
  lastError: string | undefined
  /** Epoch ms of the last successful delivery. */
  lastWriteAt: number | undefined
}

export interface FlushOptions {
  /** Reject if what was queued at the call is not delivered in time. Default 30 s. */
  timeoutMs?: number
}

export interface ManifestWriter {
  /** Queue one op. Never throws and never waits: safe on the request path. */
  submit(op: ManifestOp): void
  /**
   * Queue one op ahead of every op not yet being delivered, in a batch of its own, and resolve
   * once it is delivered (or dropped as invalid). For a purge: ops are idempotent and a purge
   * covers only entries stored before it (by their stored time), so recording it need not wait
   * behind a backlog of 'stored' ops, and the ops it overtakes lose nothing.
   */
  submitFirst(op: ManifestOp, options?: FlushOptions): Promise<void>
  /** Resolve once every op submitted before the call is delivered (or dropped as invalid). */
  flush(options?: FlushOptions): Promise<void>
  /** Stop accepting ops, try to deliver the queue, release resources. */
  close(): Promise<void>
  stats(): WriterStats
}

/** A writer was stopped (role change, shutdown) before a flush completed; the switcher retries on its successor. */
export class WriterStoppedError extends Error {
  constructor() {
    super('manifest writer stopped before the flush completed')
    this.name = 'WriterStoppedError'
  }
}

export interface BatchOptions {
  /** Wait this long after the first queued op before delivering, to gather a batch. */
  intervalMs?: number
  /** Most ops in one transaction / request. */
  maxBatch?: number
  /** Most ops waiting; more are dropped and counted. */
  maxQueue?: number
  /** First retry delay after a failure; doubles up to maxBackoffMs. */
  backoffMs?: number
  maxBackoffMs?: number
  /** How long close() keeps trying to deliver the queue. */
  closeTimeoutMs?: number
  log?: ManifestLog
}

type Outcome =
  | { kind: 'ok'; result: ApplyResult }
  | { kind: 'retry'; error: string }
  | { kind: 'reject'; error: string }
  /**
   * The first `delivered` ops of the batch were applied (`result`), the `rejected` after them
   * refused as invalid; the rest stays first in the queue, tried again after a backoff when
   * `retry` says so (else at once).
   */
  | { kind: 'partial'; delivered: number; result: ApplyResult; rejected: number; error: string; retry: boolean }

interface FlushWaiter {
  target: number
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/** Queue, batching, backoff and flush bookkeeping shared by both writers; subclasses only deliver. */
export abstract class BatchWriter implements ManifestWriter {
  protected readonly log: ManifestLog
  protected readonly intervalMs: number
  protected maxBatch: number
  /** Most batches of maxBatch ops one delivery takes (a RemoteWriter sends them one after the other, two in flight). */
  protected batchesPerDelivery = 1
  private readonly maxQueue: number
  private readonly baseBackoffMs: number
  private readonly maxBackoffMs: number
  private readonly closeTimeoutMs: number

  // The queue is queue[head..]; the first `inFlight` of those are being delivered.
  private queue: ManifestOp[] = []
  private head = 0
  private inFlight = 0
  /** queue[head + inFlight ..] starts with this many ops put first (submitFirst), in their order. */
  private first = 0
  /** Whether the batch in flight is made of ops put first (a failed one is first again). */
  private inFlightFirst = false
  private running: Promise<void> | undefined
  private abortInFlight: AbortController | undefined
  private timer: NodeJS.Timeout | undefined
  private timerDue = 0
  private backoff = 0
  private retryAt = 0
  private paused = false
  private closing = false
  private stopped = false
  /** Ops that left the queue for good (delivered, rejected). flush() waits on this. */
  private settled = 0
  private waiters: FlushWaiter[] = []
  private lastOverflowLog = 0
  private overflowSinceLog = 0
  private lastRetryLog = 0

  private counters = { submitted: 0, written: 0, dropped: 0, rejected: 0, batches: 0, failedAttempts: 0 }
  private lastError: string | undefined
  private lastWriteAt: number | undefined

  protected constructor(options: BatchOptions) {
    this.log = options.log ?? jsonLog
    this.intervalMs = options.intervalMs ?? 50
    this.maxBatch = Math.max(1, options.maxBatch ?? 1000)
    this.maxQueue = Math.max(1, options.maxQueue ?? 100_000)
    this.baseBackoffMs = options.backoffMs ?? 100
    this.maxBackoffMs = options.maxBackoffMs ?? 10_000
    this.closeTimeoutMs = options.closeTimeoutMs ?? 5_000
  }

  protected abstract readonly mode: 'direct' | 'remote'
  protected abstract target(): string | undefined
  /** Deliver one batch. Throwing counts as a retryable failure. */
  protected abstract deliver(batch: ManifestOp[], signal: AbortSignal): Promise<Outcome>
  /** Release resources after the last delivery (close the database...). */
  protected async release(): Promise<void> {}

  submit(op: ManifestOp): void {
    if (this.closing || this.stopped) {
      this.counters.dropped++
      this.log('warn', 'manifest op submitted after the writer closed; dropped', { op: op.type })
      return
    }
    if (this.size() >= this.maxQueue) {
      this.counters.dropped++
      this.overflowSinceLog++
      const now = Date.now()
      // One line per 10 s, not one per op: an overflow happens under load.
      if (now - this.lastOverflowLog >= 10_000) {
        this.log('warn', 'manifest queue full; dropping ops', {
          mode: this.mode,
          target: this.target(),
          maxQueue: this.maxQueue,
          droppedSinceLastLog: this.overflowSinceLog,
          droppedTotal: this.counters.dropped,
          lastError: this.lastError,
        })
        this.lastOverflowLog = now
        this.overflowSinceLog = 0
      }
      return
    }
    this.queue.push(op)
    this.counters.submitted++
    this.schedule(this.size() >= this.maxBatch ? 0 : this.intervalMs)
  }

  submitFirst(op: ManifestOp, options: FlushOptions = {}): Promise<void> {
    if (this.closing || this.stopped) {
      this.submit(op) // counted and logged as dropped
      return Promise.reject(new WriterStoppedError())
    }
    // Not bounded by maxQueue: one op per purge, and a full queue is when it matters most.
    const at = this.head + this.inFlight + this.first
    this.queue.splice(at, 0, op)
    this.first++
    this.counters.submitted++
    return this.settledUpTo(this.settled + (at - this.head) + 1, options)
  }

  flush(options: FlushOptions = {}): Promise<void> {
    return this.settledUpTo(this.settled + this.size(), options)
  }

  /** Resolve once `target` ops in all have left the queue (delivered or refused). */
  private settledUpTo(target: number, options: FlushOptions): Promise<void> {
    if (this.settled >= target) return Promise.resolve()
    if (this.stopped) return Promise.reject(new WriterStoppedError())
    const timeoutMs = options.timeoutMs ?? 30_000
    return new Promise<void>((resolve, reject) => {
      const waiter: FlushWaiter = {
        target,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter)
          const pending = target - this.settled
          reject(new Error(`manifest flush timed out after ${timeoutMs} ms with ${pending} op(s) undelivered${this.lastError ? ` (last error: ${this.lastError})` : ''}`))
        }, timeoutMs),
      }
      waiter.timer.unref()
      this.waiters.push(waiter)
      // A flush is someone waiting: try now, even during a backoff.
      this.schedule(0, true)
    })
  }

  async close(): Promise<void> {
    if (this.closing || this.stopped) return
    this.closing = true
    this.paused = false
    const deadline = Date.now() + this.closeTimeoutMs
    this.clearTimer()
    // A delivery already in flight may have a longer timeout than close has left.
    const cutoff = setTimeout(() => this.abortInFlight?.abort(), this.closeTimeoutMs)
    cutoff.unref()
    try {
      while (this.size() > 0 && Date.now() < deadline) {
        if (this.running) {
          await this.running
          continue
        }
        const wait = this.retryAt - Date.now()
        if (wait > 0) await sleep(Math.min(wait, deadline - Date.now()))
        if (Date.now() >= deadline) break
        await this.runOnce(deadline - Date.now())
      }
    } finally {
      clearTimeout(cutoff)
      this.stopped = true
      this.clearTimer()
      const left = this.size()
      if (left > 0) {
        this.log('warn', 'manifest writer closed with ops not delivered', {
          mode: this.mode,
          target: this.target(),
          undelivered: left,
          lastError: this.lastError,
        })
      }
      this.failWaiters(new WriterStoppedError())
      await this.release()
    }
  }

  /**
   * Stop delivering and hand back everything not yet delivered, in order
   * (role change: the ops move to the other writer). An in-flight delivery is
   * aborted; if it had in fact arrived, redelivery is harmless (ops are idempotent).
   */
  async stop(): Promise<ManifestOp[]> {
    if (this.stopped) return []
    this.stopped = true
    this.clearTimer()
    this.abortInFlight?.abort()
    if (this.running) await this.running
    const rest = this.queue.slice(this.head)
    this.queue = []
    this.head = 0
    this.first = 0
    this.failWaiters(new WriterStoppedError())
    await this.release()
    return rest
  }

  /** Queue nothing out until resume(): lets the switcher put the previous writer's ops first. */
  pause(): void {
    this.paused = true
    this.clearTimer()
  }

  resume(): void {
    this.paused = false
    if (this.size() > 0) this.schedule(0)
  }

  /** Put ops at the front of the queue (before anything not yet in flight). Not bounded: they were accepted once. */
  prepend(ops: readonly ManifestOp[]): void {
    if (ops.length === 0) return
    if (this.stopped) {
      this.counters.dropped += ops.length
      this.log('warn', 'manifest ops handed to a stopped writer; dropped', { count: ops.length })
      return
    }
    this.queue.splice(this.head + this.inFlight, 0, ...ops)
    this.counters.submitted += ops.length
    // Whoever waits now waits for these too: they were queued before anything here.
    for (const w of this.waiters) w.target += ops.length
    this.schedule(0)
  }

  stats(): WriterStats {
    return {
      mode: this.mode,
      target: this.target(),
      queued: this.size(),
      ...this.counters,
      backoffMs: this.backoff,
      lastError: this.lastError,
      lastWriteAt: this.lastWriteAt,
    }
  }

  /** Try again now instead of waiting out the backoff (the target changed). */
  protected retryNow(): void {
    this.backoff = 0
    this.retryAt = 0
    if (this.size() > 0) this.schedule(0, true)
  }

  private size(): number {
    return this.queue.length - this.head
  }

  private schedule(delayMs: number, ignoreBackoff = false): void {
    if (this.stopped || this.paused || this.closing) return
    if (this.running) return // the running delivery reschedules when it ends
    const now = Date.now()
    let due = now + delayMs
    if (!ignoreBackoff && this.retryAt > due) due = this.retryAt
    if (this.timer && this.timerDue <= due) return
    this.clearTimer()
    this.timerDue = due
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.runOnce()
    }, Math.max(0, due - now))
    this.timer.unref()
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }

  private runOnce(budgetMs?: number): Promise<void> {
    if (this.running) return this.running
    if (this.size() === 0 || this.stopped || (this.paused && !this.closing)) return Promise.resolve()
    // maxBatch bounds the batch's weight: an op naming many variants counts for each.
    // Ops put first go alone: the batch is one short request, not 1,000 ops of backlog.
    const limit = this.first > 0 ? this.head + this.first : this.queue.length
    const most = this.maxBatch * (this.first > 0 ? 1 : this.batchesPerDelivery)
    let end = this.head
    for (let weight = 0; end < limit && (end === this.head || weight + opWeight(this.queue[end]!) <= most); end++) {
      weight += opWeight(this.queue[end]!)
    }
    const batch = this.queue.slice(this.head, end)
    this.inFlight = batch.length
    this.inFlightFirst = this.first > 0
    if (this.inFlightFirst) this.first -= batch.length
    const abort = new AbortController()
    this.abortInFlight = abort
    const signal = budgetMs === undefined ? abort.signal : AbortSignal.any([abort.signal, AbortSignal.timeout(Math.max(1, budgetMs))])
    this.running = (async () => {
      let outcome: Outcome
      try {
        outcome = await this.deliver(batch, signal)
      } catch (err) {
        outcome = { kind: 'retry', error: describeError(err) }
      }
      this.inFlight = 0
      this.abortInFlight = undefined
      if (this.stopped && outcome.kind === 'retry') return // stop() takes the batch back
      const settledOps = outcome.kind === 'retry' ? 0 : outcome.kind === 'partial' ? outcome.delivered + outcome.rejected : batch.length
      // Ops to try again stay at the head; put first, they stay first.
      if (this.inFlightFirst) this.first += batch.length - settledOps
      this.inFlightFirst = false
      if (outcome.kind !== 'partial') return this.settle(batch, outcome)
      // The part delivered, and the part refused, leave the queue; the rest waits for the next delivery.
      if (outcome.delivered > 0) this.settle(batch.slice(0, outcome.delivered), { kind: 'ok', result: outcome.result })
      if (outcome.rejected > 0) this.settle(batch.slice(outcome.delivered, settledOps), { kind: 'reject', error: outcome.error })
      if (outcome.retry) this.settle([], { kind: 'retry', error: outcome.error })
    })().finally(() => {
      this.running = undefined
      // Someone is waiting in flush(), or a full batch is ready: no need to gather more.
      if (this.size() > 0) this.schedule(this.waiters.length > 0 || this.size() >= this.maxBatch ? 0 : this.intervalMs)
    })
    return this.running
  }

  private settle(batch: ManifestOp[], outcome: Outcome): void {
    if (outcome.kind === 'retry') {
      this.counters.failedAttempts++
      this.lastError = outcome.error
      this.backoff = this.backoff === 0 ? this.baseBackoffMs : Math.min(this.maxBackoffMs, this.backoff * 2)
      // ±20 % jitter so replicas that lost the primary together do not retry in step.
      this.retryAt = Date.now() + Math.round(this.backoff * (0.8 + Math.random() * 0.4))
      const now = Date.now()
      if (this.backoff === this.baseBackoffMs || now - this.lastRetryLog >= 30_000) {
        this.log('warn', 'manifest delivery failed; will retry', {
          mode: this.mode,
          target: this.target(),
          queued: this.size(),
          retryInMs: this.retryAt - now,
          error: outcome.error,
        })
        this.lastRetryLog = now
      }
      return
    }
    this.head += batch.length
    this.settled += batch.length
    if (outcome.kind === 'ok') {
      this.counters.written += outcome.result.applied
      this.counters.batches++
      this.counters.rejected += outcome.result.failed
      this.lastWriteAt = Date.now()
      if (this.backoff > 0) this.log('info', 'manifest delivery recovered', { mode: this.mode, target: this.target(), queued: this.size() })
      this.backoff = 0
      this.retryAt = 0
    } else {
      this.counters.rejected += batch.length
      this.lastError = outcome.error
      this.log('error', 'manifest batch refused; dropped', { mode: this.mode, target: this.target(), ops: batch.length, error: outcome.error })
    }
    // Reclaim the delivered prefix once it dominates the array.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    this.resolveWaiters()
  }

  private resolveWaiters(): void {
    if (this.waiters.length === 0) return
    const keep: FlushWaiter[] = []
    for (const w of this.waiters) {
      if (this.settled >= w.target) {
        clearTimeout(w.timer)
        w.resolve()
      } else keep.push(w)
    }
    this.waiters = keep
  }

  private failWaiters(err: Error): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer)
      w.reject(err)
    }
    this.waiters = []
  }
}

// ── direct: this node writes the SQLite file ─────────────────────────────

export interface DirectWriterOptions extends BatchOptions {
  db: Kysely<Database>
  /** Shown in stats (the database path). */
  label?: string
  /** Runs once before the first batch (e.g. migrations after a promotion); a failure is retried with backoff. */
  prepare?: () => Promise<void>
  /** Runs when the writer stops or closes (e.g. destroy a database opened for it). */
  onRelease?: () => Promise<void> | void
  /**
   * Apply the hot ops (stores, deletes, heartbeats...) on a thread of their own (apply-thread.ts)
   * instead of on the event loop. Only for a database in a file opened writable; the rest of the
   * ops keep going through Kysely here. Default false.
   */
  applyThread?: boolean
  /** Called with each apply thread started: the first, and any started after one ended (tests). */
  onApplyThread?: (thread: Worker) => void
  /**
   * The apply thread also checkpoints the WAL (apply-thread.ts checkpointIntervalMs), for a
   * database opened with checkpointInBackground (database.ts): the thread is then
   * started with the writer rather than by its first batch, so the WAL is copied back from the
   * start. Default false.
   */
  checkpointWal?: boolean
  /** Most URL changes the apply thread leaves for the admin filter's index to take later (apply-thread.ts SEARCH_BACKLOG_ROWS). */
  searchBacklogRows?: number
}

/**
 * Queued URL changes the apply thread indexes per transaction when no batch waits: a batch that
 * arrives meanwhile waits for one such transaction at most (about 5 ms). Each transaction flushes
 * the rows it tokenized as one new segment of the FTS5 index, merges segments and commits: at 200
 * rows a chunk that was about 8 µs of the thread per URL, at 1,000 about 5 µs, so the thread keeps
 * up with a replica sending a batch of 1,000 stores at a time in the pause between two batches.
 */
const IDLE_INDEX_ROWS = 1000

/**
 * Most bodies applied in one transaction (applyWaitingBodies): a replica's batch is up to 1,000
 * ops, so a group holds the file's write lock for about 4,000 ops' time (tens of milliseconds)
 * at most, which another process writing the file waits out in its busy handler.
 */
const GROUP_BODIES = 4
/** Most bytes of bodies in one group: within the memory the apply thread keeps for bodies (apply-thread.ts). */
const GROUP_BYTES = 2 * 1024 * 1024

interface WaitingBody {
  chunks: readonly Uint8Array[]
  /** In the compact form (batch-body.ts COMPACT_CONTENT_TYPE). */
  compact: boolean
  resolve: (result: BodyApplyResult) => void
  reject: (err: unknown) => void
}

/** A replica's batch body after applyReceivedBody. */
export type ReceivedBody = { kind: 'applied'; result: ApplyResult } | { kind: 'parsed'; body: unknown } | { kind: 'not-json' }

function parsedHere(chunks: readonly Uint8Array[], compact: boolean): ReceivedBody {
  try {
    return { kind: 'parsed', body: parseBody(chunks, compact) }
  } catch {
    return { kind: 'not-json' }
  }
}

/**
 * Ops sent to the apply thread in one message (one transaction there): a whole batch (maxBatch,
 * a replica's 500 or 1,000). The event loop does not wait on it, only this process's other
 * writes to the file do, and each commit writes the pages its ops share once: 250 ops per
 * transaction cost the thread a fifth more per op, and the event loop a connection and a
 * message per 250.
 */
const THREAD_CHUNK = 1000

export class DirectWriter extends BatchWriter {
  protected readonly mode = 'direct' as const
  readonly db: Kysely<Database>
  private readonly label: string | undefined
  private prepare: (() => Promise<void>) | undefined
  private readonly onRelease: (() => Promise<void> | void) | undefined
  private indexing: Promise<void> | undefined
  private released = false
  /** The file the apply thread opens, when there is to be one. */
  private readonly threadPath: string | undefined
  private thread: ApplyThread | undefined
  private readonly checkpointWal: boolean
  private readonly onApplyThread: ((thread: Worker) => void) | undefined
  private readonly searchBacklogRows: number | undefined
  private readonly walAutocheckpointPages: number | undefined
  /** URL changes the apply thread left queued for the search index, as its last answer said. */
  private searchBacklog = 0
  private indexingOnThread: Promise<void> | undefined
  /** Replicas' bodies waiting for the apply thread (applyWaitingBodies). */
  private waitingBodies: WaitingBody[] = []
  private applyingBodies = false

  constructor(options: DirectWriterOptions) {
    super({ maxBatch: 1000, ...options })
    this.db = options.db
    this.label = options.label
    this.prepare = options.prepare
    this.onRelease = options.onRelease
    const sqlite = options.applyThread ? sqliteHandleOf(options.db) : undefined
    this.threadPath = sqlite && !sqlite.memory && !sqlite.readonly ? sqlite.name : undefined
    // The thread checkpoints as this handle does (openDatabase: past a backstop when a thread of its own checkpoints).
    this.walAutocheckpointPages = this.threadPath === undefined ? undefined : Number(sqlite!.pragma('wal_autocheckpoint', { simple: true }))
    this.onApplyThread = options.onApplyThread
    this.searchBacklogRows = options.searchBacklogRows
    this.checkpointWal = options.checkpointWal === true && this.threadPath !== undefined
    if (this.checkpointWal) this.startThread()
  }

  /** The apply thread, started when there is none. */
  private startThread(): ApplyThread {
    return (this.thread ??= startApplyThread({
      path: this.threadPath!,
      onThread: this.onApplyThread,
      searchBacklogRows: this.searchBacklogRows,
      walAutocheckpointPages: this.walAutocheckpointPages,
      ...(this.checkpointWal ? { checkpointIntervalMs: CHECKPOINT_INTERVAL_MS, log: this.log } : {}),
    }))
  }

  /** The WAL checkpoints the current apply thread ran (checkpointWal); none without one. */
  checkpoints(): CheckpointStats {
    return this.thread?.checkpoints() ?? { runs: 0, frames: 0, lastError: undefined }
  }

  /**
   * A call on the apply thread, started when there is none (the first batch, or after one
   * ended), while this writer holds its Kysely connection (see applyWithThread). A thread that
   * ended is forgotten, so the next call starts another.
   */
  private async onThread<T>(call: (thread: ApplyThread) => Promise<T>): Promise<T> {
    const thread = this.startThread()
    try {
      return await this.db.connection().execute(() => call(thread))
    } catch (err) {
      if (err instanceof ApplyThreadGoneError && this.thread === thread) this.thread = undefined
      throw err
    }
  }

  /** The apply thread's answer for a run of hot ops: the ops it dropped logged, what it left for the search index taken up. */
  private threadApplied(done: ThreadApplyResult): ApplyResult {
    this.indexWhenIdle(done.searchBacklog)
    for (const f of done.failed) this.log('error', 'manifest op dropped: it cannot be applied', { op: f.op, error: f.error })
    return { applied: done.applied, failed: done.failed.length }
  }

  protected target(): string | undefined {
    return this.label
  }

  protected async deliver(batch: ManifestOp[]): Promise<Outcome> {
    try {
      return { kind: 'ok', result: await this.applyNow(batch) }
    } catch (err) {
      if (err instanceof ApplyThreadGoneError) {
        // The next attempt starts a new thread; the ops are idempotent.
        return { kind: 'retry', error: err.message }
      }
      // Locked or read-only (LiteFS just demoted us) passes; keep the ops.
      if (isTransientDbError(err) || this.prepare) return { kind: 'retry', error: describeError(err) }
      return { kind: 'reject', error: describeError(err) }
    }
  }

  /**
   * Apply a batch a replica sent (the internal route), now and in order, the way this writer
   * applies its own: the hot ops on the apply thread, so the event loop only reads and checks the
   * request. Not queued: the replica waits for the answer and keeps the ops until then (it
   * retries on any error), and ops from different nodes need no order between them. Throws what
   * applyOps throws, ApplyThreadGoneError when the thread ended, and WriterStoppedError once this
   * writer was stopped (LiteFS moved the primary).
   */
  async applyReceived(ops: readonly ManifestOp[], options: ApplyOptions = {}): Promise<ApplyResult> {
    if (this.released) throw new WriterStoppedError()
    return this.applyNow(ops, options)
  }

  /**
   * A replica's batch as the bytes of its request body: with an apply thread, the thread parses,
   * checks and applies it (apply-thread.ts applyBodies, together with the bodies that waited
   * behind it: applyWaitingBodies), so the event loop neither parses it nor copies the ops to
   * the thread. Resolves to the result, or to the body parsed (a batch that is
   * not hot ops alone, or one that does not fit: the caller checks it with parseOps and applies
   * it with applyReceived), or 'not-json'. Throws as applyReceived does.
   */
  async applyReceivedBody(chunks: readonly Uint8Array[], compact = false): Promise<ReceivedBody> {
    if (this.released) throw new WriterStoppedError()
    if (this.threadPath === undefined) return parsedHere(chunks, compact)
    await this.prepared()
    if (this.released) throw new WriterStoppedError()
    const done = await new Promise<BodyApplyResult>((resolve, reject) => {
      this.waitingBodies.push({ chunks, compact, resolve, reject })
      this.applyWaitingBodies()
    })
    if (done.kind === 'not-json') return { kind: 'not-json' }
    if (done.kind === 'parsed') return { kind: 'parsed', body: done.body }
    return { kind: 'applied', result: this.threadApplied(done) }
  }

  /**
   * The bodies waiting for the apply thread, in groups (group commit): each group is taken once
   * this writer holds its connection, so every body that arrived while the last group was being
   * applied (other replicas' batches, or the next request of one) goes in one transaction, and
   * the thread's COMMIT and the pages the batches share are written once for all. Each sender
   * still gets its own answer (applyBodies). Never more than one group at a time.
   */
  private applyWaitingBodies(): void {
    if (this.applyingBodies) return
    this.applyingBodies = true
    void (async () => {
      try {
        while (this.waitingBodies.length > 0) {
          let group: WaitingBody[] | undefined
          try {
            if (this.released) throw new WriterStoppedError()
            const results = await this.onThread((thread) => {
              group = this.takeBodyGroup()
              return thread.applyBodies(
                group.map((b) => b.chunks),
                group.map((b) => b.compact),
              )
            })
            group!.forEach((b, i) => b.resolve(results[i]!))
          } catch (err) {
            // The file was busy or read-only, the thread ended, the writer stopped: every body of the group fails alike, and its sender retries.
            for (const b of group ?? this.takeBodyGroup()) b.reject(err)
          }
        }
      } finally {
        this.applyingBodies = false
      }
    })()
  }

  /** The next group of waiting bodies: up to GROUP_BODIES of them, and no more bytes than GROUP_BYTES unless the first alone is larger. */
  private takeBodyGroup(): WaitingBody[] {
    let bytes = 0
    let n = 0
    while (n < this.waitingBodies.length && n < GROUP_BODIES) {
      let size = 0
      for (const c of this.waitingBodies[n]!.chunks) size += c.length
      if (n > 0 && bytes + size > GROUP_BYTES) break
      bytes += size
      n++
    }
    return this.waitingBodies.splice(0, n)
  }

  private async prepared(): Promise<void> {
    if (this.prepare) {
      await this.prepare()
      this.prepare = undefined
    }
  }

  private async applyNow(batch: readonly ManifestOp[], options: ApplyOptions = {}): Promise<ApplyResult> {
    await this.prepared()
    if (this.threadPath === undefined) {
      const result = await applyOps(this.db, batch, this.log, options)
      this.indexInBackground()
      return result
    }
    const { result, onMain } = await this.applyWithThread(batch, { ...options, runSweepChunk: (statement) => this.sweepChunkOnThread(statement) })
    // The thread indexes what its own transactions queue; ops applied here may have queued more,
    // which it indexes too (a purge's 10,000 removals indexed here were seconds of short turns
    // of the loop, each with its SQLite time, its COMMIT and its rows to collect).
    if (onMain) this.indexWhenIdle(Math.max(1, this.searchBacklog))
    return result
  }

  /**
   * The batch in order: runs of hot ops on the apply thread, the rest here (applyOps). While the
   * thread applies a chunk, this writer holds its Kysely connection, so this process's other
   * handles on the file wait their turn in the file lock (database.ts) instead of in SQLite's
   * busy handler, which would stop the event loop.
   */
  private async applyWithThread(batch: readonly ManifestOp[], options: ApplyOptions): Promise<{ result: ApplyResult; onMain: boolean }> {
    const result: ApplyResult = { applied: 0, failed: 0 }
    let onMain = false
    for (let start = 0; start < batch.length; ) {
      const onThread = isHotOp(batch[start]!)
      let end = start + 1
      while (end < batch.length && isHotOp(batch[end]!) === onThread && (!onThread || end - start < THREAD_CHUNK)) end++
      const run = batch.slice(start, end)
      if (onThread) {
        if (this.released) throw new ApplyThreadGoneError('the writer was stopped')
        const done = this.threadApplied(await this.onThread((thread) => thread.apply(run as HotOp[])))
        result.applied += done.applied
        result.failed += done.failed
      } else {
        onMain = true
        const done = await applyOps(this.db, run, this.log, options)
        result.applied += done.applied
        result.failed += done.failed
      }
      start = end
    }
    return { result, onMain }
  }

  /**
   * One chunk of a purge's sweep (ops.ts sweepInChunks) on the apply thread, while this writer
   * holds its connection as for a batch: on the event loop, a chunk and its COMMIT took tens of
   * ms of a primary's turn when it was short of CPU. The entries it removes queue their URLs'
   * removal from the search index, taken up as the thread's stores' are.
   */
  private async sweepChunkOnThread(statement: CompiledQuery): Promise<number> {
    if (this.released) throw new WriterStoppedError()
    const done = await this.onThread((thread) => thread.run(statement))
    this.indexWhenIdle(done.searchBacklog)
    return done.changes
  }

  /**
   * Bring the URL search index up to date (search.ts) after the batches
   * that changed it: in chunks of a few ms, never more than one run at a
   * time, and never on the batch's own path.
   */
  private indexInBackground(): void {
    if (this.indexing || this.released) return
    this.indexing = (async () => {
      try {
        while (!this.released && (await indexQueued(this.db))) await sleep(10)
      } catch (err) {
        // Busy (another node's transaction), read-only (demoted): the next batch tries again.
        if (!isTransientDbError(err)) this.log('warn', 'indexing entry URLs for the admin filter failed; will retry after the next batch', { error: describeError(err) })
      } finally {
        this.indexing = undefined
      }
    })()
  }

  /**
   * Index what the apply thread left queued for the admin filter (its answer said how much), a
   * few hundred rows per transaction, each while this writer holds its connection as for a
   * batch: a batch that arrives waits behind one such transaction at most, and the rest waits
   * behind the batch. Never more than one run at a time.
   */
  private indexWhenIdle(backlog: number): void {
    this.searchBacklog = backlog
    if (backlog === 0 || this.indexingOnThread || this.released) return
    this.indexingOnThread = (async () => {
      try {
        while (!this.released && this.searchBacklog > 0) {
          // After the answer to the batch is on its way.
          await nextTurn()
          const thread = this.thread
          if (thread === undefined || this.released) return
          this.searchBacklog = (await this.db.connection().execute(() => thread.indexSearch(IDLE_INDEX_ROWS))).searchBacklog
        }
      } catch (err) {
        // Busy (another process's transaction), read-only (demoted), the thread ended: the next batch tries again.
        if (!isTransientDbError(err) && !(err instanceof ApplyThreadGoneError)) {
          this.log('warn', 'indexing entry URLs for the admin filter failed; will retry after the next batch', { error: describeError(err) })
        }
      } finally {
        this.indexingOnThread = undefined
      }
    })()
  }

  protected override async release(): Promise<void> {
    this.released = true
    await this.indexingOnThread
    await this.indexing
    const thread = this.thread
    this.thread = undefined
    await thread?.close()
    try {
      await this.onRelease?.()
    } catch (err) {
      this.log('error', 'releasing the manifest database failed', { error: describeError(err) })
    }
  }
}

// ── remote: a replica sends its ops to the primary ──────────────────────

export interface RemoteWriterOptions extends BatchOptions {
  /** The primary's base URL (e.g. http://machine.vm.app.internal:8080); undefined while unknown. */
  primaryUrl: string | undefined
  clusterSecret: string
  /** Sent as X-Caje-Node so the primary's logs say who sent a batch. */
  nodeId?: string
  /** Per-request timeout. */
  requestTimeoutMs?: number
  /** Send up to PIPELINED_BATCHES batches per delivery, the next while the primary applies the last (default true). */
  pipelined?: boolean
}

export class RemoteWriter extends BatchWriter {
  protected readonly mode = 'remote' as const
  private primaryUrl: string | undefined
  private readonly clusterSecret: string
  private readonly nodeId: string | undefined
  private readonly requestTimeoutMs: number
  /**
   * The primary whose batch endpoint announced that it reads the compact form (its answers'
   * BATCH_FORMS_HEADER): batches go to it compact. Until then, and for a primary that refused
   * a compact batch (compactRefusedBy), they go as `{"ops": [...]}`, which every version reads.
   */
  private compactTo: string | undefined
  private compactRefusedBy: string | undefined

  constructor(options: RemoteWriterOptions) {
    super({ maxBatch: 500, backoffMs: 200, maxBackoffMs: 10_000, ...options })
    this.primaryUrl = options.primaryUrl?.replace(/\/+$/, '')
    this.clusterSecret = options.clusterSecret
    this.nodeId = options.nodeId
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000
    this.batchesPerDelivery = options.pipelined === false ? 1 : PIPELINED_BATCHES
  }

  protected target(): string | undefined {
    return this.primaryUrl
  }

  /** LiteFS moved the primary: send there from now on, starting at once. */
  setPrimaryUrl(url: string | undefined): void {
    const next = url?.replace(/\/+$/, '')
    if (next === this.primaryUrl) return
    this.primaryUrl = next
    // A new primary may be of another version: the JSON form until it announces the compact one.
    this.compactTo = undefined
    this.compactRefusedBy = undefined
    if (next) this.retryNow()
  }

  /**
   * The batch as requests of at most maxBatch ops each, in order. With more than one, each
   * names this writer's line (PIPELINE_HEADER) and the next goes as soon as the primary answers
   * that the one before it is in line (its answer's head), so the primary reads the next while
   * its apply thread applies the last: two in flight at most. The primary applies a line's
   * batches in order, and none after one it did not apply; the batches delivered are settled,
   * and the rest waits in the queue to be sent again, in order.
   */
  protected async deliver(batch: ManifestOp[], signal: AbortSignal): Promise<Outcome> {
    const base = this.primaryUrl
    if (!base) return { kind: 'retry', error: 'LiteFS names no primary yet; the batch waits in the queue' }
    const pieces: ManifestOp[][] = []
    let weight = Infinity
    for (const op of batch) {
      const w = opWeight(op)
      if (weight + w > this.maxBatch) {
        pieces.push([])
        weight = 0
      }
      pieces[pieces.length - 1]!.push(op)
      weight += w
    }
    if (pieces.length === 1) return this.post(base, pieces[0]!, signal, undefined).answer
    const posts: Array<{ ops: ManifestOp[]; sent: BatchPost }> = []
    // A line of its own per delivery: its batches are in the primary's line in the order sent.
    const line = randomUUID()
    const sendNext = () => {
      const index = posts.length
      const ops = pieces[index]!
      posts.push({ ops, sent: this.post(base, ops, signal, `${line} ${index}${index === pieces.length - 1 ? ' last' : ''}`) })
    }
    sendNext()
    const result: ApplyResult = { applied: 0, failed: 0 }
    let delivered = 0
    for (let at = 0; at < posts.length; at++) {
      const { ops, sent } = posts[at]!
      // The next batch goes once this one is in line (an older primary answers only when it is applied).
      if (posts.length < pieces.length && posts.length === at + 1 && (await sent.queued)) sendNext()
      const outcome = await sent.answer
      if (outcome.kind === 'ok') {
        delivered += ops.length
        result.applied += outcome.result.applied
        result.failed += outcome.result.failed
        if (posts.length < pieces.length && posts.length === at + 1) sendNext()
        continue
      }
      // Not applied: the primary applies none of the line after it. Their answers are awaited, so nothing is left in flight.
      await Promise.all(posts.slice(at + 1).map((p) => p.sent.answer))
      if (outcome.kind === 'partial') return outcome
      return { kind: 'partial', delivered, result, rejected: outcome.kind === 'reject' ? ops.length : 0, error: outcome.error, retry: outcome.kind === 'retry' }
    }
    return { kind: 'ok', result }
  }

  /** One request of a delivery (in its line, when named): `queued` once the primary has the batch in line (true) or has answered outright (false). */
  private post(base: string, batch: ManifestOp[], signal: AbortSignal, inLine: string | undefined): BatchPost {
    const compact = this.compactTo === base && this.compactRefusedBy !== base
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.clusterSecret}`,
      'content-type': compact ? COMPACT_CONTENT_TYPE : 'application/json',
    }
    if (this.nodeId) headers['x-caje-node'] = this.nodeId
    if (inLine !== undefined) headers[PIPELINE_HEADER] = inLine
    let queued!: (inLine: boolean) => void
    const inLineAt = new Promise<boolean>((resolve) => (queued = resolve))
    const answer = (async (): Promise<Outcome> => {
      let res: Response
      try {
        res = await fetch(`${base}${MANIFEST_OPS_PATH}`, {
          method: 'POST',
          headers,
          body: batchBody(batch, compact),
          signal: AbortSignal.any([signal, AbortSignal.timeout(this.requestTimeoutMs)]),
          redirect: 'manual',
        })
      } catch (err) {
        queued(false)
        return { kind: 'retry', error: `POST ${base}${MANIFEST_OPS_PATH}: ${describeCause(err)}` }
      }
      this.noteForms(base, res.headers.get(BATCH_FORMS_HEADER))
      const answeredLater = res.ok && res.headers.get(QUEUED_HEADER) === '1'
      queued(answeredLater)
      if (!answeredLater) return this.outcomeOf(res.status, await res.text().catch(() => ''), batch, compact ? base : undefined)
      // In line: the status is in the body, which comes once the batch is applied (or not).
      let text: string
      try {
        text = await res.text()
      } catch (err) {
        return { kind: 'retry', error: `POST ${base}${MANIFEST_OPS_PATH}: the answer broke off: ${describeCause(err)}` }
      }
      const status = safeJson(text)?.status
      if (typeof status !== 'number') return { kind: 'retry', error: `POST ${base}${MANIFEST_OPS_PATH}: the answer ended without a status` }
      return this.outcomeOf(status, text, batch, compact ? base : undefined)
    })()
    return { queued: inLineAt, answer }
  }

  /** The forms beside JSON the primary at `base` announced in an answer (BATCH_FORMS_HEADER): compact from now on, or JSON when it no longer says so. */
  private noteForms(base: string, forms: string | null): void {
    if (base !== this.primaryUrl) return
    const compact = forms !== null && forms.split(',').some((f) => f.trim().toLowerCase() === 'compact')
    if (compact) this.compactTo = base
    else if (this.compactTo === base) this.compactTo = undefined
  }

  /**
   * What the primary's answer (status and body) means for the batch sent; `compactTo`: the
   * primary it was sent to in the compact form. A compact batch it refuses goes again as JSON
   * (retry), and every batch after it: nothing is lost to a primary that reads the form otherwise.
   */
  private outcomeOf(status: number, text: string, batch: ManifestOp[], compactTo?: string): Outcome {
    const outcome = this.outcomeOfStatus(status, text, batch)
    if (outcome.kind !== 'reject' || compactTo === undefined) return outcome
    this.compactRefusedBy = compactTo
    return { kind: 'retry', error: `${outcome.error}; sent again as application/json` }
  }

  private outcomeOfStatus(status: number, text: string, batch: ManifestOp[]): Outcome {
    if (status >= 200 && status < 300) {
      const body = safeJson(text)
      const applied = typeof body?.applied === 'number' ? body.applied : batch.length
      const failed = typeof body?.failed === 'number' ? body.failed : 0
      return { kind: 'ok', result: { applied, failed } }
    }
    const detail = `primary answered ${status}: ${errorText(text)}`
    if (status === 413 && batch.length > 1) {
      // Too large for the primary's body limit: smaller batches from now on.
      this.maxBatch = Math.max(1, Math.floor(batch.length / 2))
      return { kind: 'retry', error: detail }
    }
    // Malformed for the primary (another version?): retrying cannot help.
    if (status === 400 || status === 413 || status === 415 || status === 422) return { kind: 'reject', error: detail }
    // 401/403 (secret mismatch), 409/503 (not the primary yet/any more), 5xx:
    // keep the ops and retry; the queue bound limits what this can cost.
    return { kind: 'retry', error: detail }
  }
}

/** A request of RemoteWriter.deliver in flight. */
interface BatchPost {
  queued: Promise<boolean>
  answer: Promise<Outcome>
}

/**
 * Batches one RemoteWriter delivery takes when enough ops wait: sent one after the other, the
 * next while the primary applies the last (RemoteWriter.deliver). Between two deliveries the
 * primary's apply thread waits for a round trip, once per this many batches.
 */
export const PIPELINED_BATCHES = 4

/** Ops turned to text at a time when building a batch's body (batchBody). */
const BODY_OPS_PER_PIECE = 100

/**
 * `JSON.stringify({ ops })`, byte for byte, as UTF-8, made a hundred ops at a time: the text of
 * a whole batch of 1,000 stored ops is about 300 KB, and V8 puts a string of 128 KiB or more on
 * pages of its own, mapped fresh each time (batch-body.ts says what that cost on the primary).
 * `compact`: the compact form instead (batch-body.ts COMPACT_CONTENT_TYPE), `{"c": [...]}` with
 * each stored op an array (compactOp), about half the bytes.
 */
export function batchBody(ops: readonly ManifestOp[], compact = false): Uint8Array<ArrayBuffer> {
  const parts: Buffer[] = [Buffer.from(compact ? '{"c":[' : '{"ops":[')]
  let length = parts[0]!.length
  for (let at = 0; at < ops.length; at += BODY_OPS_PER_PIECE) {
    const slice = ops.slice(at, at + BODY_OPS_PER_PIECE)
    const list = JSON.stringify(compact ? slice.map(compactOp) : slice)
    // The pieces' lists joined into one: each without its brackets, a comma between two.
    const part = Buffer.from(`${at > 0 ? ',' : ''}${list.slice(1, -1)}`)
    parts.push(part)
    length += part.length
  }
  parts.push(Buffer.from(']}'))
  const body = new Uint8Array(length + 2)
  let at = 0
  for (const part of parts) {
    body.set(part, at)
    at += part.length
  }
  return body
}

/** An op as the compact form carries it: a stored op as the array hot-op-shapes.ts expandStored reads, any other as it is. */
export function compactOp(op: ManifestOp): unknown {
  if (op.type !== 'stored') return op
  const e = op.entry
  return ['s', op.nodeId, e.key, e.variant, e.host, e.url, e.status, e.size, e.contentType, e.storedAt, e.staleAt, e.deleteAt, e.tags, e.varyHeaders]
}

function safeJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text)
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

function errorText(text: string): string {
  const body = safeJson(text)
  const msg = typeof body?.error === 'string' ? body.error : text
  return msg.slice(0, 200)
}

/** fetch() says only "fetch failed"; the useful part (ECONNREFUSED...) is in the cause. */
function describeCause(err: unknown): string {
  const cause = (err as { cause?: unknown } | null)?.cause
  return cause ? `${describeError(err)} (${describeError(cause)})` : describeError(err)
}

// ── the switcher: Direct on the primary, Remote on a replica ────────────

export interface CreateManifestWriterOptions {
  role: RoleSource
  /** Called each time this node becomes the writer: at start when primary, and on promotion. */
  openDirect(): DirectWriter
  /** Options of the RemoteWriter used while this node is a replica. */
  remote: Omit<RemoteWriterOptions, 'primaryUrl'>
  log?: ManifestLog
}

export interface SwitchingManifestWriter extends ManifestWriter {
  stats(): WriterStats & { role: ClusterRole['kind'] }
  /** The writable database while this node is the writer, else undefined (the internal route uses it). */
  writableDb(): Kysely<Database> | undefined
  /**
   * Apply a replica's batch to `db` (what writableDb() answered) as the writer applies its own
   * (DirectWriter.applyReceived). Throws WriterStoppedError when this node no longer writes `db`.
   */
  applyReceived(db: Kysely<Database>, ops: readonly ManifestOp[], options?: ApplyOptions): Promise<ApplyResult>
  /** The same for a batch as the bytes of its body (DirectWriter.applyReceivedBody). */
  applyReceivedBody(db: Kysely<Database>, chunks: readonly Uint8Array[], compact: boolean): Promise<ReceivedBody>
}

export function createManifestWriter(options: CreateManifestWriterOptions): SwitchingManifestWriter {
  const log = options.log ?? jsonLog
  const forRole = (role: ClusterRole): DirectWriter | RemoteWriter =>
    role.kind === 'primary' ? options.openDirect() : new RemoteWriter({ log, ...options.remote, primaryUrl: role.primaryUrl })

  let current = forRole(options.role.current())
  let switching: Promise<void> = Promise.resolve()
  let closed = false
  // Counters of writers retired by role changes, so stats() stay cumulative.
  const retired = { submitted: 0, written: 0, dropped: 0, rejected: 0, batches: 0, failedAttempts: 0 }

  const unsubscribe = options.role.subscribe((role) => {
    if (closed) return
    if (role.kind === 'replica' && current instanceof RemoteWriter) {
      current.setPrimaryUrl(role.primaryUrl)
      return
    }
    if ((role.kind === 'primary') === current instanceof DirectWriter) return
    let next: DirectWriter | RemoteWriter
    try {
      next = forRole(role)
    } catch (err) {
      log('error', 'cannot switch the manifest writer to the new role; keeping the old one', { role: role.kind, error: describeError(err) })
      return
    }
    const old = current
    // New ops queue behind the old writer's leftovers: pause the new writer,
    // take the old one's queue, put it first, then start.
    next.pause()
    current = next
    switching = switching.then(async () => {
      const rest = await old.stop()
      const s = old.stats()
      retired.submitted += s.submitted - rest.length
      retired.written += s.written
      retired.dropped += s.dropped
      retired.rejected += s.rejected
      retired.batches += s.batches
      retired.failedAttempts += s.failedAttempts
      next.prepend(rest)
      next.resume()
      log('info', 'manifest writer switched', { mode: next.stats().mode, target: next.stats().target, handedOver: rest.length })
    })
  })

  return {
    submit(op) {
      current.submit(op)
    },
    async submitFirst(op, flushOptions = {}) {
      const deadline = Date.now() + (flushOptions.timeoutMs ?? 30_000)
      try {
        await current.submitFirst(op, flushOptions)
      } catch (err) {
        // The writer was swapped first: the op moved, ahead of the new writer's own, with the rest.
        if (!(err instanceof WriterStoppedError) || closed || Date.now() >= deadline) throw err
        await this.flush({ timeoutMs: Math.max(1, deadline - Date.now()) })
      }
    },
    async flush(flushOptions = {}) {
      const deadline = Date.now() + (flushOptions.timeoutMs ?? 30_000)
      for (;;) {
        await switching
        const writer = current
        try {
          await writer.flush({ timeoutMs: Math.max(1, deadline - Date.now()) })
          if (writer === current) return
        } catch (err) {
          // The writer was swapped during the flush: its ops moved to the new one.
          if (!(err instanceof WriterStoppedError) || closed || Date.now() >= deadline) throw err
        }
      }
    },
    async close() {
      if (closed) return
      closed = true
      unsubscribe()
      await switching
      await current.close()
    },
    stats() {
      const s = current.stats()
      return {
        ...s,
        submitted: s.submitted + retired.submitted,
        written: s.written + retired.written,
        dropped: s.dropped + retired.dropped,
        rejected: s.rejected + retired.rejected,
        batches: s.batches + retired.batches,
        failedAttempts: s.failedAttempts + retired.failedAttempts,
        role: options.role.current().kind,
      }
    },
    writableDb() {
      return current instanceof DirectWriter ? current.db : undefined
    },
    applyReceived(db, ops, applyOptions) {
      // Demoted (or promoted again, with another handle) since the route asked: the replica retries.
      if (!(current instanceof DirectWriter) || current.db !== db) return Promise.reject(new WriterStoppedError())
      return current.applyReceived(ops, applyOptions)
    },
    applyReceivedBody(db, chunks, compact) {
      if (!(current instanceof DirectWriter) || current.db !== db) return Promise.reject(new WriterStoppedError())
      return current.applyReceivedBody(chunks, compact)
    },
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
}
