// Stored parts: 206 responses kept as one known range of their representation
// (RFC 9111 §3.3). A part lives beside the whole response of its variant under
// its own variant id, so neither ever replaces the other, and it only ever
// answers a range request that lies inside it: it is never taken for the whole.
// A new part of the same representation (same strong validator) that overlaps or
// adjoins the stored one is combined with it (RFC 9111 §3.4); when together they
// cover the whole representation, the result is stored as a complete 200.

import type { ByteRange, EntryMeta } from '../cache/types.ts'
import { varyFields, variantMatches } from './cache-key.ts'
import type { FlatHeaders } from './headers.ts'
import { decideReuse, isFreshnessPolicy, usableUnder, type StoreRules } from './policy.ts'
import { parseContentRange, rangeWithinPart, sameStrongValidator, strongValidator, type StoredPart } from './range.ts'

/** Appended to the variant id of a stored part. */
const PART_VARIANT_SUFFIX = '~part'

/** The variant id a response is stored under: its variant's, marked when it is a part. */
export function storedVariantId(status: number, variant: string): string {
  return status === 206 ? variant + PART_VARIANT_SUFFIX : variant
}

/**
 * A fresh stored part of the variant this request selects that holds all of the range it asks
 * for, if any (`variants`: the key's stored entries, or just its parts). Only plain GETs with a Range and no If-Range qualify (with If-Range the client
 * has a copy of its own to combine with). A stale part is not revalidated: a new range fill
 * replaces it.
 */
export function usablePart(method: string, headers: FlatHeaders, variants: readonly EntryMeta[], now: number, rules: StoreRules): EntryMeta | undefined {
  if (method !== 'GET' || headers.range === undefined || headers['if-range'] !== undefined) return undefined
  for (const v of variants) {
    if (v.status !== 206 || !isFreshnessPolicy(v.policy) || !usableUnder(v.policy, rules)) continue
    if (!variantMatches(v.varyHeaders, varyFields(v.headers.vary), headers)) continue
    if (!partSlice(v, headers.range)) continue
    if (decideReuse(v.policy, headers, now, v.softPurgedAt).kind === 'fresh') return v
  }
  return undefined
}

/**
 * What a stored part answers to a Range inside it (RFC 9110 §14.4, §15.3.7): the Content-Range
 * and Content-Length of the 206, and the bytes to read from the stored body.
 */
export function partSlice(meta: EntryMeta, rangeHeader: string | undefined): { contentRange: string; contentLength: string; body: ByteRange } | undefined {
  const part = parseContentRange(meta.headers['content-range'])
  const range = part && rangeWithinPart(rangeHeader, part)
  if (!part || !range) return undefined
  return {
    contentRange: `bytes ${range.start}-${range.end}/${part.length}`,
    contentLength: String(range.end - range.start + 1),
    body: { start: range.start - part.start, end: range.end - part.start },
  }
}

/**
 * The newest stored part of the variant this request selects, for a plain GET of the whole
 * response: the fill may complete it (completionRequest), and a whole response stored
 * supersedes it. Its freshness does not matter: what is combined with it must carry the same
 * strong validator, which shows both are bytes of one representation, and the combined
 * response takes the new response's fields.
 */
export function storedPartFor(req: { method: string; headers: FlatHeaders }, variants: readonly EntryMeta[]): EntryMeta | undefined {
  if (req.method !== 'GET' || req.headers.range !== undefined) return undefined
  let best: EntryMeta | undefined
  for (const v of variants) {
    if (v.status !== 206) continue
    if (!variantMatches(v.varyHeaders, varyFields(v.headers.vary), req.headers)) continue
    if (!best || v.storedAt > best.storedAt) best = v
  }
  return best
}

/**
 * The request fields that ask the origin for the rest of a stored part (RFC 9111 §3.3: a cache
 * MAY complete a stored incomplete response with a range request): the bytes after a part
 * that starts the representation, or those before one that ends it. If-Range carries the
 * part's strong validator (RFC 9110 §13.1.5), so a changed representation comes back whole as
 * a 200 rather than as a range of itself. Undefined when the part misses bytes on both sides.
 */
