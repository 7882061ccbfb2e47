// Request and response helpers shared by the admin routes.

import { bearerToken } from '../bearer.ts'
import { HTTPException } from 'hono/http-exception'
import { bodyTooLarge, bodyTooLargeMessage } from './body-limit.ts'
import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { jsx, type FC } from 'hono/jsx'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { Flash } from '../../views/components.tsx'
import type { Shared } from './context.ts'

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "object-src 'none'",
].join('; ')

/** Headers on every admin response, whatever produced it (handler, redirect, error). */
export const securityHeaders = (): MiddlewareHandler =>
  async function securityHeaders(c, next) {
    await next()
    const h = c.res.headers
    h.set('Cache-Control', 'no-store')
    h.set('Content-Security-Policy', CONTENT_SECURITY_POLICY)
    h.set('X-Frame-Options', 'DENY')
    h.set('Referrer-Policy', 'same-origin')
    h.set('X-Content-Type-Options', 'nosniff')
    h.set('Cross-Origin-Opener-Policy', 'same-origin')
  }

/** Scripts and API clients get JSON; browsers navigating get pages and redirects. */
export function wantsJson(c: Context): boolean {
  if (bearerToken(c) !== undefined) return true
  const accept = c.req.header('accept') ?? ''
  return accept.includes('application/json')
}

export type Body = Record<string, unknown>

/**
 * The request body as a plain object: JSON, urlencoded or multipart. Hono caches the parse.
 * A body over the admin cap (body-limit.ts) is a 413, never a silently empty form.
 */
export async function readBody(c: Context): Promise<Body> {
  const type = c.req.header('content-type') ?? ''
  try {
    if (type.includes('application/json')) {
      // No body at all is an empty object (`curl -X POST -H 'content-type: application/json'`).
      const text = await c.req.text()
      if (text.trim() === '') return {}
      const v: unknown = JSON.parse(text)
      return v && typeof v === 'object' && !Array.isArray(v) ? (v as Body) : {}
    }
    if (type.includes('application/x-www-form-urlencoded') || type.includes('multipart/form-data')) {
      return (await c.req.parseBody()) as Body
    }
  } catch (err) {
    const tooLarge = bodyTooLarge(err)
    if (tooLarge) throw new HTTPException(413, { message: bodyTooLargeMessage(tooLarge.limitBytes) })
    // Said as it is: taken for an empty body, a script's broken JSON was answered as if a field were missing.
    if (err instanceof SyntaxError && type.includes('application/json')) throw new HTTPException(400, { message: `the request body is not valid JSON (${err.message}); send one JSON object with the fields this request takes` })
    // A malformed body is treated as an empty one; every handler validates its fields.
    return {}
  }
  return {}
}

/** A trimmed string field, or '' when absent or not a string. */
export function field(body: Body, name: string, max = 2048): string {
  const v = body[name]
  return typeof v === 'string' ? v.trim().slice(0, max) : ''
}

/**
 * True when a browser tells us the request comes from another site: Origin
 * not ours, or Sec-Fetch-Site not same-origin. Requests without either header
 * (scripts, old browsers) still need the CSRF token when they carry a session.
 */
export function isCrossSite(c: Context, publicOrigin: string): boolean {
  const origin = c.req.header('origin')
  if (origin !== undefined) return origin !== publicOrigin && origin !== new URL(c.req.url).origin
  const site = c.req.header('sec-fetch-site')
  if (site !== undefined) return site !== 'same-origin'
  return false
}

/** Base for resolving a relative `next`; only its origin matters (the resolved URL must keep it). */
const NEXT_BASE = 'http://caje.invalid'

/**
 * An /_caje/ path to return to after sign-in; anything else becomes `fallback`.
 * The value is resolved as a browser would resolve the redirect (WHATWG URL:
 * dot segments, `%2e`, backslashes, RFC 3986 §5.2) and the resolved path is
 * checked, so `/_caje/..//evil.example` (which resolves to `//evil.example`)
 * cannot leave /_caje/. The resolved form is what the redirect sends.
 */
export function safeNext(raw: string | undefined, fallback: string): string {
  // The URL parser drops tabs and newlines silently; a value carrying them is not a path we made.
  if (!raw || raw.length > 2048 || !raw.startsWith('/') || /[\\\t\r\n]/.test(raw)) return fallback
  let url: URL
  try {
    url = new URL(raw, NEXT_BASE)
  } catch {
    return fallback
  }
  const path = url.pathname
  if (url.origin !== NEXT_BASE || !path.startsWith('/_caje/') || path.startsWith('//')) return fallback
  if (path === '/_caje/auth' || path.startsWith('/_caje/auth/') || path.startsWith('/_caje/assets/')) return fallback
  return path + url.search
}

// ── flash messages (one request, via a short-lived HttpOnly cookie) ─────

export function setFlash(c: Context, shared: Shared, flash: Flash): void {
  setCookie(c, shared.cookies.flash, JSON.stringify(flash), {
    httpOnly: true,
    sameSite: 'Strict',
    secure: shared.cookies.secure,
    path: shared.cookies.path,
    maxAge: 120,
  })
}

export function takeFlash(c: Context, shared: Shared): Flash | undefined {
  const raw = getCookie(c, shared.cookies.flash)
  if (raw === undefined) return undefined
  deleteCookie(c, shared.cookies.flash, { path: shared.cookies.path, secure: shared.cookies.secure })
  try {
    const v = JSON.parse(raw) as Partial<Flash>
    if ((v.kind !== 'ok' && v.kind !== 'error') || typeof v.text !== 'string') return undefined
    const secret =
      v.secret && typeof v.secret.label === 'string' && typeof v.secret.value === 'string'
        ? { label: v.secret.label, value: v.secret.value }
        : undefined
    return { kind: v.kind, text: v.text, secret }
  } catch {
    return undefined
  }
}

export interface Outcome {
  ok: boolean
  message: string
  /** HTTP status for JSON clients; forms always get 303. */
  status?: ContentfulStatusCode
  /** Extra JSON fields (counts, ids). */
  data?: Record<string, unknown>
  /** Shown once in the page (invite link, new API token); also returned in JSON as `secret`. */
  secret?: { label: string; value: string }
  /** Where a form post goes back to. */
  redirect: string
}

/** Finish an action: JSON for scripts, or 303 back to the page with a message. */
export function finish(c: Context, shared: Shared, o: Outcome): Response {
  if (wantsJson(c)) {
    const body: Record<string, unknown> = { ok: o.ok, message: o.message, ...o.data }
    if (o.secret) body.secret = o.secret.value
    if (!o.ok) body.error = o.message
    return c.json(body, o.status ?? (o.ok ? 200 : 400))
  }
  setFlash(c, shared, { kind: o.ok ? 'ok' : 'error', text: o.message, secret: o.secret })
  return c.redirect(o.redirect, 303)
}

/** A JSON error with a user-safe message. */
export function jsonError(c: Context, status: ContentfulStatusCode, message: string, extra: Record<string, unknown> = {}): Response {
  return c.json({ ok: false, error: message, ...extra }, status)
}

/** Render a page component (a pure function of props) as a full HTML response. */
export async function renderPage<P extends object>(c: Context, Page: FC<P>, props: P, status: ContentfulStatusCode = 200): Promise<Response> {
  const html = await jsx(Page, props as Record<string, unknown>).toString()
  return c.html(html, status)
}
