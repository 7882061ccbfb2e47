// The one disk write path of the cache: a bounded write-behind queue whose jobs
// a worker thread carries out with synchronous file I/O, a batch at a time.
// A chain of asynchronous fs calls per stored object (mkdir, open, write,
// close, rename, mkdir, append...) costs the main thread far more than the
// request it serves; here the main thread only queues, and one message per
// batch crosses to the worker and back.
//
// The files are cacache's format (content-v2/ bodies named by their digest,
// index-v5/ buckets of hashed JSON lines), so cacache's own tools read them.
// A buffered body is hashed here too ('put-hashed'), from the bytes about to be
// written: the main thread hands the body over and learns its integrity from
// the job's result.
// Crash safety: a new body is written under its content name (an existing one
// is replaced through tmp/ and a rename), and its index line is appended only
// after that, so a SIGKILL at any moment leaves at worst an unreferenced (maybe
// torn) content file or a torn last index line, which cacache's reader skips
// (each line carries the sha1 of its JSON) and the store's start-up sweep
// removes.
//
// Jobs run strictly in the order they were queued: a removal queued after a
// write happens after it, so the store needs no per-file locking.

import type { Worker } from 'node:worker_threads'
import { startWorker } from '../thread-heap.ts'
import { lowerThisThreadSource } from '../thread-priority.ts'
import { CONTENT_ALGORITHM, CONTENT_ALGORITHMS } from './content-file.ts'

/** What identifies one version of a file on disk (see entry-index.ts FileSignature). */
export interface WrittenFile {
  ino: number
  size: number
  mtimeMs: number
  ctimeMs: number
}

export type DiskJob =
  /** A body (or a finished temp file) moved into content-v2, then its index line appended (or the bucket rewritten to that line). */
  | { op: 'put'; body?: Uint8Array; tmpPath?: string; contentPath: string; id: string; line: string; compact: boolean }
  /**
   * A body whose digest is not known yet: this thread hashes it, writes it under its content
   * name and appends the index line `line[0] + integrity + line[1]`. The result carries the
   * integrity. With `expect`, a body whose integrity is another is not written at all: the
   * result is an error with code EINTEGRITY.
   */
  | { op: 'put-hashed'; body: Uint8Array; id: string; line: readonly [string, string]; compact: boolean; expect?: string }
  /** An index line for a body already in place (a metadata update). */
  | { op: 'index'; id: string; line: string; compact: boolean }
  | { op: 'rm-bucket'; id: string }
  | { op: 'rm-content'; path: string }
  /** Everything cacache keeps (cacache.rm.all): content-v*, index-v*. */
  | { op: 'clear' }

export type JobResult = { ok: true; file?: WrittenFile; integrity?: string } | { ok: false; error: { message: string; code?: string } }

export interface DiskWriterOptions {
  /** The cacache directory. */
  dir: string
  /** Most body bytes waiting to be written; a body that does not fit is not stored. */
  maxQueueBytes: number
  /**
   * Most jobs waiting before a new body is refused (default DEFAULT_MAX_QUEUE_JOBS). Jobs that
   * are not new bodies (index lines, removals) are always queued: the disk must follow the index.
   */
  maxQueueJobs?: number
  /** A callback given to enqueue() threw: the other jobs of its batch are still answered. */
  onCallbackError?: (error: unknown) => void
}

export interface DiskWriterStats {
  /** Jobs queued or being carried out. */
  jobs: number
  /** Body bytes queued or being written. */
  bytes: number
  /**
   * Shared memory the writer's thread still refers to, as of its last answer: the
   * SharedArrayBuffers (whole, one per buffer per batch) its jobs' bodies came in that its
   * garbage collector has not freed yet. Memory the main thread has let go of stays allocated
   * until this thread lets go too.
   */
  threadSharedBytes: number
  /**
   * mkdir calls the writer's thread has made, as of its last answer. It remembers the
   * directories it has made or found, so this grows with the directories of the cache (one
   * call each, two when the parent was missing too), not with the objects stored in them.
   */
  mkdirCalls: number
}

interface Queued {
  /** Dropped once posted (see #send). */
  job: DiskJob | undefined
  bytes: number
  done: (result: JobResult) => void
}

