// A body being written: kept in memory while small and spilled to a temp file
// in <dir>/tmp once it grows, so a large response never sits whole in memory.
// Nothing here is visible to readers; on commit the store hands the buffered
// body (or the finished temp file) to its disk writer. A body that spills is
// hashed as it arrives (its bytes are not kept); a buffered one is hashed by
// the disk writer's thread, off the main thread, unless its caller asks here.

import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { type ContentAlgorithm, type ContentHash, SMALL_BODY_BYTES, contentHash, integrityOf, integrityOfBytes } from './content-file.ts'

const openFd = promisify(fs.open)
const writevFd = promisify(fs.writev)
const closeFd = promisify(fs.close)

export interface FinishedBody {
  tmpPath: string
  integrity: string
  size: number
}

export interface BufferedBody {
  /** Its integrity (content-file.ts CONTENT_ALGORITHM): only when buffered() was asked for it, else the disk writer works it out. */
  integrity?: string
  size: number
  body: Buffer
}

export interface PendingBodyOptions {
  tmpDir: string
  /** The per-object limit: beyond it the write is given up. */
  maxBytes: number
  /** Called once, as soon as writing to the temp file fails. */
  onFailure(error: unknown): void
  /** Memory for a buffered body (see DiskStoreOptions.allocateBody). */
  allocateBody?: (length: number) => Buffer | undefined
  /** What a body that spills is hashed by (default content-file.ts CONTENT_ALGORITHM). */
  algorithm?: ContentAlgorithm
}

export type WriteOutcome = 'ok' | 'too-large' | 'failed'

export class PendingBody {
  readonly #opts: PendingBodyOptions
  /** Started when the body spills: a buffered body is hashed whole, once, by whoever needs its digest. */
  #hash: ContentHash | undefined
  /** Named when the body spills (most bodies never do). */
  #tmpPath: string | undefined
  #bytes = 0
  /** Chunks not yet on disk: the whole body until it spills, then the backlog. */
  #chunks: Buffer[] = []
  #fd: Promise<number> | undefined
  #draining: Promise<void> | undefined
  #failure: { error: unknown } | undefined
  #closed = false

  constructor(opts: PendingBodyOptions) {
    this.#opts = opts
  }

