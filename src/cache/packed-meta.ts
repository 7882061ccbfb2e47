// One stored variant's metadata as one flat string, for the disk tier's
// in-memory index. An EntryMeta as objects costs about 2.8 KB of heap (a
// dozen strings, a headers object, a policy object, their hidden classes);
// packed it is one string of about 200 one-byte characters. The index
// decodes a variant's metadata when it is asked for and keeps the hottest
// decoded (entry-index.ts), so a hit on a hot entry decodes nothing.
//
// Layout: `${key}\0${variant}\0` (the entry id, so lookups compare prefixes
// without decoding), then a format tag and the other fields. Strings that
// repeat across entries (header names, hosts, origins, content types,
// Cache-Control values, tags) are written as a number into a table shared by
// every index in the process; HTTP dates and integers as numbers; the rest as
// length-prefixed text. Numbers are base-64 varints in characters 0..127, so a
// packed string stays one byte per character whenever its text does.
// Metadata the compact form cannot express exactly (an unknown field, a policy
// of another shape) is kept as JSON after the tag instead: never lossy.
//
// Size and integrity are not packed: the index keeps them with the content file.

import type { FreshnessPolicy } from '../proxy/policy.ts'
import type { EntryMeta, NewEntry, PurgeFields } from './types.ts'

const COMPACT = 'A'
const JSON_FORM = 'J'

// ---- the shared string table ------------------------------------------------

/** Bounds of the shared table: it never shrinks, so it must not grow with unique values. */
const MAX_INTERNED = 65_536
const MAX_INTERNED_CHARS = 4 * 1024 * 1024
const MAX_INTERNED_LENGTH = 256

const internedIds = new Map<string, number>()
const interned: string[] = []
let internedChars = 0

function internId(s: string): number {
  const id = internedIds.get(s)
  if (id !== undefined) return id
  if (s.length > MAX_INTERNED_LENGTH || interned.length >= MAX_INTERNED || internedChars + s.length > MAX_INTERNED_CHARS) return -1
  internedIds.set(s, interned.length)
  interned.push(s)
  internedChars += s.length
  return interned.length - 1
}

/** How many strings the shared table holds (for tests and measures). */
export function internedCount(): number {
  return interned.length
}

/**
 * Response header fields whose values repeat across responses, so their values are worth
 * a table entry. Others (ETag, Date, Content-Length...) are unique per response.
 */
const REPEATING_VALUES = new Set([
  'content-type', 'cache-control', 'cdn-cache-control', 'surrogate-control', 'vary', 'content-encoding', 'server',
  'accept-ranges', 'content-language', 'x-content-type-options', 'x-frame-options', 'strict-transport-security',
  'referrer-policy', 'timing-allow-origin', 'x-powered-by', 'x-xss-protection', 'cross-origin-resource-policy',
  'cross-origin-opener-policy', 'cross-origin-embedder-policy', 'permissions-policy', 'content-security-policy',
  'access-control-allow-origin', 'access-control-allow-credentials', 'access-control-allow-methods',
  'access-control-allow-headers', 'access-control-expose-headers', 'access-control-max-age', 'pragma', 'expires',
])

// ---- writing ----------------------------------------------------------------

class Writer {
  readonly parts: string[] = []

  uint(n: number): void {
    while (n >= 64) {
      this.parts.push(String.fromCharCode(64 + (n % 64)))
      n = Math.floor(n / 64)
    }
    this.parts.push(String.fromCharCode(n))
  }

  text(s: string): void {
    this.uint(s.length)
    this.parts.push(s)
  }

  /** Any number, exactly: safe integers as varints, the rest (fractions, Infinity) as their shortest round-trip text. */
  number(n: number): void {
    if (Number.isSafeInteger(n)) {
      this.parts.push(n < 0 ? 'b' : 'a')
      this.uint(Math.abs(n))
    } else {
      this.parts.push('c')
      this.text(String(n))
    }
  }

  /** A string, from the shared table when `repeats` and it fits, else as a date, an integer or text. */
  value(s: string, repeats: boolean): void {
    if (repeats) {
      const id = internId(s)
      if (id >= 0) {
        this.parts.push('i')
        this.uint(id)
        return
      }
    }
    // RFC 9110 §5.6.7 IMF-fixdate, the only form a sender generates: 29 characters ending in GMT.
    if (s.length === 29 && s.endsWith(' GMT')) {
      const t = imfSeconds(s)
      if (t >= 0) {
        this.parts.push('d')
        this.uint(t)
        return
      }
    }
    if (s.length > 0 && s.length <= 15 && DIGITS.test(s)) {
      this.parts.push('n')
      this.uint(Number(s))
      return
    }
    this.parts.push('s')
    this.text(s)
  }