export class DiskWriter {
  readonly #dir: string
  readonly #maxQueueBytes: number
  readonly #maxQueueJobs: number
  readonly #onCallbackError: (error: unknown) => void
  #worker: Worker | undefined
  #queue: Queued[] = []
  /** Batches posted to the worker and not answered yet, oldest first (it answers in order). */
  #inFlight: Queued[][] = []
  #scheduled = false
  #bytes = 0
  #jobs = 0
  #idle: (() => void)[] = []
  #roomWaiters: { bytes: number; resolve: () => void }[] = []
  #closed = false
  #threadSharedBytes = 0
  #mkdirCalls = 0
  /** Callers of makeSlabs() waiting for their slabs, oldest first (the worker answers in order). */
  #slabWaiters: ((made: SharedArrayBuffer[]) => void)[] = []

  constructor(opts: DiskWriterOptions) {
    if (!Number.isSafeInteger(opts.maxQueueBytes) || opts.maxQueueBytes < 0) throw new RangeError(`write queue bytes must be a non-negative integer, got ${opts.maxQueueBytes}`)
    this.#dir = opts.dir
    this.#maxQueueBytes = opts.maxQueueBytes
    this.#maxQueueJobs = opts.maxQueueJobs ?? DEFAULT_MAX_QUEUE_JOBS
    if (!Number.isSafeInteger(this.#maxQueueJobs) || this.#maxQueueJobs < 1) throw new RangeError(`write queue jobs must be a positive integer, got ${this.#maxQueueJobs}`)
    this.#onCallbackError =
      opts.onCallbackError ??
      ((error) => {
        throw error
      })
  }

  /** Whether a body of `bytes` (unknown: any body) would be queued now. */
  hasRoom(bytes: number | undefined): boolean {
    if (this.#jobs >= this.#maxQueueJobs) return false
    return bytes === undefined ? this.#bytes < this.#maxQueueBytes : this.#bytes + bytes <= this.#maxQueueBytes
  }

  stats(): DiskWriterStats {
    return { jobs: this.#jobs, bytes: this.#bytes, threadSharedBytes: this.#threadSharedBytes, mkdirCalls: this.#mkdirCalls }
  }

  /**
   * Resolves once a body of `bytes` would be queued (at once when it fits now). A body larger
   * than the whole queue waits for an empty queue, where hasRoom still refuses it.
   */
  room(bytes: number): Promise<void> {
    if (this.#closed || this.hasRoom(bytes) || this.#jobs === 0) return Promise.resolve()
    return new Promise((resolve) => this.#roomWaiters.push({ bytes, resolve }))
  }

  /** Queue a job; resolves when the worker has carried it out (never rejects: failures are results). */
  run(job: DiskJob): Promise<JobResult> {
    return new Promise<JobResult>((done) => this.enqueue(job, done))
  }

  /**
   * run() with a callback instead of a promise: `done` is called once, with the job's result,
   * before drain() resolves for it. A miss storm queues a job per stored body, and a promise,
   * its reaction and the caller's tracking of it cost the main thread more than the call.
   */
  enqueue(job: DiskJob, done: (result: JobResult) => void): void {
    if (this.#closed) {
      queueMicrotask(() => done(CLOSED))
      return
    }
    const bytes = (job.op === 'put' || job.op === 'put-hashed') && job.body ? job.body.byteLength : 0
    this.#bytes += bytes
    this.#jobs++
    this.#queue.push({ job, bytes, done })
    this.#schedule()
  }

  /**
   * Memory for `count` slabs of `bytes` (slab-arena.ts SlabMaker), allocated and its pages
   * touched by the worker's thread between batches: the event loop never waits for the
   * allocation or its page faults. `ready` gets what was made, none once the writer is closed.
   */
  makeSlabs(bytes: number, count: number, ready: (made: SharedArrayBuffer[]) => void): void {
    if (this.#closed) {
      queueMicrotask(() => ready([]))
      return
    }
    this.#slabWaiters.push(ready)
    this.#ensureWorker().postMessage({ slabBytes: bytes, slabCount: count } satisfies SlabRequest)
  }

  /** Resolves once every job queued so far is done. */
  drain(): Promise<void> {
    if (this.#jobs === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  /** Finish the queue, then stop the worker. */
  async close(): Promise<void> {
    await this.drain()
    this.#closed = true
    for (const waiter of this.#roomWaiters.splice(0)) waiter.resolve()
    const worker = this.#worker
    this.#worker = undefined
    await worker?.terminate()
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight.length >= MAX_BATCHES_IN_FLIGHT || this.#queue.length === 0) return
    this.#scheduled = true
    // Jobs queued in this turn of the event loop go together.
    setImmediate(() => {
      this.#scheduled = false
      this.#send()
    })
  }

  #send(): void {
    if (this.#inFlight.length >= MAX_BATCHES_IN_FLIGHT || this.#queue.length === 0) return
    // A bounded slice of the queue per message: posting thousands of jobs at
    // once held the event loop for most of a second under a populate.
    let take = 0
    let bytes = 0
    while (take < this.#queue.length && take < MAX_JOBS_PER_MESSAGE && (take === 0 || bytes + this.#queue[take]!.bytes <= MAX_BYTES_PER_MESSAGE)) {
      bytes += this.#queue[take]!.bytes
      take++
    }
    const batch = this.#queue.splice(0, take)
    this.#inFlight.push(batch)
    const { message, transfer } = packBatch(batch.map((q) => q.job!))
    // The worker has its own copy of each job now. Kept here until the answer (hundreds of
    // milliseconds behind a busy disk), each job's index line, paths and body view outlived
    // young-generation collections, were moved to the old generation and became garbage there.
    for (const q of batch) q.job = undefined
    this.#ensureWorker().postMessage(message, transfer)
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker
    const worker = startWorker(WORKER_SOURCE, { workerData: { dir: this.#dir, algorithm: CONTENT_ALGORITHM, algorithms: CONTENT_ALGORITHMS } satisfies WriterData }, 'cache disk writer')
    // The store's close() drains the queue; an idle writer must not keep the process alive.
    worker.unref()
    worker.on('message', (answer: BatchAnswer | SlabAnswer) => {
      this.#threadSharedBytes = answer.sharedBytes
      if ('slabs' in answer) {
        this.#slabWaiters.shift()?.(answer.slabs)
        return
      }
      this.#mkdirCalls = answer.mkdirCalls
      this.#finished(answer.results)
    })
    worker.on('error', (error: Error) => {
      // A crashed worker fails the batches it was given; the next batch starts a new one.
      if (this.#worker === worker) this.#worker = undefined
      while (this.#inFlight.length > 0) {
        this.#finished(this.#inFlight[0]!.map((): JobResult => ({ ok: false, error: { message: `cache writer thread failed: ${error.message}` } })))
      }
      for (const ready of this.#slabWaiters.splice(0)) ready([])
    })
    this.#worker = worker
    return worker
  }

  #finished(results: JobResult[]): void {
    const batch = this.#inFlight.shift() ?? []
    for (let i = 0; i < batch.length; i++) {
      const q = batch[i]!
      this.#bytes -= q.bytes
      this.#jobs--
      try {
        q.done(results[i] ?? { ok: false, error: { message: 'cache writer thread gave no result' } })
      } catch (error) {
        this.#onCallbackError(error)
      }
    }
    if (this.#jobs === 0) for (const resolve of this.#idle.splice(0)) resolve()
    // Waiters are let in oldest first, each counted against the room the ones before it will take.
    let promised = this.#bytes
    let promisedJobs = this.#jobs
    while (this.#roomWaiters.length > 0) {
      const next = this.#roomWaiters[0]!
      if (promised + next.bytes > this.#maxQueueBytes && promised > 0) break
      if (promisedJobs >= this.#maxQueueJobs) break
      promised += next.bytes
      promisedJobs++
      this.#roomWaiters.shift()!.resolve()
    }
    this.#schedule()
  }
}

/**
 * Jobs queued at most before a new body is refused. Under a storm of misses of small bodies the
 * byte bound alone let 6,553 jobs of 10 KiB wait (64 MiB): each holds its body (a view that
 * keeps a slab the memory tier may have dropped from being used again), its index line, its
 * callback and its content record, and the disk lags the index by as many. The writer's thread
 * carries out about this many in a second on a busy 2-core machine, so what is on disk stays
 * within about a second of what is served.
 */
export const DEFAULT_MAX_QUEUE_JOBS = 1024

const CLOSED: JobResult = Object.freeze({ ok: false, error: Object.freeze({ message: 'the cache is closed', code: 'ECLOSED' }) })

/**
 * Batches handed to the worker at once. With one, the worker sat idle from posting its
 * answer until the main thread, busy serving, got round to sending the next batch; with
 * two, the next one is already waiting in its message queue. The worker still carries
 * jobs out strictly in order.
 */
const MAX_BATCHES_IN_FLIGHT = 2
/** Most jobs in one message to the worker. */
const MAX_JOBS_PER_MESSAGE = 256
/** Most body bytes in one message (a larger body still goes, alone). */
const MAX_BYTES_PER_MESSAGE = 4 * 1024 * 1024

/**
 * A job as posted: a body in memory shared between threads travels as it is; any other body
 * as a range of the message's arena.
 */
type PutJob = Extract<DiskJob, { op: 'put' | 'put-hashed' }>
type PostedJob = DiskJob | (Omit<PutJob, 'body'> & { bodyAt: number; bodyBytes: number })

interface BatchMessage {
  jobs: PostedJob[]
  arena: ArrayBuffer | undefined
}

/**
 * The worker's answer to one batch: a result per job, the shared memory it still refers to
 * (DiskWriterStats.threadSharedBytes) and its mkdir calls so far (DiskWriterStats.mkdirCalls).
 */
interface BatchAnswer {
  results: JobResult[]
  sharedBytes: number
  mkdirCalls: number
}

/** What the writer's thread starts with: the cache dir, and the digests of content-file.ts. */
interface WriterData {
  dir: string
  /** What a body this thread hashes is named by (CONTENT_ALGORITHM). */
  algorithm: string
  /** What a content file may be named by (CONTENT_ALGORITHMS): an expected integrity names one of these. */
  algorithms: readonly string[]
}

/** A request for slab memory (DiskWriter.makeSlabs), and its answer. */
interface SlabRequest {
  slabBytes: number
  slabCount: number
}
interface SlabAnswer {
  slabs: SharedArrayBuffer[]
  sharedBytes: number
}

/**
 * The batch as one message. A body in a SharedArrayBuffer (what a buffered write holds, see
 * pending-body.ts) reaches the worker without a copy: structured cloning shares its memory
 * (and keeps the view's offset and length).
 * Any other body is copied into one ArrayBuffer that is transferred, not cloned: a body is
 * often a view into a larger buffer (a network read of many objects), and cloning a view
 * copies its whole backing buffer, once per job.
 */
function packBatch(jobs: DiskJob[]): { message: BatchMessage; transfer: ArrayBuffer[] } {
  let arenaBytes = 0
  for (const job of jobs) if (isPut(job) && job.body && !isShared(job.body)) arenaBytes += job.body.byteLength
  const arena = arenaBytes > 0 ? new ArrayBuffer(arenaBytes) : undefined
  const view = arena ? new Uint8Array(arena) : undefined
  let at = 0
  const posted = jobs.map((job): PostedJob => {
    if (!isPut(job) || !job.body || isShared(job.body)) return job
    // An empty body has no bytes to place (and its view may still pin a large buffer).
    if (job.body.byteLength === 0) return { ...job, body: new Uint8Array(0) }
    const { body, ...rest } = job
    view!.set(body, at)
    const placed = { ...rest, bodyAt: at, bodyBytes: body.byteLength } as PostedJob
    at += body.byteLength
    return placed
  })
  return { message: { jobs: posted, arena }, transfer: arena ? [arena] : [] }
}

function isPut(job: DiskJob): job is PutJob {
  return job.op === 'put' || job.op === 'put-hashed'
}

/**
 * A view of a SharedArrayBuffer: posting it shares the memory, not a copy. Most are views of the
 * memory tier's slabs (slab-arena.ts), which live long and hold only bodies; a slab the tier has
 * dropped is freed once this thread, too, has let go of it (at its next garbage collection).
 */
function isShared(body: Uint8Array): boolean {
  return body.buffer instanceof SharedArrayBuffer
}

/**
 * The worker's body. It runs as a script of its own (eval), so it must not
 * refer to anything outside this function; Node's built-in modules come from
 * process.getBuiltinModule.
 */
function diskWriterThread(): void {
  const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads')
  const fs = process.getBuiltinModule('node:fs')
  const path = process.getBuiltinModule('node:path')
  const crypto = process.getBuiltinModule('node:crypto')
  const { dir, algorithm: ownAlgorithm, algorithms } = workerData as WriterData
  const tmpDir = path.join(dir, 'tmp')
  let tmpCounter = 0

  /**
   * One-shot digests (crypto.hash, Node 20.12): a Hash object per digest, three per stored
   * object, cost this thread more than hashing the ids and lines themselves.
   */
  const digestOf = (algorithm: string, bytes: Uint8Array): Buffer => crypto.hash(algorithm, bytes, 'buffer') as unknown as Buffer
  const codeOf = (error: unknown): string | undefined => (error as { code?: string } | null)?.code
  /**
   * Directories this thread has made or found. A fresh cache puts nearly every object in
   * directories of its own (two levels of hex under content-v2 and index-v5: up to 65,536
   * each), and creating them was most of the thread's time: each is made once per process,
   * with one mkdir (its parent is known by then), instead of a failed open and a recursive
   * mkdir per object.
   * Those two-level directories are a bit each (leafBits): kept as a Set of paths they took
   * this thread's heap about 190 bytes apiece, 10 MB once a storm of misses had stored 130,000
   * objects (56,000 bucket directories). The few others (their parents, tmp) are kept by path.
   */
  const knownDirs = new Set<string>()
  const contentRoots = new Map(algorithms.map((algorithm) => [algorithm, path.join(dir, 'content-v2', algorithm)]))
  const leafRoots = [...contentRoots.values(), path.join(dir, 'index-v5')]
  const leafBits = new Uint8Array((leafRoots.length * 65536) / 8)
  const sepCode = path.sep.charCodeAt(0)
  /** The value of a lower-case hex digit's character code, else -1. */
  const hexDigit = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1)
  /**
   * The bit of `dirPath` in leafBits when it is <root>/<2 hex>/<2 hex> under a leafRoot, else -1.
   * Asked twice per stored object: read off the characters in place, with no substring, regular
   * expression or parse (which together showed in this thread's profile).
   */
  const leafOf = (dirPath: string): number => {
    const cut = dirPath.length - 6
    if (cut <= 0 || dirPath.charCodeAt(cut) !== sepCode || dirPath.charCodeAt(cut + 3) !== sepCode) return -1
    let root = -1
    for (let r = 0; r < leafRoots.length; r++) {
      if (leafRoots[r]!.length === cut && dirPath.startsWith(leafRoots[r]!)) {
        root = r
        break
      }
    }
    if (root < 0) return -1
    const a = hexDigit(dirPath.charCodeAt(cut + 1))
    const b = hexDigit(dirPath.charCodeAt(cut + 2))
    const c = hexDigit(dirPath.charCodeAt(cut + 4))
    const d = hexDigit(dirPath.charCodeAt(cut + 5))
    if ((a | b | c | d) < 0) return -1
    return root * 65536 + ((a << 12) | (b << 8) | (c << 4) | d)
  }
  const isKnown = (dirPath: string): boolean => {
    const bit = leafOf(dirPath)
    return bit < 0 ? knownDirs.has(dirPath) : (leafBits[bit >> 3]! & (1 << (bit & 7))) !== 0
  }
  const markKnown = (dirPath: string, known: boolean): void => {
    const bit = leafOf(dirPath)
    if (bit < 0) {
      if (known) knownDirs.add(dirPath)
      else knownDirs.delete(dirPath)
    } else if (known) leafBits[bit >> 3]! |= 1 << (bit & 7)
    else leafBits[bit >> 3]! &= ~(1 << (bit & 7))
  }
  /** Every mkdir of this thread goes through here, counted (DiskWriterStats.mkdirCalls). */
  let mkdirCalls = 0
  const mkdir = (dirPath: string): void => {
    mkdirCalls++
    fs.mkdirSync(dirPath)
  }
  const forgetDirs = (): void => {
    knownDirs.clear()
    leafBits.fill(0)
  }
  const ensureDir = (dirPath: string): void => {
    if (isKnown(dirPath)) return
    try {
      mkdir(dirPath)
    } catch (error) {
      const code = codeOf(error)
      if (code === 'ENOENT') {
        // The parent is missing: made first (the root of the file system always exists).
        const parent = path.dirname(dirPath)
        if (parent === dirPath) throw error
        markKnown(parent, false)
        ensureDir(parent)
        try {
          mkdir(dirPath)
        } catch (again) {
          if (codeOf(again) !== 'EEXIST') throw again
        }
      } else if (code !== 'EEXIST') throw error
    }
    markKnown(dirPath, true)
  }
  /**
   * Runs `op` in `dirPath`, made first when this thread has not seen it. A directory removed
   * behind the thread's back (by hand, or the whole cache dir) makes `op` fail with ENOENT:
   * then everything the thread remembers is forgotten, the directory made again, and `op` run
   * once more, so one removal never makes writes fail for good.
   */
  const withDir = <T>(dirPath: string, op: () => T): T => {
    ensureDir(dirPath)
    try {
      return op()
    } catch (error) {
      if (codeOf(error) !== 'ENOENT') throw error
      forgetDirs()
      ensureDir(dirPath)
      return op()
    }
  }
  // The roots of both trees, joined once: the hex parts below need no normalising, and
  // path.join per stored object (two of them) showed in this thread's profile.
  const sep = path.sep
  const indexRoot = path.join(dir, 'index-v5')
  const bucketPath = (id: string): string => {
    // cacache lib/entry-index.js bucketPath: index-v5/<sha256 hex split 2/2/rest>.
    const hex = crypto.hash('sha256', id, 'hex')
    return `${indexRoot}${sep}${hex.slice(0, 2)}${sep}${hex.slice(2, 4)}${sep}${hex.slice(4)}`
  }
  const tmpName = (): string => path.join(tmpDir, `w${process.pid}-${++tmpCounter}`)
  /** cacache lib/content/path.js: content-v2/<algorithm>/<hex 2>/<hex 2>/<rest of the hex digest>. */
  const contentPathOf = (algorithm: string, digest: Buffer): string => {
    const hex = digest.toString('hex')
    return `${contentRoots.get(algorithm)}${sep}${hex.slice(0, 2)}${sep}${hex.slice(2, 4)}${sep}${hex.slice(4)}`
  }
  /** cacache's index line: the sha1 of the JSON, a tab, the JSON (its reader skips lines whose hash does not match). */
  const indexLine = (json: string): string => `\n${crypto.hash('sha1', json, 'hex')}\t${json}`
  const writeIndex = (id: string, json: string, compact: boolean): void => {
    const bucket = bucketPath(id)
    if (compact) {
      // The bucket rewritten to its newest line, atomically (what cacache.index.compact does).
      const tmp = tmpName()
      withDir(tmpDir, () => fs.writeFileSync(tmp, indexLine(json), { flag: 'wx' }))
      try {
        withDir(path.dirname(bucket), () => fs.renameSync(tmp, bucket))
      } catch (error) {
        fs.rmSync(tmp, { force: true })
        throw error
      }
      return
    }
    withDir(path.dirname(bucket), () => fs.appendFileSync(bucket, indexLine(json)))
  }

  /**
   * Content files this thread wrote or checked in this process, by path, with their signature
   * then. Many entries share one body (URLs that differ only in their query, say): a body found
   * in place under its name whose signature is still the one it had (inode, size, change and
   * modification times, as the store's own FileSignature) still holds those bytes, and is not
   * read and hashed again. A file changed since, or never seen, is. Bounded: at KNOWN_FILES the
   * one least recently written or found goes (a miss storm of unique bodies would otherwise grow
   * it without end), so the bodies shared most stay known.
   */
  const KNOWN_FILES = 8192
  const knownFiles = new Map<string, WrittenFile>()
  const know = (file: string, signature: WrittenFile): WrittenFile => {
    // Deleted first so that a file found again moves to the newest end of the map's order.
    if (!knownFiles.delete(file) && knownFiles.size >= KNOWN_FILES) knownFiles.delete(knownFiles.keys().next().value!)
    knownFiles.set(file, signature)
    return signature
  }

  /**
   * Creates `file` with `body` (never over an existing file); undefined when it exists. A file
   * this thread knows is taken to exist without trying: an exclusive open of an existing file
   * fails with an error object and its stack trace, which with the second open to check the
   * file (holds) cost more than writing a new body does. holds() finds out whether it is still
   * there, and forgets it when it is not.
   */
  const writeNew = (file: string, body: Uint8Array): WrittenFile | undefined => {
    if (knownFiles.has(file)) return undefined
    let fd: number
    try {
      fd = withDir(path.dirname(file), () => fs.openSync(file, 'wx'))
    } catch (error) {
      if ((error as { code?: string } | null)?.code === 'EEXIST') return undefined
      throw error
    }
    try {
      for (let at = 0; at < body.byteLength; ) at += fs.writeSync(fd, body, at, body.byteLength - at)
      const st = fs.fstatSync(fd)
      fs.closeSync(fd)
      return know(file, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs })
    } catch (error) {
      // A partial body (disk full...) must not stay under its name.
      try {
        fs.closeSync(fd)
      } catch {
        // Already closed, or the descriptor is gone: the removal below is what matters.
      }
      fs.rmSync(file, { force: true })
      throw error
    }
  }

  /** The signature of `file` when it holds exactly the bytes with this digest. */
  const holds = (file: string, size: number, algorithm: string, digest: Buffer): WrittenFile | undefined => {
    const known = knownFiles.get(file)
    if (known !== undefined) {
      // One stat, no descriptor: a known file whose signature is unchanged still holds those bytes.
      const st = fs.statSync(file, { throwIfNoEntry: false })
      if (st === undefined) {
        knownFiles.delete(file)
        return undefined
      }
      if (st.size !== size) return undefined
      if (known.ino === st.ino && known.size === st.size && known.mtimeMs === st.mtimeMs && known.ctimeMs === st.ctimeMs) return know(file, known)
    }
    let fd: number
    try {
      fd = fs.openSync(file, 'r')
    } catch {
      return undefined
    }
    try {
      const st = fs.fstatSync(fd)
      if (st.size !== size) return undefined
      const bytes = Buffer.allocUnsafe(size)
      for (let at = 0; at < size; ) {
        const n = fs.readSync(fd, bytes, at, size - at, at)
        if (n === 0) return undefined
        at += n
      }
      if (!digestOf(algorithm, bytes).equals(digest)) return undefined
      return know(file, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs })
    } finally {
      fs.closeSync(fd)
    }
  }

  const run = (job: DiskJob): JobResult => {
    switch (job.op) {
      case 'put-hashed': {
        // The digest is taken here, from the very bytes written next: the main thread never
        // hashes a buffered body, and the name the file gets is the digest of what it holds.
        // Named by the algorithm an expected integrity names (a peer running an older version
        // announces sha512), else by this store's own.
        const algorithm = job.expect === undefined ? ownAlgorithm : job.expect.slice(0, job.expect.indexOf('-'))
        const digest = algorithms.includes(algorithm) ? digestOf(algorithm, job.body) : undefined
        const integrity = digest && `${algorithm}-${digest.toString('base64')}`
        if (!digest || !integrity || (job.expect !== undefined && integrity !== job.expect)) {
          return { ok: false, error: { message: 'the body is not the one expected (its digest differs); nothing was stored', code: 'EINTEGRITY' } }
        }
        const file = contentPathOf(algorithm, digest)
        const line = `${job.line[0]}${integrity}${job.line[1]}`
        // A body already on disk (the same bytes under another entry) is not written again,
        // only its index line; a file under that name with other bytes (torn by a crash) is
        // replaced whole, as a put does.
        const written = writeNew(file, job.body) ?? holds(file, job.body.byteLength, algorithm, digest)
        if (written) {
          writeIndex(job.id, line, job.compact)
          return { ok: true, file: written, integrity }
        }
        const result = run({ op: 'put', body: job.body, contentPath: file, id: job.id, line, compact: job.compact })
        return result.ok ? { ...result, integrity } : result
      }
      case 'put': {
        let source = job.tmpPath
        if (job.body) {
          // A body whose file is not there yet is written straight under its name: no
          // temp file and rename, the slowest part of a put on ext4. A SIGKILL halfway
          // leaves a torn file that no index line names yet (the line is appended after),
          // which the start-up sweep removes; the store checks a body's integrity before
          // trusting a file it has not written itself.
          const written = writeNew(job.contentPath, job.body)
          if (written) {
            writeIndex(job.id, job.line, job.compact)
            return { ok: true, file: written }
          }
          // The file exists (a body shared with another entry, or an unswept leftover):
          // replaced whole, atomically, as before.

          const tmp = tmpName()
          const body = job.body
          withDir(tmpDir, () => fs.writeFileSync(tmp, body, { flag: 'wx' }))
          source = tmp
        }
        if (!source) throw new Error('a put job needs a body or a temp file')
        try {
          // rename() replaces atomically: readers holding the old file keep their descriptor.
          withDir(path.dirname(job.contentPath), () => fs.renameSync(source, job.contentPath))
        } catch (error) {
          fs.rmSync(source, { force: true })
          throw error
        }
        const st = fs.statSync(job.contentPath)
        writeIndex(job.id, job.line, job.compact)
        return { ok: true, file: { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs } }
      }
      case 'index':
        writeIndex(job.id, job.line, job.compact)
        return { ok: true }
      case 'rm-bucket':
        fs.rmSync(bucketPath(job.id), { force: true })
        return { ok: true }
      case 'rm-content':
        knownFiles.delete(job.path)
        fs.rmSync(job.path, { force: true })
        return { ok: true }
      case 'clear':
        forgetDirs()
        knownFiles.clear()
        for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
          if (/^(content|index)-v\d+$/.test(name)) fs.rmSync(path.join(dir, name), { recursive: true, force: true })
        }
        return { ok: true }
    }
  }

  /**
   * SharedArrayBuffers this thread has received and its collector not freed yet, in bytes:
   * each message brings its own object for each shared buffer its bodies are views of.
   */
  let sharedBytes = 0
  const sharedCollected = new FinalizationRegistry<number>((bytes) => {
    sharedBytes -= bytes
  })
  /**
   * Slab memory for the memory tier: every page written once, so the kernel maps it here (on a
   * transparent huge page, zeroed, where it can) and the event loop's first copy into it
   * faults nothing. Counted as shared memory this thread refers to until its collector runs.
   */
  const makeSlabs = ({ slabBytes, slabCount }: SlabRequest): void => {
    const slabs: SharedArrayBuffer[] = []
    for (let i = 0; i < slabCount; i++) {
      const memory = new SharedArrayBuffer(slabBytes)
      const bytes = new Uint8Array(memory)
      for (let at = 0; at < slabBytes; at += 4096) bytes[at] = 0
      sharedBytes += slabBytes
      sharedCollected.register(memory, slabBytes)
      slabs.push(memory)
    }
    parentPort!.postMessage({ slabs, sharedBytes } satisfies SlabAnswer)
  }
  parentPort!.on('message', (message: BatchMessage | SlabRequest) => {
    if ('slabBytes' in message) {
      makeSlabs(message)
      return
    }
    const { jobs, arena } = message
    const results: JobResult[] = []
    const seen = new Set<SharedArrayBuffer>()
    for (const posted of jobs) {
      if ('body' in posted && posted.body && posted.body.buffer instanceof SharedArrayBuffer && !seen.has(posted.body.buffer)) {
        seen.add(posted.body.buffer)
        sharedBytes += posted.body.buffer.byteLength
        sharedCollected.register(posted.body.buffer, posted.body.buffer.byteLength)
      }
    }
    seen.clear()
    for (const posted of jobs) {
      const job: DiskJob =
        'bodyAt' in posted ? ({ ...posted, body: new Uint8Array(arena!, posted.bodyAt, posted.bodyBytes) } as DiskJob) : (posted as DiskJob)
      try {
        results.push(run(job))
      } catch (error) {
        const e = error as { message?: string; code?: string }
        results.push({ ok: false, error: { message: e?.message ?? String(error), code: e?.code } })
      }
    }
    parentPort!.postMessage({ results, sharedBytes, mkdirCalls } satisfies BatchAnswer)
  })
}

// Transpilers may wrap named functions in a `__name(fn, "name")` helper that the eval'd script
// would not have: give it a no-op one. The thread runs below the event loop (thread-priority.ts):
// its queue is bounded, so a lowered writer slows the queue, never a response.
const WORKER_SOURCE = `var __name = (f) => f;\n${lowerThisThreadSource('cache disk writer')}\n(${diskWriterThread.toString()})()`
