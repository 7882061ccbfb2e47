// Header hygiene for both directions of the proxy.

/** RFC 9110 §7.6.1: connection-specific fields a proxy must not forward. */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** Incoming header bag as Node gives it (lower-case names). */
export type HeaderBag = Record<string, string | string[] | undefined>

/** Flat, lower-cased header map: repeated fields joined with ", " (RFC 9110 §5.3), Set-Cookie kept apart by the caller. */
export type FlatHeaders = Record<string, string>

/**
 * Connection values that name only fields already in HOP_BY_HOP_HEADERS: nearly every
 * HTTP/1.1 message (keep-alive clients, and every keep-alive origin response) carries one of
 * these, and parsing them into a set per message was measurable on pass-through.
 */
const PLAIN_CONNECTION_VALUES: ReadonlySet<string> = new Set(['keep-alive', 'Keep-Alive', 'upgrade', 'Upgrade'])

/** Field names listed in Connection (RFC 9110 §7.6.1), which are hop-by-hop too. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (!value) return undefined
  if (typeof value === 'string' && PLAIN_CONNECTION_VALUES.has(value)) return undefined
  const joined = Array.isArray(value) ? value.join(',') : value
  const tokens = new Set<string>()
  for (const t of joined.split(',')) {
    const name = t.trim().toLowerCase()
    if (name) tokens.add(name)
  }
  return tokens.size ? tokens : undefined
}

/**
 * Copy headers without hop-by-hop fields, joining repeated values. `set-cookie` is returned
 * separately. `drop` leaves out more fields (given the lowercase name) in the same pass.
 */
export function stripHopByHop(headers: HeaderBag, drop?: (lower: string) => boolean): { headers: FlatHeaders; setCookie: string[] } {
  const extra = connectionTokens(headers.connection)
  const out: FlatHeaders = {}
  let setCookie: string[] = []
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    const lower = name.toLowerCase()
    if (HOP_BY_HOP_HEADERS.has(lower) || extra?.has(lower) || drop?.(lower)) continue
    if (lower === 'set-cookie') {
      setCookie = Array.isArray(value) ? value : [value]
      continue
    }
    out[lower] = Array.isArray(value) ? value.join(', ') : value
  }
  return { headers: out, setCookie }
}

export const VIA = '1.1 caje'

/** Append caje to Via (RFC 9110 §7.6.3). */
export function appendVia(existing: string | undefined): string {
  return existing ? `${existing}, ${VIA}` : VIA
}
