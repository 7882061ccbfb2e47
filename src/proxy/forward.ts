// Building the request caje sends to the origin, and cleaning what comes back.

import { appendVia, stripHopByHop, type FlatHeaders, type HeaderBag } from './headers.ts'

export interface ForwardContext {
  /** Host caje keyed the request on (normalised): the origin is told exactly this host. */
  host: string
  /** Scheme caje keyed the request on: the origin is told exactly this scheme. */
  scheme: 'http' | 'https'
  clientIp: string
  origin: URL
  /** Send the client's Host to the origin instead of the origin's own host. */
  preserveHost: boolean
  /** The client is a proxy we run: keep its X-Forwarded-For / X-Real-IP and append to them. */
  trustForwarded: boolean
  /** Request fields never forwarded (lower case): STEERING_REQUEST_HEADERS plus CAJE_STRIP_REQUEST_HEADERS. */
  stripHeaders: ReadonlySet<string>
}

/** Request fields never forwarded by a cache-filling (shared) request on behalf of many clients. */
const CONDITIONAL_FIELDS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range'] as const

/**
 * Request fields that make an origin render another URL, method, scheme or host than the one
 * caje keyed the request on. None is part of the cache key, so one client sending
 * `X-Original-URL: /admin` on GET /home would have the origin's answer for /admin stored as
 * /home for everyone (web cache poisoning through unkeyed inputs; Fastly's advisory and
 * PortSwigger's research name these). caje never forwards them; CAJE_STRIP_REQUEST_HEADERS
 * adds more. The X-Forwarded-* and Forwarded fields caje sets itself are handled apart (below).
 */
export const STEERING_REQUEST_HEADERS: readonly string[] = Object.freeze([
  // Another path: IIS / Symfony / Zend (X-Original-URL, X-Rewrite-URL), nginx ingress, Traefik, Spring, ASP.NET.
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-forwarded-uri',
  'x-forwarded-path',
  'x-forwarded-prefix',
  // Another method: a GET the cache keys as GET rendered as DELETE or POST.
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  // Another scheme: Rack (X-Forwarded-Scheme, X-Forwarded-Ssl, X-Url-Scheme), Microsoft (Front-End-Https).
  'x-forwarded-scheme',
  'x-forwarded-ssl',
  'x-forwarded-protocol',
  'x-url-scheme',
  'front-end-https',
  // Another host.
  'x-host',
  'x-forwarded-server',
  'x-original-host',
  'x-http-host-override',
])

/**
 * Forwarding fields caje rebuilds on every request from what it keyed on: a client's
 * (or a trusted proxy's raw) value never reaches the origin, so the origin renders
 * exactly the scheme and host of the cache key. `Forwarded` (RFC 7239) and
 * X-Forwarded-Port would restate them, possibly differently: dropped.
 */
