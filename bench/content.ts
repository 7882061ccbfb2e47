// The benchmark's content: deterministic bodies and headers shared by the
// origin, the bare server and the body checks, so every system is judged
// against the same bytes.

import { createHash } from 'node:crypto'

export const KIB = 1024
export const OBJECT_COUNT = 10_000
export const OBJECT_SIZE = 10 * KIB

/** Fixed paths and their body sizes. */
export const FIXED_SIZES: Record<string, number> = {
  '/1k': KIB,
  '/64k': 64 * KIB,
  '/1m': 1024 * KIB,
  '/nocache-1k': KIB,
}

export const CACHEABLE = 'public, max-age=3600'
export const NOT_CACHEABLE = 'no-store'
const LAST_MODIFIED = 'Mon, 01 Jan 2024 00:00:00 GMT'

/** Deterministic pseudo-random bytes (xorshift32), different per seed. */
export function pseudoRandomBytes(size: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(size)
  let x = seed >>> 0 || 0x9e3779b9
  let i = 0
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    buf.writeUInt32LE(x >>> 0, i)
  }
  for (; i < size; i++) buf[i] = (x >>> (8 * (i & 3))) & 0xff
  return buf
}

function seedOf(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32LE(0)
}

const OBJECT_BASE = pseudoRandomBytes(OBJECT_SIZE, seedOf('/obj'))

/** `/obj/<n>` body: a shared random base with the object's own label stamped every KiB, so two objects never look alike. */
export function objectBody(n: number): Buffer {
  const body = Buffer.from(OBJECT_BASE)
  const label = `<obj ${n}>`
  for (let off = 0; off + label.length <= body.length; off += KIB) body.write(label, off, 'latin1')
  return body
}

/** Parse `/obj/<n>` (a query string is ignored); undefined when the path is not an object. */
export function objectIndex(path: string): number | undefined {
  const q = path.indexOf('?')
  const p = q < 0 ? path : path.slice(0, q)
  const m = /^\/obj\/(\d{1,5})$/.exec(p)
  if (!m) return undefined
  const n = Number(m[1])
  return n < OBJECT_COUNT ? n : undefined
}

export interface Content {
  body: Buffer
  headers: Record<string, string>
  etag: string
}

const fixedCache = new Map<string, Content>()

function makeContent(body: Buffer, etag: string, cacheControl: string): Content {
  return {
    body,
    etag,
    headers: {
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': cacheControl,
      etag,
      'last-modified': LAST_MODIFIED,
    },
  }
}

/** The body and headers for a benchmark path, or undefined for an unknown path (a 404). */
export function contentFor(path: string): Content | undefined {
  const q = path.indexOf('?')
  const p = q < 0 ? path : path.slice(0, q)
  const size = FIXED_SIZES[p]
  if (size !== undefined) {
    let c = fixedCache.get(p)
    if (!c) {
      const body = pseudoRandomBytes(size, seedOf(p))
      const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`
      c = makeContent(body, etag, p.startsWith('/nocache') ? NOT_CACHEABLE : CACHEABLE)
      fixedCache.set(p, c)
    }
    return c
  }
  const n = objectIndex(p)
  if (n === undefined) return undefined
  return makeContent(objectBody(n), `"obj-${n}-v1"`, CACHEABLE)
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex')
}
