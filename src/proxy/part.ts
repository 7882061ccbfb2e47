// Stored parts: 206 responses kept as one known range of their representation
// (RFC 9111 §3.3). A part lives beside the whole response of its variant under
// its own variant id, so neither ever replaces the other, and it only ever
// answers a range request that lies inside it: it is never taken for the whole.

import type { ByteRange, EntryMeta } from '../cache/types.ts'
import { varyFields, variantMatches } from './cache-key.ts'
import type { FlatHeaders } from './headers.ts'
import { decideReuse, isFreshnessPolicy, usableUnder, type StoreRules } from './policy.ts'
import { parseContentRange, rangeWithinPart } from './range.ts'

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
