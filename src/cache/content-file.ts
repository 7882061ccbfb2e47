// Body files in cacache's content-addressed layout, read straight from disk.
// cacache.get re-reads its index and re-hashes the body on every call, which
// makes a hit several times slower than serving from memory; here the store's
// own index knows the path, and a file is hashed only when it has not been
// seen intact in this process (or changed since: inode, size, mtime, ctime),
// so "never serve a corrupt body" costs one hash per file per process.

import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { Transform, pipeline } from 'node:stream'
import { promisify } from 'node:util'
import type { ContentRecord, FileSignature } from './entry-index.ts'
import type { FileLease, OpenFiles } from './open-files.ts'
import type { ByteRange, StoredBody } from './types.ts'

/**
 * Bodies up to this size are buffered: written in one piece, read whole and
 * verified before they are returned. Larger ones are streamed both ways.
 */
export const SMALL_BODY_BYTES = 1024 * 1024

// Plain descriptors rather than FileHandle objects: those are tracked for
// GC-close warnings and cost noticeably on the hit path.
const openFd = promisify(fs.open)
const readFd = promisify(fs.read)
const closeFd = promisify(fs.close)

/**
 * The digest new bodies are named by. cacache reads any algorithm its integrity string names
 * (lib/content/path.js puts a body under content-v2/<algorithm>/), and sha256 costs half of
 * sha512 here (6.6 against 14.6 µs per 10 KiB, on the disk writer's thread, per stored body).
 * Bodies stored before under sha512 stay readable: CONTENT_ALGORITHMS lists both.
 */
export const CONTENT_ALGORITHM = 'sha256'

/** Every digest a content file of this store may be named by: read, verified and swept alike. */
export const CONTENT_ALGORITHMS = ['sha512', 'sha256'] as const

export type ContentAlgorithm = (typeof CONTENT_ALGORITHMS)[number]

/** A single digest of one of CONTENT_ALGORITHMS in Subresource Integrity form (base64, padded). */
const CONTENT_SRI = /^(?:(sha512)-([A-Za-z0-9+/]{86}==)|(sha256)-([A-Za-z0-9+/]{43}=))$/

/** The algorithm a content integrity names; undefined for anything else (placeholders, several digests). */
export function algorithmOf(integrity: string): ContentAlgorithm | undefined {
  const match = CONTENT_SRI.exec(integrity)
  return match ? ((match[1] ?? match[3]) as ContentAlgorithm) : undefined
}

/** A hash of `algorithm` (the one new bodies are named by unless said) and, once done, its integrity (integrityOf). */
export function contentHash(algorithm: ContentAlgorithm = CONTENT_ALGORITHM): ContentHash {
  return Object.assign(createHash(algorithm), { algorithm })
}

export type ContentHash = ReturnType<typeof createHash> & { algorithm: ContentAlgorithm }

/** Subresource Integrity string of a finished hash, the format cacache uses. */
export function integrityOf(hash: ContentHash): string {
  return `${hash.algorithm}-${hash.digest('base64')}`
}

/** Subresource Integrity of a whole body in memory, by `algorithm` (the one new bodies are named by unless said). */
export function integrityOfBytes(body: Uint8Array, algorithm: ContentAlgorithm = CONTENT_ALGORITHM): string {
  return `${algorithm}-${createHash(algorithm).update(body).digest('base64')}`
}

/**
 * Where cacache keeps the body with this integrity (lib/content/path.js:
 * content-v2/<algo>/<hex[0..2]>/<hex[2..4]>/<hex[4..]>). Undefined for
 * anything but a single digest of one of CONTENT_ALGORITHMS.
 */
export function contentPath(dir: string, integrity: string): string | undefined {
  const match = CONTENT_SRI.exec(integrity)
  if (!match) return undefined
  const algorithm = (match[1] ?? match[3]) as ContentAlgorithm
  const hex = Buffer.from(match[2] ?? match[4]!, 'base64').toString('hex')
  // What path.join(contentDir(dir), algorithm, hex[0..2], hex[2..4], hex[4..]) gives: the hex
  // parts need no normalising, and every new body of a storm of misses asks for its path.
  return `${algorithmRoot(dir, algorithm)}${path.sep}${hex.slice(0, 2)}${path.sep}${hex.slice(2, 4)}${path.sep}${hex.slice(4)}`
}

/** The integrity of the content file at content-v2/<algorithm>/<a>/<b>/<name> (see contentPath). */
export function integrityOfPath(algorithm: ContentAlgorithm, a: string, b: string, name: string): string {
  return `${algorithm}-${Buffer.from(a + b + name, 'hex').toString('base64')}`
}

