// Building the request caje sends to the origin, and cleaning what comes back.

import { appendVia, stripHopByHop, type FlatHeaders, type HeaderBag } from './headers.ts'

export interface ForwardContext {
  /** Host the client asked for (normalised). */
  host: string
  scheme: 'http' | 'https'
  clientIp: string
  origin: URL
  /** Send the client's Host to the origin instead of the origin's own host. */
  preserveHost: boolean
  /** The client is a proxy we run: keep its X-Forwarded-* / Forwarded fields and append to them. */
  trustForwarded: boolean
}

/** Request fields never forwarded by a cache-filling (shared) request on behalf of many clients. */
const CONDITIONAL_FIELDS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range'] as const

/**
 * Request headers for the origin: hop-by-hop removed (RFC 9110 §7.6.1), Via
 * added (§7.6.3), X-Forwarded-* set by caje. Client-supplied forwarding
 * fields are dropped unless the client is trusted, so an unkeyed header can
 * never steer what the origin renders into a shared cached body.
 */
export function originRequestHeaders(client: FlatHeaders, ctx: ForwardContext): Record<string, string> {
  const { headers } = stripHopByHop(client)
  const out: Record<string, string> = headers
  // Expect: 100-continue (RFC 9110 §10.1.1) was already met on the client's hop: Node's server
  // answers 100 Continue itself, and caje then streams the body. undici refuses to send Expect
  // (it throws), which turned every such upload (curl sends it above 1 MB) into a 502.
  delete out.expect
  if (!ctx.trustForwarded) {
    delete out.forwarded
    delete out['x-forwarded-host']
    delete out['x-forwarded-proto']
    delete out['x-forwarded-for']
    delete out['x-forwarded-port']
    delete out['x-real-ip']
  }
  if (out.cookie !== undefined) {
    const kept = withoutAdminCookies(out.cookie)
    if (kept) out.cookie = kept
    else delete out.cookie
  }
  out['x-forwarded-for'] = out['x-forwarded-for'] ? `${out['x-forwarded-for']}, ${ctx.clientIp}` : ctx.clientIp
  out['x-forwarded-proto'] ??= ctx.scheme
  out['x-forwarded-host'] ??= ctx.host
  out.via = appendVia(out.via)
  out.host = ctx.preserveHost ? ctx.host : ctx.origin.host
  return out
}

/**
 * caje's own admin cookies (the session is scoped to Path=/ under the __Host-
 * prefix on https) must never reach the origin: an origin that logs cookies
 * would otherwise hold working admin sessions.
 */
const ADMIN_COOKIE = /^(?:__Host-)?caje_[a-z]+$/

export function withoutAdminCookies(cookie: string): string {
  return cookie
    .split(';')
    .filter((pair) => {
      const name = pair.split('=', 1)[0]!.trim()
      return name !== '' && !ADMIN_COOKIE.test(name)
    })
    .map((pair) => pair.trim())
    .join('; ')
}

/** The headers of a request made to fill the cache: no client conditionals or ranges (caje wants the full representation). */
export function withoutConditionals(headers: Record<string, string>): Record<string, string> {
  const out = { ...headers }
  for (const f of CONDITIONAL_FIELDS) delete out[f]
  return out
}

/** Response headers from the origin, cleaned for the client; Set-Cookie kept apart. */
export function cleanResponseHeaders(headers: HeaderBag): { headers: FlatHeaders; setCookie: string[] } {
  return stripHopByHop(headers)
}

/** What is persisted with a stored response: what will be served, minus per-response fields caje regenerates. */
export function storedHeaders(headers: FlatHeaders): FlatHeaders {
  const out: FlatHeaders = { ...headers }
  // Age is recomputed on every hit (RFC 9111 §5.1); Cache-Status described this one exchange (RFC 9211).
  delete out.age
  delete out['cache-status']
  return out
}