  record(fields: Readonly<Record<string, string>>, repeats: (name: string) => boolean): void {
    const names = Object.keys(fields)
    this.uint(names.length)
    for (const name of names) {
      this.value(name, true)
      this.value(fields[name]!, repeats(name))
    }
  }
}

const DIGITS = /^(?:0|[1-9][0-9]*)$/

/**
 * Recent IMF-fixdate strings and their seconds (-1: not one that formats back to itself). The
 * same few dates come with response after response (Date changes once a second, Last-Modified
 * and Expires repeat per object), and parsing one and formatting it back to check it was most
 * of what packing a date cost.
 */
const imfDates = new Map<string, number>()
const IMF_DATES_KEPT = 256

/** Seconds since the epoch of an IMF-fixdate that Date formats back exactly, else -1. */
function imfSeconds(s: string): number {
  let t = imfDates.get(s)
  if (t === undefined) {
    const ms = Date.parse(s)
    t = ms >= 0 && ms % 1000 === 0 && new Date(ms).toUTCString() === s ? ms / 1000 : -1
    if (imfDates.size >= IMF_DATES_KEPT) imfDates.clear()
    imfDates.set(s, t)
  }
  return t
}

/** The fields of a FreshnessPolicy (proxy/policy.ts), in order: a policy with exactly these is packed as numbers. */
const POLICY_FIELDS = ['v', 'requestTime', 'responseTime', 'initialAge', 'lifetime', 'heuristic', 'noCache', 'mustRevalidate', 'staleWhileRevalidate', 'staleIfError', 'source']
const META_FIELDS = new Set(['key', 'variant', 'url', 'host', 'status', 'headers', 'varyHeaders', 'policy', 'storedAt', 'staleAt', 'deleteAt', 'tags', 'contentType', 'origin', 'via', 'size', 'integrity'])

/** The proxy's freshness policy (proxy/policy.ts), the one shape packed field by field; any other is kept as JSON. */
type PackablePolicy = FreshnessPolicy

function isPackablePolicy(p: unknown): p is PackablePolicy {
  if (typeof p !== 'object' || p === null) return false
  const q = p as Record<string, unknown>
  // Exactly the policy's own fields, each of its type: as many own fields as it has, and each of
  // them read by name (every miss packs one, and a list of names made each check a scan).
  let fields = 0
  for (const k in q) if (Object.hasOwn(q, k)) fields++
  return (
    fields === POLICY_FIELDS.length &&
    q.v === 1 &&
    typeof q.requestTime === 'number' && typeof q.responseTime === 'number' && typeof q.initialAge === 'number' &&
    typeof q.lifetime === 'number' && typeof q.staleWhileRevalidate === 'number' && typeof q.staleIfError === 'number' &&
    typeof q.heuristic === 'boolean' && typeof q.noCache === 'boolean' && typeof q.mustRevalidate === 'boolean' &&
    (q.source === 'cdn-cache-control' || q.source === 'cache-control')
  )
}

function isStringRecord(r: unknown): r is Record<string, string> {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return false
  for (const k in r) if (typeof (r as Record<string, unknown>)[k] !== 'string') return false
  return true
}

/** Whether every field of `meta` has the shape the compact form writes (else it is kept as JSON). */
function compactable(meta: NewEntry): boolean {
  for (const k in meta) {
    if (Object.hasOwn(meta, k) && !META_FIELDS.has(k)) return false
  }
  return (
    typeof meta.url === 'string' && typeof meta.host === 'string' && typeof meta.contentType === 'string' &&
    typeof meta.status === 'number' && Number.isSafeInteger(meta.status) && meta.status >= 0 &&
    typeof meta.storedAt === 'number' && typeof meta.staleAt === 'number' && typeof meta.deleteAt === 'number' &&
    isStringRecord(meta.headers) && isStringRecord(meta.varyHeaders) &&
    Array.isArray(meta.tags) && meta.tags.every((t) => typeof t === 'string') &&
    (meta.origin === undefined || typeof meta.origin === 'string') &&
    (meta.via === undefined || typeof meta.via === 'string') &&
    (meta.policy === undefined || isPackablePolicy(meta.policy))
  )
}

/** The id part every packed string starts with (see entry-index.ts entryId). */
export function packedPrefix(key: string, variant: string): string {
  return `${key}\u0000${variant}\u0000`
}