/** The content root of each algorithm per cache dir (a process has one or a few). */
const algorithmRoots = new Map<string, string>()

export function algorithmRoot(dir: string, algorithm: ContentAlgorithm): string {
  const id = `${algorithm}\0${dir}`
  let root = algorithmRoots.get(id)
  if (root === undefined) {
    if (algorithmRoots.size >= 64) algorithmRoots.clear()
    root = path.join(contentDir(dir), algorithm)
    algorithmRoots.set(id, root)
  }
  return root
}

export function contentDir(dir: string): string {
  return path.join(dir, 'content-v2')
}

export function signatureOf(st: fs.Stats): FileSignature {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs }
}

function sameSignature(a: FileSignature, b: fs.Stats): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs
}

export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

export type ContentRead =
  | { ok: true; body: StoredBody }
  | { ok: false; reason: 'missing' | 'corrupt' }

export interface ReadHooks {
  /** A streamed body turned out corrupt at its end (the stream errors right after). */
  onStreamCorrupt(): void
}

/**
 * Reads a body (or an inclusive byte range of it, already clamped by the
 * caller) and guarantees it matches content.integrity. Marks the content as
 * verified on success. Other I/O errors reject.
 */
export async function readContent(files: OpenFiles, content: ContentRecord, range: ByteRange | undefined, hooks: ReadHooks): Promise<ContentRead> {
  const pending = pendingBody(content, range)
  if (pending) return { ok: true, body: pending }
  const opened = await openCurrent(files, content.path)
  if (!opened) return { ok: false, reason: 'missing' }
  const { lease, st } = opened
  try {
    // A truncated or extended file cannot match: no need to hash it.
    if (st.size !== content.size) return { ok: false, reason: 'corrupt' }
    const fd = lease.fd
    const start = range ? range.start : 0
    const end = range ? range.end : content.size - 1
    const length = end - start + 1
    let trusted = content.verified !== undefined && sameSignature(content.verified, st)

    if (!trusted && content.size <= SMALL_BODY_BYTES) {
      const whole = await readExact(fd, 0, content.size)
      if (!matches(whole, content.integrity)) return { ok: false, reason: 'corrupt' }
      content.verified = signatureOf(st)
      return { ok: true, body: { kind: 'buffer', buffer: range ? whole.subarray(start, end + 1) : whole, tier: 'disk' } }
    }

    if (!trusted && range) {
      // A range of an unverified large file: only a whole-file hash can vouch
      // for it, so pay that once before serving any of its bytes.
      if ((await hashFile(fd, content.size, content.integrity)) !== content.integrity) return { ok: false, reason: 'corrupt' }
      content.verified = signatureOf(st)
      trusted = true
    }

    if (trusted && length <= SMALL_BODY_BYTES) {
      return { ok: true, body: { kind: 'buffer', buffer: await readExact(fd, start, length), tier: 'disk' } }
    }

    // A stream gets a descriptor of its own: fs streams close theirs when
    // destroyed (a client going away), whatever autoClose says.
    const source = fs.createReadStream(content.path, { fd: await openSame(content.path, st), start, end, autoClose: true })
    if (trusted) return { ok: true, body: { kind: 'stream', stream: source, tier: 'disk' } }
    return { ok: true, body: { kind: 'stream', stream: verifyingStream(source, content, signatureOf(st), hooks), tier: 'disk' } }
  } finally {
    lease.release()
  }
}

/**
 * Bodies up to this size that were verified in this process are read
 * synchronously, their file opened synchronously when it is not open yet: a
 * read of a few pages that the kernel most likely holds costs less than the
 * thread-pool round trips and promises of an asynchronous open, read and close
 * (the same trade nginx makes with its default `aio off`). A peer copying
 * thousands of objects for a populate spent most of its time in those round
 * trips.
 */
export const SYNC_READ_BYTES = 64 * 1024

/**
 * readContent() without waiting, for a hit: only when the body is small, was
 * verified before, and its file is unchanged (same signature, not unlinked).
 * Undefined means "use readContent()", never "missing".
 */