const REBUILT_FORWARDING_FIELDS: ReadonlySet<string> = new Set(['forwarded', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port'])

/** Client-address fields kept only from a trusted proxy (it appended the real address). */
const CLIENT_ADDRESS_FIELDS: ReadonlySet<string> = new Set(['x-forwarded-for', 'x-real-ip'])

/**
 * Request headers for the origin: hop-by-hop removed (RFC 9110 §7.6.1), Via
 * added (§7.6.3), fields that steer the origin to another URL, method, scheme
 * or host removed, and X-Forwarded-Host / -Proto set to exactly the host and
 * scheme of the cache key. What is left the cache does not key on, and the
 * origin may still render it into a shared body: such a response must name it
 * in Vary (RFC 9111 §4.1), or the operator adds it to CAJE_STRIP_REQUEST_HEADERS.
 */
export function originRequestHeaders(client: FlatHeaders, ctx: ForwardContext): Record<string, string> {
  // Left out in the one pass that strips hop-by-hop fields, rather than a delete per name that
  // might be there (most never are, and deleting a field that is makes the object a slow
  // dictionary for the sender after). A request has no business sending Set-Cookie: it comes
  // back apart from the fields and is not forwarded.
  const strip = ctx.stripHeaders
  const trusted = ctx.trustForwarded
  const { headers: out } = stripHopByHop(
    client,
    (lower) =>
      strip.has(lower) ||
      REBUILT_FORWARDING_FIELDS.has(lower) ||
      (!trusted && CLIENT_ADDRESS_FIELDS.has(lower)) ||
      // Expect: 100-continue (RFC 9110, section 10.1.1) was already met on the client's hop: Node's server
      // answers 100 Continue itself, and caje then streams the body. undici refuses to send Expect
      // (it throws), which turned every such upload (curl sends it above 1 MB) into a 502.
      lower === 'expect',
  )
  if (out.cookie !== undefined) {
    const kept = withoutAdminCookies(out.cookie)
    if (kept) out.cookie = kept
    else delete out.cookie
  }
  out['x-forwarded-for'] = out['x-forwarded-for'] ? `${out['x-forwarded-for']}, ${ctx.clientIp}` : ctx.clientIp
  out['x-forwarded-proto'] = ctx.scheme
  out['x-forwarded-host'] = ctx.host
  out.via = appendVia(out.via)
  out.host = ctx.preserveHost ? ctx.host : ctx.origin.host
  return out
}

/**
 * Cookie names caje reserves for itself: `caje_session`, `caje_flash` and any other
 * `caje_*`, also under the `__Host-` / `__Secure-` prefixes (RFC 6265bis §4.1.3, whose
 * prefixes browsers match without regard to case, so this does too).
 */
const CAJE_COOKIE_NAME = /^(?:__host-|__secure-)?caje_/i

/** Whether a cookie name is one caje reserves for its own admin session and messages. */
export function isCajeCookieName(name: string): boolean {
  return CAJE_COOKIE_NAME.test(name.trim())
}

/**
 * caje's own admin cookies (the session is scoped to Path=/ under the __Host-
 * prefix on https) must never reach the origin: an origin that logs cookies
 * would otherwise hold working admin sessions.
 */
export function withoutAdminCookies(cookie: string): string {
  return cookie
    .split(';')
    .filter((pair) => {
      const name = pair.split('=', 1)[0]!.trim()
      return name !== '' && !isCajeCookieName(name)
    })
    .map((pair) => pair.trim())
    .join('; ')
}

/**
 * The cookie a Set-Cookie line sets: the text before the first '=' of its name-value
 * pair, or, with no '=', the whole pair (RFC 6265bis §5.7 makes that a nameless cookie
 * whose value is sent back as `Cookie: caje_session`, which reads like the name).
 */
function setCookieName(line: string): string {
  const pair = line.split(';', 1)[0]!
  const eq = pair.indexOf('=')
  return (eq < 0 ? pair : pair.slice(0, eq)).trim()
}

/**
 * The headers of a request made to fill the cache: no client conditionals or ranges (caje wants
 * the full representation). A copy when there is something to remove; else the very object
 * given (most requests carry none, and a miss already copies its headers once), which callers
 * therefore never change.
 */
export function withoutConditionals(headers: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  for (const f of CONDITIONAL_FIELDS) {
    if (headers[f] === undefined) continue
    const out = { ...headers }
    for (const g of CONDITIONAL_FIELDS) delete out[g]
    return out
  }
  return headers
}

/** Response headers from the origin, cleaned for the client. */
export interface CleanedResponseHeaders {
  headers: FlatHeaders
  /** The Set-Cookie lines the client gets (never stored). */
  setCookie: string[]
  /** Whether the origin sent any Set-Cookie, including refused ones: the response is about someone's cookies either way. */
  hadSetCookie: boolean
  /** Names of caje's own cookies the origin tried to set, which the client does not get. */
  refusedCookies: string[]
}

/**
 * Response headers from the origin, cleaned for the client: hop-by-hop fields removed
 * (RFC 9110 §7.6.1), Set-Cookie kept apart, and Set-Cookie for caje's own cookie names
 * dropped. An origin (or a page on it an attacker controls) could otherwise fix an admin's
 * session id in their browser or plant a fake admin message.
 */
export function cleanResponseHeaders(headers: HeaderBag): CleanedResponseHeaders {
  const { headers: out, setCookie: all } = stripHopByHop(headers)
  let setCookie = all
  const refusedCookies: string[] = []
  for (const line of all) {
    const name = setCookieName(line)
    if (isCajeCookieName(name)) refusedCookies.push(name)
  }
  if (refusedCookies.length) setCookie = all.filter((line) => !isCajeCookieName(setCookieName(line)))
  return { headers: out, setCookie, hadSetCookie: all.length > 0, refusedCookies }
}

/** What is persisted with a stored response: what will be served, minus per-response fields caje regenerates. */
export function storedHeaders(headers: FlatHeaders): FlatHeaders {
  // Copied field by field, not spread: it is frozen with the stored metadata (see plain-copy.ts).
  const out: FlatHeaders = {}
  for (const name in headers) {
    // Age is recomputed on every hit (RFC 9111 §5.1); Cache-Status described this one exchange (RFC 9211).
    if (name === 'age' || name === 'cache-status' || !Object.hasOwn(headers, name)) continue
    out[name] = headers[name]!
  }
  return out
}