/** Packs a variant's metadata (size and integrity, if present, are left out). */
export function packMeta(meta: NewEntry | EntryMeta): string {
  const w = new Writer()
  w.parts.push(packedPrefix(meta.key, meta.variant))
  if (!compactable(meta)) {
    const { key: _k, variant: _v, size: _s, integrity: _i, ...rest } = meta as EntryMeta
    w.parts.push(JSON_FORM, JSON.stringify(rest))
    return w.parts.join('')
  }
  w.parts.push(COMPACT)
  // The url is nearly always the key itself (proxy/cache-key.ts).
  if (meta.url === meta.key) w.uint(0)
  else {
    w.uint(meta.url.length + 1)
    w.parts.push(meta.url)
  }
  w.value(meta.host, true)
  w.uint(meta.status)
  w.number(meta.storedAt)
  w.number(meta.staleAt - meta.storedAt)
  w.number(meta.deleteAt - meta.storedAt)
  w.record(meta.headers, (name) => REPEATING_VALUES.has(name))
  w.record(meta.varyHeaders, () => true)
  const p = meta.policy
  if (p === undefined) w.parts.push('U')
  else {
    const policy = p as PackablePolicy
    w.parts.push('P')
    w.number(policy.requestTime - meta.storedAt)
    w.number(policy.responseTime - meta.storedAt)
    w.number(policy.initialAge)
    w.number(policy.lifetime)
    w.number(policy.staleWhileRevalidate)
    w.number(policy.staleIfError)
    w.uint((policy.heuristic ? 1 : 0) | (policy.noCache ? 2 : 0) | (policy.mustRevalidate ? 4 : 0) | (policy.source === 'cdn-cache-control' ? 8 : 0))
  }
  w.uint(meta.tags.length)
  for (const tag of meta.tags) w.value(tag, true)
  w.value(meta.contentType, true)
  const optional = (meta.origin !== undefined ? 1 : 0) | (meta.via !== undefined ? 2 : 0) | ('origin' in meta ? 4 : 0) | ('via' in meta ? 8 : 0)
  w.uint(optional)
  if (meta.origin !== undefined) w.value(meta.origin, true)
  if (meta.via !== undefined) w.value(meta.via, true)
  // Array.prototype.join makes a flat string: a rope of concatenations would cost a node per piece.
  return w.parts.join('')
}

// ---- reading ----------------------------------------------------------------

class Reader {
  at: number
  constructor(
    readonly s: string,
    at: number,
  ) {
    this.at = at
  }

  uint(): number {
    let n = 0
    let scale = 1
    for (;;) {
      const c = this.s.charCodeAt(this.at++)
      if (c >= 64) {
        n += (c - 64) * scale
        scale *= 64
      } else {
        if (Number.isNaN(c)) throw new Error('packed metadata ends early')
        return n + c * scale
      }
    }
  }

  text(): string {
    const length = this.uint()
    const start = this.at
    this.at += length
    return this.s.slice(start, this.at)
  }

  tag(): string {
    return this.s[this.at++]!
  }

  number(): number {
    const tag = this.tag()
    if (tag === 'a') return this.uint()
    if (tag === 'b') return -this.uint()
    if (tag === 'c') return Number(this.text())
    throw new Error(`packed metadata: bad number tag ${JSON.stringify(tag)}`)
  }

  value(): string {
    const tag = this.tag()
    if (tag === 'i') return interned[this.uint()]!
    if (tag === 's') return this.text()
    if (tag === 'd') return new Date(this.uint() * 1000).toUTCString()
    if (tag === 'n') return String(this.uint())
    throw new Error(`packed metadata: bad value tag ${JSON.stringify(tag)}`)
  }

  record(): Record<string, string> {
    const out: Record<string, string> = {}
    for (let n = this.uint(); n > 0; n--) {
      const name = this.value()
      out[name] = this.value()
    }
    return out
  }

  skipText(): void {
    const length = this.uint()
    this.at += length
  }

  /** Past a number, decoding nothing. */
  skipNumber(): void {
    if (this.tag() === 'c') this.skipText()
    else this.uint()
  }

  /** Past a value, decoding nothing (no string, no date made). */
  skipValue(): void {
    if (this.tag() === 's') this.skipText()
    else this.uint()
  }

  skipRecord(): void {
    for (let n = this.uint(); n > 0; n--) {
      this.skipValue()
      this.skipValue()
    }
  }
}

