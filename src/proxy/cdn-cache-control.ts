// CDN-Cache-Control (RFC 9213): cache directives aimed at CDNs, as a
// Structured Field Dictionary (RFC 8941). Unlike Cache-Control, which caches
// read leniently, a targeted field that does not parse as a Dictionary, or
// whose directives have values of the wrong type, is ignored as a whole
// (RFC 9213 §2.1): the cache then behaves as if it were absent and falls back
// to Cache-Control and Expires.

import { parseDictionary, Token } from 'structured-headers'
import type { Directives } from './policy.ts'

/** Directives whose value is a number of seconds: an Integer (RFC 9213 §2.1 maps delta-seconds to Integer). */
const INTEGER_DIRECTIVES: ReadonlySet<string> = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error'])
/** Directives without a value: a bare key, which is Boolean true. */
const BOOLEAN_DIRECTIVES: ReadonlySet<string> = new Set(['no-store', 'public', 'must-revalidate', 'proxy-revalidate', 'must-understand', 'immutable', 'no-transform'])
/** Directives that are bare or carry a list of field names (quoted-string, so a String; a token, so a Token). */
const FIELD_LIST_DIRECTIVES: ReadonlySet<string> = new Set(['private', 'no-cache'])
/** delta-seconds saturate at 2^31 (RFC 9111 §1.2.2). */
const MAX_DELTA_SECONDS = 2147483648

/**
 * The directives of a targeted field, or undefined when the field must be ignored: empty, not a
 * Dictionary, or a directive caje acts on with a value of the wrong type (`max-age="10"`,
 * `max-age=1.5`, `max-age=-1`, `no-store=?0`). Unknown directives are ignored whatever their
 * type (RFC 9111 §5.2.3), and so are parameters (RFC 9213 §2.1).
 */
export function parseTargetedField(value: string): Directives | undefined {
  let dict: ReturnType<typeof parseDictionary>
  try {
    dict = parseDictionary(value)
  } catch {
    // RFC 9213 §2.1: a parsing error means the field is ignored; that is the answer, not a failure.
    return undefined
  }
  if (dict.size === 0) return undefined
  const out: Directives = new Map()
  for (const [name, member] of dict) {
    const item = member[0]
    if (Array.isArray(item)) {
      // An Inner List is no directive value caje knows.
      if (INTEGER_DIRECTIVES.has(name) || BOOLEAN_DIRECTIVES.has(name) || FIELD_LIST_DIRECTIVES.has(name)) return undefined
      out.set(name, true)
      continue
    }
    if (INTEGER_DIRECTIVES.has(name)) {
      // RFC 9213 §2.1: do not coerce a Decimal into an Integer. The parser gives both as a
      // number, so a Decimal written with a zero fraction (`60.0`) is found in the text.
      if (typeof item !== 'number' || !Number.isInteger(item) || item < 0 || decimalWritten(value, name)) return undefined
      out.set(name, String(Math.min(item, MAX_DELTA_SECONDS)))
    } else if (BOOLEAN_DIRECTIVES.has(name)) {
      if (item !== true) return undefined
      out.set(name, true)
    } else if (FIELD_LIST_DIRECTIVES.has(name)) {
      if (item === true) out.set(name, true)
      else if (typeof item === 'string') out.set(name, item)
      else if (item instanceof Token) out.set(name, item.toString())
      else return undefined
    } else {
      out.set(name, typeof item === 'number' ? String(item) : typeof item === 'string' ? item : true)
    }
  }
  return out
}

/** Whether the field writes `name=<digits>.<digits>`: a Decimal, which the parser hands over as a number. */
function decimalWritten(value: string, name: string): boolean {
  return new RegExp(`(?:^|[,\\s])${name}=\\d+\\.`).test(value)
}
