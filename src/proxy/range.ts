// Single byte-range requests answered from a stored body (RFC 9110 §14).

import type { ByteRange } from '../cache/types.ts'
import { httpDate } from './policy.ts'
import type { FlatHeaders } from './headers.ts'

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