  write(chunk: Uint8Array): WriteOutcome {
    if (this.#failure) return 'failed'
    this.#bytes += chunk.byteLength
    if (this.#bytes > this.#opts.maxBytes) return 'too-large'
    // No copy: the proxy hands over chunks it no longer changes.
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    this.#chunks.push(buffer)
    if (this.#fd) {
      this.#hash!.update(buffer)
      this.#drain()
    } else if (this.#bytes > SMALL_BODY_BYTES) {
      // Spilling: the bytes so far are all still here, the rest is hashed as it comes.
      this.#hash = contentHash(this.#opts.algorithm)
      for (const held of this.#chunks) this.#hash.update(held)
      this.#fd = this.#openTmp()
      this.#drain()
    }
    return 'ok'
  }

  /**
   * The whole body and its digest when it stayed small enough to be kept in memory (nothing is
   * on disk then); else undefined: use finish().
   *
   * The body is gathered into memory shared between threads (a SharedArrayBuffer): the disk
   * writer's thread gets it without a copy, and the memory tier keeps the same bytes. A plain
   * buffer would be copied into the writer thread with every job and stay there until that
   * thread's next garbage collection: under a storm of misses, a second copy of the whole
   * write queue. It also holds exactly the body, not the socket read it arrived in. The memory
   * comes from allocateBody when it gives some (the memory tier's slabs, so the tier keeps the
   * body where it is), else it is the body's own.
   */
  buffered(withIntegrity = false): BufferedBody | undefined {
    if (this.#fd) return undefined
    const body = this.#opts.allocateBody?.(this.#bytes) ?? Buffer.from(new SharedArrayBuffer(this.#bytes))
    let offset = 0
    for (const chunk of this.#chunks) {
      copyInto(body, offset, chunk)
      offset += chunk.length
    }
    this.#chunks = []
    return { integrity: withIntegrity ? integrityOfBytes(body, this.#opts.algorithm) : undefined, size: this.#bytes, body }
  }

  /** For a body that spilled to its temp file: the whole body on disk and its digest. Rejects on I/O failure. */
  async finish(): Promise<FinishedBody> {
    if (!this.#fd) throw new Error('finish() is for a body that spilled to a temp file; use buffered()')
    while (this.#draining) await this.#draining
    await this.#close()
    if (this.#failure) throw this.#failure.error
    return { tmpPath: this.#tmpPath!, integrity: integrityOf(this.#hash!), size: this.#bytes }
  }

  /** Drops everything written so far, including the temp file. */
  async discard(): Promise<void> {
    this.#chunks = []
    while (this.#draining) await this.#draining
    await this.#close()
    if (this.#tmpPath) await rm(this.#tmpPath, { force: true })
  }

  async #openTmp(): Promise<number> {
    // mkdir every time: the cache directory may have been removed under us.
    await mkdir(this.#opts.tmpDir, { recursive: true })
    this.#tmpPath = path.join(this.#opts.tmpDir, randomUUID())
    return openFd(this.#tmpPath, 'wx')
  }

  #drain(): void {
    if (this.#draining || !this.#fd) return
    const fdPromise = this.#fd
    this.#draining = (async () => {
      try {
        const fd = await fdPromise
        while (this.#chunks.length > 0 && !this.#failure) {
          const batch = this.#chunks
          this.#chunks = []
          await writeAll(fd, batch)
        }
      } catch (error) {
        this.#fail(error)
      } finally {
        this.#draining = undefined
      }
    })()
  }

  #fail(error: unknown): void {
    if (this.#failure) return
    this.#failure = { error }
    this.#chunks = []
    this.#opts.onFailure(error)
  }

  async #close(): Promise<void> {
    if (this.#closed || !this.#fd) return
    this.#closed = true
    let fd: number
    try {
      fd = await this.#fd
    } catch {
      return // opening failed: already reported through #fail, nothing to close
    }
    try {
      await closeFd(fd)
    } catch (error) {
      this.#fail(error)
    }
  }
}

/** writev until every byte is down: a short write (disk nearly full) continues where it stopped. */
async function writeAll(fd: number, buffers: Buffer[]): Promise<void> {
  let pending = buffers
  while (pending.length > 0) {
    const { bytesWritten } = await writevFd(fd, pending)
    let skip = bytesWritten
    let i = 0
    while (i < pending.length && skip >= pending[i].length) {
      skip -= pending[i].length
      i++
    }
    pending = pending.slice(i)
    if (pending.length > 0 && skip > 0) pending[0] = pending[0].subarray(skip)
    if (bytesWritten === 0 && pending.length > 0) throw Object.assign(new Error('no progress writing cache temp file'), { code: 'ENOSPC' })
  }
}

/** Scratch memory for copyInto: its own ArrayBuffer, so word-aligned at offset 0. */
const SCRATCH_BYTES = 64 * 1024
let scratch: Buffer | undefined

/**
 * Copies `chunk` into `target` at `at`. V8 copies into shared memory (a SharedArrayBuffer) with
 * relaxed atomic moves, a word at a time only when source and target sit at the same offset
 * within a word, else a byte at a time: several times slower, and a chunk is a view into a
 * socket read at any offset, so most bodies took the slow way. Such a chunk is first copied
 * (a plain memmove) into scratch memory at the target's offset within a word, and from there
 * a word at a time.
 */
function copyInto(target: Buffer, at: number, chunk: Buffer): void {
  const shift = (target.byteOffset + at) & 7
  if (!(target.buffer instanceof SharedArrayBuffer) || ((chunk.byteOffset - shift) & 7) === 0) {
    target.set(chunk, at)
    return
  }
  scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES + 8)
  for (let from = 0; from < chunk.length; from += SCRATCH_BYTES) {
    const n = Math.min(SCRATCH_BYTES, chunk.length - from)
    scratch.set(n === chunk.length ? chunk : chunk.subarray(from, from + n), shift)
    target.set(scratch.subarray(shift, shift + n), at + from)
  }
}
