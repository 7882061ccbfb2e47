// Small body files read many at a time on a thread of their own, for a peer's
// populate. A hit reads a small verified body synchronously (content-file.ts
// SYNC_READ_BYTES): one open, fstat, read and close cost less than the
// thread-pool round trips. But a peer copying 10,000 objects asks for 128 per
// request from several requests at once, and those synchronous calls (opening
// a path three directories deep, mostly) held the event loop for tens of
// milliseconds per turn: a health check or a client's request waited behind
// them. Here the event loop posts one message per batch and gets every body
// back in one transferred buffer.
//
// Integrity is kept as on the event loop: a file whose signature (inode, size,
// mtime, ctime) is the one seen intact before is trusted, any other is hashed
// on this thread and must match the integrity the index holds.

import type { Worker } from 'node:worker_threads'
import { startWorker } from '../thread-heap.ts'
import { lowerThisThreadSource } from '../thread-priority.ts'
import { CONTENT_ALGORITHMS } from './content-file.ts'
import type { FileSignature } from './entry-index.ts'

/** One body file to read whole: where, how large, and what vouches for it. */
export interface BodyFile {
  path: string
  size: number
  integrity: string
  /** The signature the file had when it was last seen intact; a file that still has it is not hashed. */
  verified: FileSignature | undefined
}

export type BodyFileResult =
  /** `signature` is the file's now; `hashed`: it was hashed (and matched) on the way. */
  | { ok: true; body: Buffer; signature: FileSignature; hashed: boolean }
  /** missing: no file at the path; corrupt: another size or digest; failed: any other error (EIO, EMFILE...). */
  | { ok: false; reason: 'missing' | 'corrupt' | 'failed'; message?: string }

type PostedResult = { ok: true; at: number; signature: FileSignature; hashed: boolean } | { ok: false; reason: 'missing' | 'corrupt' | 'failed'; message?: string }

interface ReplyMessage {
  results: PostedResult[]
  arena: ArrayBuffer
}

export class BodyReader {
  #worker: Worker | undefined
  /** Batches posted and not answered yet, oldest first (the thread answers in order). */
  #waiting: Array<{ files: BodyFile[]; resolve: (results: BodyFileResult[]) => void }> = []
  #closed = false

  /** Reads every file whole; one result per file, in order. Never rejects: failures are results. */
  read(files: BodyFile[]): Promise<BodyFileResult[]> {
    if (this.#closed) return Promise.resolve(files.map(() => ({ ok: false, reason: 'failed', message: 'the cache is closed' }) as const))
    if (files.length === 0) return Promise.resolve([])
    return new Promise((resolve) => {
      this.#waiting.push({ files, resolve })
      this.#ensureWorker().postMessage(files)
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    const worker = this.#worker
    this.#worker = undefined
    this.#fail('the cache is closed')
    await worker?.terminate()
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker
    const worker = startWorker(WORKER_SOURCE, { workerData: { algorithms: CONTENT_ALGORITHMS } }, 'cache body reader')
    // Idle between populates: it must not keep the process alive.
    worker.unref()
    worker.on('message', ({ results, arena }: ReplyMessage) => {
      const batch = this.#waiting.shift()
      batch?.resolve(results.map((r, i) => (r.ok ? { ok: true, body: Buffer.from(arena, r.at, batch.files[i]!.size), signature: r.signature, hashed: r.hashed } : r)))
    })
    worker.on('error', (error: Error) => {
      // A crashed thread fails what it was given; the next batch starts a new one.
      if (this.#worker === worker) this.#worker = undefined
      this.#fail(`cache body reader thread failed: ${error.message}`)
    })
    this.#worker = worker
    return worker
  }

  #fail(message: string): void {
    for (const { files, resolve } of this.#waiting.splice(0)) resolve(files.map(() => ({ ok: false, reason: 'failed', message })))
  }
}

/** The thread's body: it refers to nothing outside itself (it runs from its source text). */
function bodyReaderThread(): void {
  const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads')
  const fs = process.getBuiltinModule('node:fs')
  const crypto = process.getBuiltinModule('node:crypto')
  /** The digests a content file may be named by (content-file.ts CONTENT_ALGORITHMS). */
  const algorithms: readonly string[] = (workerData as { algorithms: readonly string[] }).algorithms

  parentPort!.on('message', (files: BodyFile[]) => {
    let total = 0
    for (const file of files) total += file.size
    const arena = new ArrayBuffer(total)
    const results: PostedResult[] = []
    let at = 0
    for (const file of files) {
      results.push(readOne(file, new Uint8Array(arena, at, file.size), at))
      at += file.size
    }
    parentPort!.postMessage({ results, arena }, [arena])
  })

  function readOne(file: BodyFile, into: Uint8Array, at: number): PostedResult {
    let fd: number
    try {
      fd = fs.openSync(file.path, 'r')
    } catch (error) {
      const code = (error as { code?: string } | null)?.code
      if (code === 'ENOENT' || code === 'ENOTDIR') return { ok: false, reason: 'missing' }
      return { ok: false, reason: 'failed', message: (error as Error).message }
    }
    try {
      const st = fs.fstatSync(fd)
      // A truncated or extended file cannot match: no need to hash it.
      if (st.size !== file.size) return { ok: false, reason: 'corrupt' }
      let done = 0
      while (done < file.size) {
        const n = fs.readSync(fd, into, done, file.size - done, done)
        if (n === 0) return { ok: false, reason: 'corrupt' }
        done += n
      }
      const signature = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }
      const v = file.verified
      if (v !== undefined && v.ino === st.ino && v.size === st.size && v.mtimeMs === st.mtimeMs && v.ctimeMs === st.ctimeMs) return { ok: true, at, signature, hashed: false }
      // By the algorithm the integrity names: bodies stored by older versions are sha512's.
      const algorithm = file.integrity.slice(0, file.integrity.indexOf('-'))
      if (!algorithms.includes(algorithm)) return { ok: false, reason: 'corrupt' }
      const integrity = `${algorithm}-${crypto.createHash(algorithm).update(into).digest('base64')}`
      if (integrity !== file.integrity) return { ok: false, reason: 'corrupt' }
      return { ok: true, at, signature, hashed: true }
    } catch (error) {
      return { ok: false, reason: 'failed', message: (error as Error).message }
    } finally {
      try {
        fs.closeSync(fd)
      } catch {
        // A descriptor of a file only read: nothing was lost.
      }
    }
  }
}

// Transpilers may wrap named functions in a `__name(fn, "name")` helper that the eval'd script
// would not have: give it a no-op one. The thread runs below the event loop (thread-priority.ts):
// at the process's priority it woke for every batch and took the core from the loop that had
// just posted it (a thread that sleeps between batches wins the core on waking); lowered, it
// reads when a core is free or in its share of a busy one, and only the peer's copy waits.
const WORKER_SOURCE = `var __name = (f) => f;\n${lowerThisThreadSource('cache body reader')}\n(${bodyReaderThread.toString()})()`