export function readTrustedNow(files: OpenFiles, content: ContentRecord, range: ByteRange | undefined): StoredBody | undefined {
  const pending = pendingBody(content, range)
  if (pending) return pending
  if (content.verified === undefined || content.size > SYNC_READ_BYTES) return undefined
  try {
    const fd = files.openNow(content.path)
    const st = fs.fstatSync(fd)
    if (st.nlink === 0 || !sameSignature(content.verified, st)) return undefined
    const start = range ? range.start : 0
    const length = (range ? range.end : content.size - 1) - start + 1
    const buffer = Buffer.allocUnsafe(length)
    let done = 0
    while (done < length) {
      const n = fs.readSync(fd, buffer, done, length - done, start + done)
      if (n === 0) return undefined // shrank under us: the asynchronous path will find out why
      done += n
    }
    return { kind: 'buffer', buffer, tier: 'disk' }
  } catch {
    return undefined // ENOENT, EIO and friends: readContent() finds out and reports them
  }
}

/** A body not yet on disk is answered from the bytes the disk writer is about to write (their digest was taken on the way in). */
function pendingBody(content: ContentRecord, range: ByteRange | undefined): StoredBody | undefined {
  const body = content.pending
  if (!body) return undefined
  return { kind: 'buffer', buffer: range ? body.subarray(range.start, range.end + 1) : body, tier: 'memory' }
}

/** Opens `filePath` again, insisting on the very file `expected` describes (it may have been replaced meanwhile). */
async function openSame(filePath: string, expected: fs.Stats): Promise<number> {
  const fd = await openFd(filePath, 'r')
  const st = fs.fstatSync(fd)
  if (st.ino === expected.ino && st.dev === expected.dev) return fd
  await closeFd(fd)
  throw Object.assign(new Error(`content file replaced while opening it: ${filePath}`), { code: 'ECHANGED' })
}

/**
 * A descriptor of the file now at `path` and its stat, or undefined when there
 * is none. A cached descriptor of a file since deleted or replaced (nlink 0)
 * is dropped and the path opened again.
 */
async function openCurrent(files: OpenFiles, filePath: string): Promise<{ lease: FileLease; st: fs.Stats } | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    let lease: FileLease
    try {
      lease = await files.acquire(filePath)
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    let st: fs.Stats
    try {
      // Synchronous on purpose: fstat of an open descriptor reads the inode the
      // kernel already holds in memory, never the disk, and saves the hit a
      // thread-pool round trip.
      st = fs.fstatSync(lease.fd)
    } catch (err) {
      lease.release(true)
      throw err
    }
    if (st.nlink > 0) return { lease, st }
    lease.release(true)
  }
  return undefined // unlinked again right after a fresh open: gone
}

/** Passes a whole body through, hashing it, and errors at the end instead of finishing when the digest is wrong. */
function verifyingStream(source: fs.ReadStream, content: ContentRecord, signature: FileSignature, hooks: ReadHooks): Transform {
  // A record whose integrity names no algorithm of ours has no path either (contentPath): never here.
  const hash = contentHash(algorithmOf(content.integrity))
  const check = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      callback(null, chunk)
    },
    flush(callback) {
      if (integrityOf(hash) === content.integrity) {
        content.verified = signature
        callback()
        return
      }
      hooks.onStreamCorrupt()
      callback(Object.assign(new Error(`cached body failed its integrity check: ${content.path}`), { code: 'EINTEGRITY' }))
    },
  })
  // pipeline() destroys the file stream when the consumer gives up early and
  // destroys `check` with any read error, so the consumer sees every failure
  // on the stream it holds; the callback would only get that same error again.
  pipeline(source, check, () => {})
  return check
}

/** Whether `body` has this integrity (by the algorithm it names; never for one that names none of ours). */
export function matches(body: Uint8Array, integrity: string): boolean {
  const algorithm = algorithmOf(integrity)
  return algorithm !== undefined && integrityOfBytes(body, algorithm) === integrity
}

async function readExact(fd: number, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length)
  let done = 0
  while (done < length) {
    const { bytesRead } = await readFd(fd, buffer, done, length - done, position + done)
    if (bytesRead === 0) throw Object.assign(new Error('content file shrank while reading'), { code: 'EINTEGRITY' })
    done += bytesRead
  }
  return buffer
}

/** The integrity of the file's first `size` bytes, by the algorithm `integrity` names. */
async function hashFile(fd: number, size: number, integrity: string): Promise<string> {
  const hash = contentHash(algorithmOf(integrity))
  const buffer = Buffer.allocUnsafe(Math.min(size, SMALL_BODY_BYTES))
  let position = 0
  while (position < size) {
    const { bytesRead } = await readFd(fd, buffer, 0, Math.min(buffer.length, size - position), position)
    if (bytesRead === 0) break
    hash.update(buffer.subarray(0, bytesRead))
    position += bytesRead
  }
  return integrityOf(hash)
}
