// WAL checkpoints on a thread of their own.
//
// In WAL mode every commit appends its pages to the -wal file, and SQLite
// copies them back into the database file (a checkpoint) once the WAL holds
// wal_autocheckpoint pages: by default inside the COMMIT that crossed the
// line, on whatever thread committed. better-sqlite3 is synchronous, so on
// the primary that was the event loop: a batch of 1,000 stored ops writes
// about 2,500 pages, and every commit also copied them back and synced the
// file, tens of ms (59 ms measured at 100,000 entries) during which no
// request, health probe or new connection was served.
//
// Here a worker thread holds a connection of its own to the same file and
// runs PASSIVE checkpoints on a timer. PASSIVE never waits for readers or
// writers (the writer keeps appending to the WAL meanwhile), so the thread
// never holds up the event loop's transactions. The writing connection keeps
// a much higher wal_autocheckpoint as a backstop, so the WAL stays bounded if
// this thread ever falls behind or dies.
//
// A node's manifest runtime (runtime.ts) runs the same checkpoints on the
// writer's apply thread instead (apply-thread.ts checkpointIntervalMs): a
// thread is an isolate of its own, its heap, stacks and Node's bootstrap:
// a node at rest took 7 MB less without this one. It remains for a handle opened
// with checkpointInBackground true and no writer of its own.

import { createRequire } from 'node:module'
import type { Worker } from 'node:worker_threads'
import { startWorker } from '../thread-heap.ts'
import { lowerThisThreadSource } from '../thread-priority.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'

/** Pages the writing connection lets the WAL reach before it checkpoints itself (backstop). */
export const BACKSTOP_WAL_PAGES = 16_384

/** Pause between checkpoints, here and on the apply thread (apply-thread.ts): at a saturated primary the WAL stays a few tens of MB. */
export const CHECKPOINT_INTERVAL_MS = 200

export interface CheckpointerOptions {
  /** The database file (not ':memory:'). */
  path: string
  /** Pause between checkpoints. Default CHECKPOINT_INTERVAL_MS. */
  intervalMs?: number
  log?: ManifestLog
}

export interface CheckpointStats {
  /** Checkpoints that copied pages back into the database file. */
  runs: number
  /** WAL frames those checkpoints copied back, summed. */
  frames: number
  lastError: string | undefined
}

export interface Checkpointer {
  stats(): CheckpointStats
  /** Run a last checkpoint, close the thread's connection and end the thread. */
  close(): Promise<void>
}

interface ThreadMessage {
  kind: 'checkpointed' | 'error' | 'closed'
  frames?: number
  error?: string
}

export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const log = options.log ?? jsonLog
  const stats: CheckpointStats = { runs: 0, frames: 0, lastError: undefined }
  // The thread loads the same better-sqlite3 as this module does (under the bundle too).
  const resolveFrom = createRequire(import.meta.url).resolve('better-sqlite3')
  const worker = startWorker(WORKER_SOURCE, { workerData: { path: options.path, intervalMs: Math.max(10, options.intervalMs ?? CHECKPOINT_INTERVAL_MS), resolveFrom } }, 'manifest checkpoint')
  // Closing the database ends it; an open handle alone must not keep the process alive.
  worker.unref()
  let closed: (() => void) | undefined
  const ended = new Promise<void>((resolve) => (closed = resolve))
  worker.on('message', (m: ThreadMessage) => {
    if (m.kind === 'checkpointed') {
      stats.runs++
      stats.frames += m.frames ?? 0
    } else if (m.kind === 'error') {
      if (stats.lastError !== m.error) log('warn', 'WAL checkpoint failed on the checkpoint thread; the writer checkpoints itself past its backstop', { error: m.error })
      stats.lastError = m.error
    }
  })
  worker.on('error', (err) => {
    stats.lastError = describeError(err)
    log('error', 'the WAL checkpoint thread failed; the writer checkpoints itself past its backstop', { error: stats.lastError })
  })
  worker.on('exit', () => closed?.())
  return {
    stats: () => ({ ...stats }),
    async close() {
      worker.postMessage('close')
      // A thread stuck in a checkpoint is not waited for forever.
      const timer = setTimeout(() => void worker.terminate(), 5_000)
      await ended
      clearTimeout(timer)
    },
  }
}

/**
 * The thread's body, run as a script of its own (eval): it must not refer
 * to anything outside this function.
 */
function checkpointThread(): void {
  const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads')
  const { createRequire: requireFrom } = process.getBuiltinModule('node:module')
  const data = workerData as { path: string; intervalMs: number; resolveFrom: string }
  type Handle = { pragma(source: string): unknown; close(): void }
  const SQLite = requireFrom(data.resolveFrom)(data.resolveFrom) as new (path: string, options: { fileMustExist: boolean }) => Handle
  const port = parentPort!
  let db: Handle | undefined
  const checkpoint = (): void => {
    try {
      db ??= new SQLite(data.path, { fileMustExist: true })
      const [result] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ busy: number; log: number; checkpointed: number }>
      if (!result) return
      // nBackfill (checkpointed) counts from the WAL's last restart: report the progress since the previous run.
      const moved = result.checkpointed >= lastCheckpointed ? result.checkpointed - lastCheckpointed : result.checkpointed
      lastCheckpointed = result.checkpointed
      if (moved > 0) port.postMessage({ kind: 'checkpointed', frames: moved })
    } catch (err) {
      const code = (err as { code?: string }).code ?? ''
      // Another connection is checkpointing right now: the next run catches up.
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return
      port.postMessage({ kind: 'error', error: err instanceof Error ? err.message : String(err) })
    }
  }
  let lastCheckpointed = 0
  const timer = setInterval(checkpoint, data.intervalMs)
  port.on('message', (m: unknown) => {
    if (m !== 'close') return
    clearInterval(timer)
    checkpoint()
    try {
      db?.close()
    } finally {
      port.close()
    }
  })
}

// Below the event loop (thread-priority.ts): PASSIVE checkpoints may lag, the writer's backstop bounds the WAL.
const WORKER_SOURCE = `var __name = (f) => f;\n${lowerThisThreadSource('manifest checkpoint')}\n(${checkpointThread.toString()})()`
