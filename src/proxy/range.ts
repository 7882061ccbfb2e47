// Single byte-range requests answered from a stored body (RFC 9110 §14), and
// the stored parts (206 responses) that can answer some of them.

import type { ByteRange } from '../cache/types.ts'
import type { FlatHeaders } from './headers.ts'
import { parseHttpDate as httpDate } from './http-date.ts'

export type RangeResult = { kind: 'none' } | { kind: 'range'; range: ByteRange } | { kind: 'unsatisfiable' }

/**
 * Parse a Range header against a body of `size` bytes. Multiple ranges and
 * anything malformed are answered with the full body (RFC 9110 §14.2: a server
 * MAY ignore Range).
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'none' }
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!m) return { kind: 'none' }
  const [, a, b] = m
  if (a === '' && b === '') return { kind: 'none' }
  let start: number
  let end: number
  if (a === '') {
    const suffix = Number(b)
    if (suffix === 0) return { kind: 'unsatisfiable' }
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(a)
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
    if (b !== '' && Number(b) < start) return { kind: 'none' }
  }
  if (start >= size || size === 0) return { kind: 'unsatisfiable' }
  return { kind: 'range', range: { start, end } }
}

/** If-Range (RFC 9110 §13.1.5): the range applies only if the validator still matches; strong comparison. */
export function ifRangeAllows(reqHeaders: FlatHeaders, stored: FlatHeaders): boolean {
  const ifRange = reqHeaders['if-range']
  if (ifRange === undefined) return true
  const v = ifRange.trim()
  if (v.startsWith('"') || v.startsWith('W/')) return !v.startsWith('W/') && !!stored.etag && !stored.etag.startsWith('W/') && stored.etag === v
  const date = httpDate(v)
  const lm = httpDate(stored['last-modified'])
  return date !== undefined && lm !== undefined && date === lm
}

/**
 * The strong validator of a response (RFC 9110 §8.8.1), the one If-Range may carry (§13.1.5):
 * its entity tag unless that is weak, else, with no entity tag at all, a Last-Modified that is
 * strong by §8.8.2.2 (see strongLastModified). Undefined when the response has none.
 */
export function strongValidator(headers: FlatHeaders): string | undefined {
  const etag = headers.etag?.trim()
  if (etag !== undefined) return etag.startsWith('W/') ? undefined : etag
  return strongLastModified(headers) !== undefined ? headers['last-modified']!.trim() : undefined
}

/**
 * RFC 9110 §8.8.2.2: a Last-Modified is only as strong as the one-second resolution of dates
 * allows. A cache may treat it as strong when its entry's Date is at least one second later
 * (two changes within that second would share it). Epoch ms of the date when strong.
 */
function strongLastModified(headers: FlatHeaders): number | undefined {
  const lm = httpDate(headers['last-modified'])
  const date = httpDate(headers.date)
  return lm !== undefined && date !== undefined && date - lm >= 1000 ? lm : undefined
}

/**
 * Whether two responses carry the same strong validator, so their bytes belong to one
 * representation (RFC 9110 §8.8.3.2 strong comparison; §15.3.7.3 combines parts only then).
 * Entity tags decide when either has one: both strong and identical. Without entity tags, both
 * Last-Modified dates must be strong and equal. No validator, a weak one or a mismatch: false.
 */
export function sameStrongValidator(a: FlatHeaders, b: FlatHeaders): boolean {
  if (a.etag !== undefined || b.etag !== undefined) {
    const ea = a.etag?.trim()
    const eb = b.etag?.trim()
    return ea !== undefined && eb !== undefined && !ea.startsWith('W/') && ea === eb
  }
  const la = strongLastModified(a)
  return la !== undefined && la === strongLastModified(b)
}

/** One stored range of a representation: bytes `start`-`end` of `length`. */
export interface StoredPart {
  start: number
  end: number
  length: number
}

/**
 * The Content-Range of a single-part 206 (RFC 9110 §14.4): `bytes first-last/complete-length`.
 * Undefined for anything else, an unknown complete length (`/*`) included: such a part could
 * never be placed in its representation.
 */
export function parseContentRange(value: string | undefined): StoredPart | undefined {
  if (value === undefined) return undefined
  const m = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/i.exec(value.trim())
  if (!m) return undefined
  const start = Number(m[1])
  const end = Number(m[2])
  const length = Number(m[3])
  if (start > end || end >= length) return undefined
  return { start, end, length }
}

/** The range a request asks for, when a stored part holds all of it (in the representation's byte positions). */
export function rangeWithinPart(header: string | undefined, part: StoredPart): ByteRange | undefined {
  const r = parseRange(header, part.length)
  if (r.kind !== 'range') return undefined
  return r.range.start >= part.start && r.range.end <= part.end ? r.range : undefined
}
