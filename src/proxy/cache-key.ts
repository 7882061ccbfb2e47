// Cache keys. The primary key is scheme + host + path + query, with HEAD
// folded into GET (a HEAD is answered from the GET entry). Variants under a
// key are told apart by the request headers the response names in Vary
// (RFC 9111 §4.1), normalised so equivalent requests share one variant.

import { createHash } from 'node:crypto'
import type { FlatHeaders } from './headers.ts'

export function primaryKey(scheme: string, host: string, pathAndQuery: string): string {
  return `${scheme}://${host}${pathAndQuery}`
}

const NO_FIELDS: readonly string[] = Object.freeze([])

/** Field names listed in Vary, lower-cased, de-duplicated, sorted. */
export function varyFields(vary: string | undefined): readonly string[] {
  if (!vary) return NO_FIELDS
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
 * The normalised value of a field that is present but normalises to nothing (`X-Lang:`,
 * `Accept-Encoding: gzip;q=0`). RFC 9111 §4.1: an absent field only matches an absent
 * one, and an empty Accept-Encoding means "no coding" where an absent one means "any"
 * (RFC 9110 §12.5.3). No normalised value can equal it: they never start with a space.
 */
const PRESENT_EMPTY = ' '

/** A field's value; own properties only, so Vary: constructor / __proto__ are ordinary fields. */
function fieldValue(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  return Object.hasOwn(headers, name) ? headers[name] : undefined
}

/** Collapse HTTP whitespace (SP, HTAB; RFC 9110 §5.6.3) and trim it. Not JavaScript's \s or trim(), which also eat NBSP (obs-text) and other Unicode spaces the origin may tell apart. */
function collapseOws(value: string): string {
  const collapsed = value.replace(/[ \t]+/g, ' ')
  const from = collapsed.startsWith(' ') ? 1 : 0
  const to = collapsed.endsWith(' ') ? collapsed.length - 1 : collapsed.length
  return from >= to ? '' : collapsed.slice(from, to)
}

/**
 * Drop the optional whitespace around list commas (RFC 9110 §5.6.1), outside quoted-strings:
 * `1,2`, ` 1, 2 ` and two field lines `1` and `2` (joined as `1, 2`) are one value. Linear:
 * request fields are client input.
 */
function tightenListOws(value: string): string {
  if (!value.includes(',')) return value
  const out: string[] = []
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!
    if (quoted) {
      out.push(c)
      if (c === '\\' && i + 1 < value.length) out.push(value[++i]!)
      else if (c === '"') quoted = false
    } else if (c === '"') {
      quoted = true
      out.push(c)
    } else if (c === ',') {
      // collapseOws left at most one space on either side.
      if (out[out.length - 1] === ' ') out.pop()
      out.push(c)
      if (value[i + 1] === ' ') i++
    } else out.push(c)
  }
  return out.join('')
}

/**
 * Accept-Language as the set of language ranges with their weights (RFC 9110 §12.5.4): case,
 * whitespace and the order of equally weighted ranges do not change which language the
 * origin picks, so `en, de`, `de,en` and `DE, EN` are one variant. Canonical form: by weight
 * (highest first), then by name; `q=1` (the default) is left out.
 */
function normaliseAcceptLanguage(value: string): string {
  const ranges: Array<{ tag: string; q: number; text: string }> = []
  for (const part of value.split(',')) {
    const [range, ...params] = part.split(';')
    const tag = collapseOws(range!).toLowerCase()
    if (!tag) continue
    let q = 1
    let text = tag
    for (const p of params) {
      const param = collapseOws(p).toLowerCase().replace(/ /g, '')
      const weight = /^q=([01](?:\.\d{0,3})?)$/.exec(param)
      if (weight && Number(weight[1]) <= 1) q = Number(weight[1])
      // A parameter that is not a valid weight is kept as sent: the origin may read it.
      else if (param) text += `;${param}`
    }
    if (q !== 1) text += `;q=${q}`
    ranges.push({ tag, q, text })
  }
  ranges.sort((a, b) => b.q - a.q || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0))
  return ranges.map((r) => r.text).join(',')
}

/**
 * Normalise one request header value for variant matching (RFC 9111 §4.1
 * allows normalising whitespace and case where the field's semantics permit).
 * Accept-Encoding is a set of codings: `gzip, br` and `br,gzip` are one variant,
 * and codings refused with q=0 are dropped. Accept-Language is a weighted set of
 * language ranges (see normaliseAcceptLanguage). Any other field loses only the
 * optional whitespace around its list commas.
 */
export function normaliseFieldValue(name: string, value: string | undefined): string {
  if (value === undefined) return ''
  if (name === 'accept-language') return normaliseAcceptLanguage(value) || PRESENT_EMPTY
  if (name === 'accept-encoding') {
    const codings = new Set<string>()
    for (const part of value.split(',')) {
      const [coding, ...params] = part.split(';')
      const c = collapseOws(coding!).toLowerCase()
      if (!c) continue
      const q = params.map((p) => collapseOws(p).toLowerCase()).find((p) => p.startsWith('q='))
      if (q && Number(q.slice(2)) === 0) continue
      codings.add(c === 'x-gzip' ? 'gzip' : c)
    }
    return codings.size ? [...codings].sort().join(',') : PRESENT_EMPTY
  }
  const collapsed = tightenListOws(collapseOws(value))
  if (!collapsed) return PRESENT_EMPTY
  if (SECRET_FIELDS.has(name)) return `sha256:${createHash('sha256').update(collapsed).digest('base64url')}`
  return collapsed
}

/** The normalised values of the Vary'd fields of a request. */
export function varyValues(fields: readonly string[], headers: FlatHeaders): Record<string, string> {
  // fromEntries defines own properties: a plain assignment to out['__proto__'] would be lost.
  return Object.fromEntries(fields.map((f) => [f, normaliseFieldValue(f, fieldValue(headers, f))]))
}

/**
 * Request headers that reproduce a stored variant (populate fetching it from the origin):
 * an absent field stays absent and a present-but-empty one is sent empty, so the refetched
 * response lands on the same variant.
 */
export function requestHeadersForVariant(values: Readonly<Record<string, string>>): FlatHeaders {
  const out: FlatHeaders = {}
  for (const [name, value] of Object.entries(values)) {
    if (value === '') continue
    Object.defineProperty(out, name, { value: value === PRESENT_EMPTY ? '' : value, enumerable: true, writable: true, configurable: true })
  }
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
  // Indexed, not for…of: every hit checks its variant, and the iterator allocated each time.
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!
    if ((fieldValue(stored, f) ?? '') !== normaliseFieldValue(f, fieldValue(headers, f))) return false
  }
  return true
}