export function completionRequest(meta: EntryMeta): { range: string; 'if-range'?: string } | undefined {
  const part = parseContentRange(meta.headers['content-range'])
  if (!part) return undefined
  let range: string
  // A part that already spans the representation (stored as it came) leaves nothing to ask for.
  if (part.start === 0 && part.end === part.length - 1) return undefined
  if (part.start === 0) range = `bytes=${part.end + 1}-`
  else if (part.end === part.length - 1) range = `bytes=0-${part.start - 1}`
  else return undefined
  const validator = strongValidator(meta.headers)
  return validator === undefined ? { range } : { range, 'if-range': validator }
}

/** A new part combined with the stored one (RFC 9111 §3.4): what to store, and where its bytes come from. */
export interface CombinedPart {
  /** 200 when the union is the whole representation (RFC 9110 §15.3.7.3), else 206. */
  status: 200 | 206
  /** The range the combined body holds. */
  union: StoredPart
  /** Field values the combined response sets; `content-range: undefined` removes the field. */
  fields: { 'content-length': string; 'content-range': string | undefined }
  /** Fields only the stored part has, kept (§3.4: the new response's replace the stored ones they match). */
  storedOnly: FlatHeaders
  /** Bytes of the stored part's body that come before and after the new part's own. */
  before?: ByteRange
  after?: ByteRange
  /** Where the new part's bytes start in the combined body. */
  offset: number
}

/** Fields that describe one stored message rather than the representation: never carried over from the stored part. */
const PART_OWN_FIELDS: ReadonlySet<string> = new Set(['content-range', 'content-length', 'age', 'cache-status'])

/**
 * How a new 206 (`incoming`, its cleaned fields) combines with the stored part of its variant
 * (RFC 9111 §3.4, RFC 9110 §15.3.7.3). Only parts of one representation combine: the same
 * strong validator (sameStrongValidator; never none or a weak one), the same complete length
 * and Content-Encoding, and ranges that overlap or adjoin, so the union is one range. The new
 * response's fields are used, aside from Content-Range; fields only the stored part has stay.
 * A new part that is the whole representation on its own is a complete 200 too. Undefined
 * when there is nothing to combine: the new part is then stored as it came.
 */
export function combineParts(stored: Pick<EntryMeta, 'status' | 'headers'> | undefined, incoming: FlatHeaders): CombinedPart | undefined {
  const part = parseContentRange(incoming['content-range'])
  if (!part || incoming['content-length'] === undefined || Number(incoming['content-length']) !== part.end - part.start + 1) return undefined
  let union: StoredPart = part
  let held: StoredPart | undefined
  if (stored?.status === 206) {
    held = parseContentRange(stored.headers['content-range'])
    const combinable =
      held !== undefined &&
      held.length === part.length &&
      (stored.headers['content-encoding'] ?? '') === (incoming['content-encoding'] ?? '') &&
      sameStrongValidator(stored.headers, incoming) &&
      held.start <= part.end + 1 &&
      part.start <= held.end + 1
    if (combinable) union = { start: Math.min(held!.start, part.start), end: Math.max(held!.end, part.end), length: part.length }
    else held = undefined
  }
  const complete = union.start === 0 && union.end === union.length - 1
  if (!held && !complete) return undefined
  const before = held && held.start < part.start ? { start: 0, end: part.start - held.start - 1 } : undefined
  const after = held && held.end > part.end ? { start: part.end + 1 - held.start, end: held.end - held.start } : undefined
  const storedOnly: FlatHeaders = {}
  if (held) {
    for (const name in stored!.headers) if (!PART_OWN_FIELDS.has(name) && incoming[name] === undefined) storedOnly[name] = stored!.headers[name]!
  }
  return {
    status: complete ? 200 : 206,
    union,
    fields: {
      'content-length': String(union.end - union.start + 1),
      'content-range': complete ? undefined : `bytes ${union.start}-${union.end}/${union.length}`,
    },
    storedOnly,
    before,
    after,
    offset: before ? before.end + 1 : 0,
  }
}
