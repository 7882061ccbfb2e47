// One spelling per URL. caje keys, forwards and purges the same
// canonical path and query, so a request spelled `/docs/%2e%2e/legal/old` is
// stored under `/legal/old`, the origin is asked for `/legal/old`, and a purge
// of `/legal/old` finds it.
//
// The canonical form is the RFC 3986 §6.2.2 normal form of the target, and is
// left unchanged by the WHATWG URL parser (which undici applies to every path
// it sends): what the origin receives is exactly what the key says.

import { normaliseHost } from './config.ts'

/** RFC 3986 §2.3: unreserved characters, whose percent-encoded and plain forms are equivalent. */
function isUnreserved(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e
}

/** RFC 3986 §3.3 pchar and '/' (path) or §3.4 pchar, '/' and '?' (query), minus '%', which starts an escape. */
function isAllowed(c: number, inQuery: boolean): boolean {
  if (isUnreserved(c)) return true
  switch (c) {
    // sub-delims
    case 0x21: // !
    case 0x24: // $
    case 0x26: // &
    case 0x28: // (
    case 0x29: // )
    case 0x2a: // *
    case 0x2b: // +
    case 0x2c: // ,
    case 0x3b: // ;
    case 0x3d: // =
    case 0x3a: // :
    case 0x40: // @
    case 0x2f: // /
      return true
    case 0x27: // '
      // The WHATWG URL parser percent-encodes ' in the query of http(s) URLs (as browsers send
      // it), so undici would send %27: caje spells it that way in the key too.
      return !inQuery
    case 0x3f: // ?
      return inQuery
    default:
      return false
  }
}

const HEX = '0123456789ABCDEF'

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  return -1
}

function percentByte(b: number): string {
  return `%${HEX[b >> 4]}${HEX[b & 15]}`
}

/**
 * RFC 3986 §6.2.2.1 and §6.2.2.2: escapes of unreserved characters decoded (`%7E` → `~`,
 * `%2e` → `.`), the hex digits of every other escape upper-cased (`%2f` → `%2F`), and every
 * character the component may not hold plain percent-encoded as UTF-8 (a `%` that starts
 * no valid escape becomes `%25`).
 */
function normaliseEncoding(s: string, inQuery: boolean): string {
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x25 /* % */) {
      const hi = i + 2 < s.length ? hexValue(s.charCodeAt(i + 1)) : -1
      const lo = hi < 0 ? -1 : hexValue(s.charCodeAt(i + 2))
      if (lo < 0) {
        out += '%25'
        continue
      }
      const b = (hi << 4) | lo
      out += isUnreserved(b) ? String.fromCharCode(b) : percentByte(b)
      i += 2
    } else if (c < 0x80) {
      out += isAllowed(c, inQuery) ? s[i] : percentByte(c)
    } else {
      const cp = s.codePointAt(i)!
      if (cp > 0xffff) i++
      for (const b of Buffer.from(String.fromCodePoint(cp), 'utf8')) out += percentByte(b)
    }
  }
  return out
}

/** RFC 3986 §5.2.4: remove `.` and `..` segments from an absolute path (one starting with '/'). */
function removeDotSegments(path: string): string {
  const segments = path.split('/')
  const out: string[] = []
  const last = segments.length - 1
  for (let i = 1; i <= last; i++) {
    const s = segments[i]!
    if (s === '.' || s === '..') {
      if (s === '..') out.pop()
      // `/a/b/..` is `/a/`: a dot segment at the end leaves the directory's trailing slash.
      if (i === last) out.push('')
      continue
    }
    out.push(s)
  }
  return `/${out.join('/')}`
}

/**
 * Targets that are canonical already: only characters allowed plain, no dot segment, no
 * empty query. Nearly every request is one, and gets through with one regular-expression test.
 */
const NEEDS_WORK = /[^A-Za-z0-9\-._~!$&()*+,;=:@/?]|\/\.\.?(?=[/?]|$)|\?$/

/**
 * The canonical form of a request target in origin form (path and query, RFC 9112 §3.2.1):
 * escapes normalised (RFC 3986 §6.2.2), dot segments removed from the path (§5.2.4, after
 * `%2e` became `.`), and an empty query dropped, as the WHATWG URL parser drops it. The same
 * target always gives the same string; equivalent spellings give the same string; and the
 * result is a fixed point (canonicalTarget(canonicalTarget(t)) === canonicalTarget(t)).
 * Anything not starting with '/' (`*`, absolute form) is returned unchanged.
 */
export function canonicalTarget(target: string): string {
  if (!NEEDS_WORK.test(target) || target.charCodeAt(0) !== 0x2f) return target
  const q = target.indexOf('?')
  const path = removeDotSegments(normaliseEncoding(q < 0 ? target : target.slice(0, q), false))
  const query = q < 0 ? '' : normaliseEncoding(target.slice(q + 1), true)
  return query ? `${path}?${query}` : path
}

/**
 * The canonical path and query of an absolute http(s) URL as written (for purge by URL and
 * other URLs an operator types): the same function a request goes through, applied to the
 * text after the authority, so `http://site/docs/%2e%2e/a` and a request for
 * `/docs/%2e%2e/a` agree. Only a URL the WHATWG parser accepts in an unusual spelling
 * (no `//`, backslashes) falls back to that parser's path.
 */
export function canonicalTargetOf(url: URL, written: string): string {
  const m = /^\s*https?:\/\/[^/?#\\]*([/?][^#]*)?(?:#.*)?\s*$/i.exec(written)
  if (!m) return canonicalTarget(url.pathname + url.search)
  const raw = m[1] ?? '/'
  return canonicalTarget(raw.startsWith('?') ? `/${raw}` : raw)
}

/**
 * An absolute http(s) URL as caje keys it: scheme, normalised host (config.ts) and canonical
 * path and query. Purge by URL matches stored entries with it.
 */
export function canonicalUrl(url: URL, written: string): string {
  return `${url.protocol}//${normaliseHost(url.host)}${canonicalTargetOf(url, written)}`
}

/**
 * A URL prefix (purge by prefix) in the spelling keys use, so `https://Site.Test/%7Euser/`
 * covers entries under `https://site.test/~user/`. Only what is certain of a prefix is
 * changed: complete segments are canonicalised like a target, the unfinished last segment
 * (or query) only has its escapes normalised, and an unfinished escape or a trailing `?`
 * at the end is kept. A prefix that is no http(s) URL with a path is returned as written.
 */
export function canonicalUrlPrefix(written: string): string {
  let url: URL
  try {
    url = new URL(written)
  } catch {
    return written
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return written
  const m = /^\s*https?:\/\/[^/?#\\]*([/?][^#]*)$/i.exec(written)
  if (!m) return written
  let rest = m[1]!
  const unfinished = /%[0-9A-Fa-f]?$/.exec(rest)?.[0] ?? ''
  rest = rest.slice(0, rest.length - unfinished.length)
  if (rest.startsWith('?')) rest = `/${rest}`
  const q = rest.indexOf('?')
  let canonical: string
  if (q >= 0) {
    canonical = `${removeDotSegments(normaliseEncoding(rest.slice(0, q), false))}?${normaliseEncoding(rest.slice(q + 1), true)}`
  } else {
    const cut = rest.lastIndexOf('/') + 1
    canonical = removeDotSegments(normaliseEncoding(rest.slice(0, cut), false)) + normaliseEncoding(rest.slice(cut), false)
  }
  return `${url.protocol}//${normaliseHost(url.host)}${canonical}${unfinished.toUpperCase()}`
}
