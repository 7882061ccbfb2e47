// Cache keys. The primary key is scheme + host + path + query, with HEAD
// folded into GET (a HEAD is answered from the GET entry). Variants under a
// key are told apart by the request headers the response names in Vary
// (RFC 9111 §4.1), normalised so equivalent requests share one variant.

import { createHash } from 'node:crypto'
import type { FlatHeaders } from './headers.ts'

export function primaryKey(scheme: string, host: string, pathAndQuery: string): string {
  return `${scheme}://${host}${pathAndQuery}`
}

/** Field names listed in Vary, lower-cased, de-duplicated, sorted. */
export function varyFields(vary: string | undefined): string[] {
  if (!vary) return []
  const names = new Set<string>()
  for (const part of vary.split(',')) {
    const n = part.trim().toLowerCase()
    if (n) names.add(n)
  }
  return [...names].sort()
}

/** Fields whose values are secrets: kept only as a digest, never in clear on disk. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(['cookie', 'authorization', 'proxy-authorization'])

/**
 * Normalise one request header value for variant matching (RFC 9111 §4.1
 * allows normalising whitespace and case where the field's semantics permit).
 * Accept-Encoding is a set of codings: `gzip, br` and `br,gzip` are one variant,
 * and codings refused with q=0 are dropped.
 */
export function normaliseFieldValue(name: string, value: string | undefined): string {
  if (value === undefined) return ''
  if (name === 'accept-encoding') {
    const codings = new Set<string>()
    for (const part of value.split(',')) {
      const [coding, ...params] = part.split(';')
      const c = coding!.trim().toLowerCase()
      if (!c) continue
      const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='))
      if (q && Number(q.slice(2)) === 0) continue
      codings.add(c === 'x-gzip' ? 'gzip' : c)
    }
    return [...codings].sort().join(',')
  }
  const collapsed = value.trim().replace(/\s+/g, ' ')
  if (SECRET_FIELDS.has(name)) return collapsed ? `sha256:${createHash('sha256').update(collapsed).digest('base64url')}` : ''
  return collapsed
}

/** The normalised values of the Vary'd fields of a request. */
export function varyValues(fields: readonly string[], headers: FlatHeaders): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of fields) out[f] = normaliseFieldValue(f, headers[f])
  return out
}

/** Variant id: '' without Vary; else a digest of the field names and normalised values. */
export function variantId(values: Record<string, string>): string {
  const names = Object.keys(values).sort()
  if (names.length === 0) return ''
  const h = createHash('sha256')
  for (const n of names) h.update(n).update('\0').update(values[n]!).update('\n')
  return h.digest('base64url').slice(0, 22)
}

/** Does a stored variant match this request? Both sides normalised the same way. */
export function variantMatches(stored: Record<string, string>, fields: readonly string[], headers: FlatHeaders): boolean {
  for (const f of fields) {
    if ((stored[f] ?? '') !== normaliseFieldValue(f, headers[f])) return false
  }
  return true
}