/** The key and variant at the start of a packed string, and where the variant ends. */
function splitKey(packed: string): { key: string; variant: string; variantEnd: number } {
  const keyEnd = packed.indexOf('\u0000')
  const variantEnd = packed.indexOf('\u0000', keyEnd + 1)
  return { key: packed.slice(0, keyEnd), variant: packed.slice(keyEnd + 1, variantEnd), variantEnd }
}

/** The URL of a compact record: stored only when it differs from the key (length 0 means "the key"). */
function readUrl(r: Reader, packed: string, key: string): string {
  const urlLength = r.uint()
  if (urlLength === 0) return key
  const url = packed.slice(r.at, r.at + urlLength - 1)
  r.at += urlLength - 1
  return url
}

/**
 * The fields a purge matches on, read from a packed string without decoding
 * the rest: a purge's pass over 100,000 entries decoding each whole (headers,
 * dates, policy: about 2.8 KB of objects apiece) made hundreds of MB of
 * garbage in a second, and its collection paused the node for 70–100 ms.
 */
export function unpackPurgeFields(packed: string): PurgeFields {
  const { key, variant, variantEnd } = splitKey(packed)
  if (packed[variantEnd + 1] !== COMPACT) {
    const { url, host, tags, storedAt } = unpackMeta(packed, 0, '')
    return { key, variant, url, host, tags, storedAt }
  }
  const r = new Reader(packed, variantEnd + 2)
  const url = readUrl(r, packed, key)
  const host = r.value()
  r.uint() // status
  const storedAt = r.number()
  r.skipNumber() // staleAt
  r.skipNumber() // deleteAt
  r.skipRecord() // headers
  r.skipRecord() // varyHeaders
  // The policy: six numbers and the flags.
  if (r.tag() === 'P') {
    for (let i = 0; i < 6; i++) r.skipNumber()
    r.uint()
  }
  const count = r.uint()
  const tags: string[] = count === 0 ? NO_TAGS : []
  for (let n = count; n > 0; n--) tags.push(r.value())
  return { key, variant, url, host, tags, storedAt }
}

/** Shared by every entry without tags: nothing reads it but `includes`. */
const NO_TAGS: string[] = Object.freeze([]) as unknown as string[]

/** The length of the key at the start of a packed string. */
export function packedKeyLength(packed: string): number {
  return packed.indexOf('\u0000')
}

/** Unpacks metadata packed by packMeta, with the size and integrity the index keeps beside it. */
export function unpackMeta(packed: string, size: number, integrity: string): EntryMeta {
  const { key, variant, variantEnd } = splitKey(packed)
  const form = packed[variantEnd + 1]
  if (form === JSON_FORM) {
    const rest = JSON.parse(packed.slice(variantEnd + 2)) as Omit<NewEntry, 'key' | 'variant'>
    return { key, variant, ...rest, size, integrity }
  }
  if (form !== COMPACT) throw new Error(`packed metadata: unknown form ${JSON.stringify(form)}`)
  const r = new Reader(packed, variantEnd + 2)
  const url = readUrl(r, packed, key)
  const host = r.value()
  const status = r.uint()
  const storedAt = r.number()
  const staleAt = storedAt + r.number()
  const deleteAt = storedAt + r.number()
  const headers = r.record()
  const varyHeaders = r.record()
  let policy: PackablePolicy | undefined
  if (r.tag() === 'P') {
    const requestTime = storedAt + r.number()
    const responseTime = storedAt + r.number()
    const initialAge = r.number()
    const lifetime = r.number()
    const staleWhileRevalidate = r.number()
    const staleIfError = r.number()
    const flags = r.uint()
    policy = {
      v: 1,
      requestTime,
      responseTime,
      initialAge,
      lifetime,
      heuristic: (flags & 1) !== 0,
      noCache: (flags & 2) !== 0,
      mustRevalidate: (flags & 4) !== 0,
      staleWhileRevalidate,
      staleIfError,
      source: (flags & 8) !== 0 ? 'cdn-cache-control' : 'cache-control',
    }
  }
  const tags: string[] = []
  for (let n = r.uint(); n > 0; n--) tags.push(r.value())
  const contentType = r.value()
  const optional = r.uint()
  const origin = (optional & 1) !== 0 ? r.value() : undefined
  const via = (optional & 2) !== 0 ? r.value() : undefined
  // The same fields in the same order as the object the proxy stored, so both print alike.
  const meta = { key, variant, url, host, status, headers, varyHeaders, policy, storedAt, staleAt, deleteAt, tags, contentType } as EntryMeta
  if ((optional & 4) !== 0) meta.origin = origin
  if ((optional & 8) !== 0) meta.via = via
  meta.size = size
  meta.integrity = integrity
  return meta
}
