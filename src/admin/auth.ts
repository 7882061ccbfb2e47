// Sessions (random id in an HttpOnly cookie, SHA-256 in the database, sliding
// expiry), bearer tokens, and the middleware that guards every admin route.

import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { PATHS } from '../../views/paths.ts'
import { TEXT } from '../../views/text.ts'
import { writeWhenFree } from '../manifest/ops.ts'
import type { AdminEnv, Auth, Shared } from './context.ts'
import { bearerToken, secretEquals } from '../bearer.ts'
import { ErrorPage } from '../../views/error.tsx'
import { isCrossSite, jsonError, readBody, renderPage, safeNext, setFlash, wantsJson } from './http.ts'
import { renderSignIn } from './sign-in-page.ts'
import * as repo from './repo.ts'
import { hashToken, randomToken } from './secrets.ts'

/** Start a session for an admin and set its cookie. */
export async function startSession(c: Context, shared: Shared, adminId: string): Promise<void> {
  const id = randomToken(32)
  const now = shared.now()
  const session = {
    idHash: hashToken(id),
    adminId,
    csrfToken: randomToken(24),
    createdAt: now,
    expiresAt: now + shared.session.idleMs,
    userAgent: c.req.header('user-agent')?.slice(0, 256) ?? null,
  }
  await shared.write((trx) => repo.insertSession(trx, session))
  setCookie(c, shared.cookies.session, id, {
    httpOnly: true,
    sameSite: 'Strict',
    secure: shared.cookies.secure,
    path: shared.cookies.path,
  })
}

export function clearSessionCookie(c: Context, shared: Shared): void {
  deleteCookie(c, shared.cookies.session, { path: shared.cookies.path, secure: shared.cookies.secure })
}

type SessionLookup = { state: 'none' } | { state: 'ended' } | { state: 'ok'; auth: Extract<Auth, { kind: 'session' }> }

/**
 * Writes that only keep books (sliding expiry, last use) must not fail a
 * read: on a LiteFS replica the manifest is read-only, and the next request
 * that reaches the primary catches up. Nor do they wait: one attempt that
 * fails at once when another process holds the write lock (the next request
 * tries again), so a page never waits for its bookkeeping.
 */
async function bookkeeping(shared: Shared, what: string, write: (trx: repo.Tx) => Promise<unknown>): Promise<void> {
  try {
    await writeWhenFree(shared.db, write, { totalMs: 0 })
  } catch (err) {
    shared.log({ level: 'debug', event: 'admin.bookkeeping_skipped', what, error: (err as Error).message })
  }
}

/** The session named by the cookie; expired ones are deleted on sight. */
export async function lookupSession(c: Context, shared: Shared): Promise<SessionLookup> {
  const id = getCookie(c, shared.cookies.session)
  if (!id) return { state: 'none' }
  const idHash = hashToken(id)
  const row = await repo.getSessionWithAdmin(shared.db, idHash)
  if (!row) return { state: 'ended' }
  const now = shared.now()
  const hardEnd = row.created_at + shared.session.absoluteMs
  if (row.expires_at <= now || hardEnd <= now) {
    await bookkeeping(shared, 'delete expired session', (trx) => repo.deleteSession(trx, idHash))
    return { state: 'ended' }
  }
  if (now - row.last_seen_at >= shared.session.touchEveryMs) {
    await bookkeeping(shared, 'extend session', (trx) => repo.touchSession(trx, idHash, now, Math.min(now + shared.session.idleMs, hardEnd)))
  }
  return {
    state: 'ok',
    auth: { kind: 'session', adminId: row.admin_id, adminName: row.admin_name, csrfToken: row.csrf_token, sessionHash: idHash },
  }
}

/** CAJE_API_TOKEN or an active token from the UI; undefined when unknown or revoked. */
export async function lookupBearer(shared: Shared, token: string): Promise<Extract<Auth, { kind: 'token' }> | undefined> {
  if (shared.config.apiToken !== undefined && secretEquals(token, shared.config.apiToken)) {
    return { kind: 'token', tokenId: null, name: 'CAJE_API_TOKEN' }
  }
  const row = await repo.findActiveApiToken(shared.db, hashToken(token))
  if (!row) return undefined
  const now = shared.now()
  if (row.last_used_at === null || now - row.last_used_at >= 60_000) await bookkeeping(shared, 'record token use', (trx) => repo.touchApiToken(trx, row.id, now))
  return { kind: 'token', tokenId: row.id, name: row.name }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

export interface RequireAdminOptions {
  /** Refuse API tokens: passkeys, invites and tokens are managed by signed-in admins only. */
  sessionOnly?: boolean
}

/** A form a browser submitted (not a script's JSON call): it gets pages, never JSON. */
function isBrowserForm(c: Context): boolean {
  if (wantsJson(c)) return false
  const type = c.req.header('content-type') ?? ''
  return type.includes('application/x-www-form-urlencoded') || type.includes('multipart/form-data')
}

/**
 * The admin page a form was posted from (same-origin Referer, which
 * Referrer-Policy: same-origin keeps), to go back to; the list otherwise.
 */
export function formPage(c: Context, shared: Shared): string {
  const referer = c.req.header('referer')
  if (!referer) return PATHS.list
  try {
    const u = new URL(referer)
    if (u.origin !== shared.config.publicOrigin && u.origin !== new URL(c.req.url).origin) return PATHS.list
    return safeNext(u.pathname + u.search, PATHS.list)
  } catch {
    return PATHS.list
  }
}

/**
 * How a refused request is answered: page loads redirect to sign-in; a form
 * posted after the session ended gets the sign-in page (401) with a message
 * and the page to return to; everything else is 401 JSON.
 */
async function refuse(c: Context, shared: Shared, ended: boolean): Promise<Response> {
  const page = (c.req.method === 'GET' || c.req.method === 'HEAD') && !wantsJson(c)
  if (ended) clearSessionCookie(c, shared)
  if (page) {
    if (ended) setFlash(c, shared, { kind: 'error', text: TEXT.flash.sessionEnded })
    const next = new URL(c.req.url)
    return c.redirect(`${PATHS.auth}?next=${encodeURIComponent(next.pathname + next.search)}`, 303)
  }
  c.header('WWW-Authenticate', 'Bearer realm="caje"')
  if (isBrowserForm(c)) {
    // Nothing was done: the admin signs in and lands back on the page the form was on.
    return renderSignIn(c, shared, { status: 401, next: formPage(c, shared), flash: { kind: 'error', text: TEXT.flash.signInToContinue } })
  }
  return jsonError(c, 401, ended ? TEXT.flash.sessionEnded : TEXT.errors.unauthorized)
}

/**
 * A refused state change. A browser form whose token no longer matches the
 * session (signed out and in again in another tab, a page left open for
 * days) goes back to its page, freshly rendered with a new token, with a
 * message; a cross-site post gets an error page; scripts get JSON.
 */
function refuseForm(c: Context, shared: Shared, reason: 'cross_site' | 'bad_token'): Response | Promise<Response> {
  if (!isBrowserForm(c)) return jsonError(c, 403, TEXT.errors.forbidden)
  if (reason === 'cross_site') return renderPage(c, ErrorPage, { status: 403, message: TEXT.errors.forbidden }, 403)
  setFlash(c, shared, { kind: 'error', text: TEXT.flash.pageOutOfDate })
  return c.redirect(formPage(c, shared), 303)
}

/**
 * Decide whether the request comes from a signed-in admin (session cookie, with
 * the CSRF token and a same-origin check on every unsafe method) or carries a
 * valid bearer token (no cookies involved, so no CSRF check). Returns the
 * identity, or the refusal to send.
 */
export async function authorize(c: Context, shared: Shared, opts: RequireAdminOptions = {}): Promise<Auth | Response> {
  const token = bearerToken(c)
  if (token !== undefined) {
    const auth = await lookupBearer(shared, token)
    if (!auth) {
      shared.log({ event: 'admin.auth_refused', reason: 'bad_token', path: c.req.path, ip: shared.clientIp(c) })
      c.header('WWW-Authenticate', 'Bearer realm="caje", error="invalid_token"')
      return jsonError(c, 401, 'The API token is unknown or revoked.')
    }
    if (opts.sessionOnly) return jsonError(c, 403, 'API tokens cannot manage passkeys, invites or tokens; sign in in the browser.')
    return auth
  }

  const found = await lookupSession(c, shared)
  if (found.state !== 'ok') return await refuse(c, shared, found.state === 'ended')

  if (!SAFE_METHODS.has(c.req.method)) {
    if (isCrossSite(c, shared.config.publicOrigin)) {
      shared.log({ event: 'admin.csrf_refused', reason: 'cross_site', path: c.req.path, origin: c.req.header('origin') ?? null })
      return await refuseForm(c, shared, 'cross_site')
    }
    const body = await readBody(c)
    const sent = c.req.header('x-csrf-token') ?? (typeof body._csrf === 'string' ? body._csrf : '')
    if (!sent || !secretEquals(sent, found.auth.csrfToken)) {
      shared.log({ event: 'admin.csrf_refused', reason: 'bad_token', path: c.req.path, admin: found.auth.adminId })
      return await refuseForm(c, shared, 'bad_token')
    }
  }
  return found.auth
}

/** Middleware form of `authorize`: sets `c.var.auth` or answers with the refusal. */
export const requireAdmin = (shared: Shared, opts: RequireAdminOptions = {}): MiddlewareHandler<AdminEnv> =>
  async function requireAdmin(c, next) {
    const auth = await authorize(c, shared, opts)
    if (auth instanceof Response) return auth
    c.set('auth', auth)
    await next()
  }

/** Who did it, for logs and the purge record. */
export function actor(auth: Auth): string {
  return auth.kind === 'session' ? `admin:${auth.adminId}` : auth.tokenId ? `token:${auth.tokenId}` : 'token:CAJE_API_TOKEN'
}

/**
 * Guard for the sign-in endpoints (no session yet): refuse cross-site posts and
 * count the attempt against the client's budget. Returns a response to send, or
 * undefined to go on.
 */
export function guardAttempt(c: Context, shared: Shared, redirectTo: string): Response | undefined {
  if (isCrossSite(c, shared.config.publicOrigin)) {
    shared.log({ event: 'admin.csrf_refused', reason: 'cross_site', path: c.req.path, origin: c.req.header('origin') ?? null })
    return jsonError(c, 403, TEXT.errors.forbidden)
  }
  const ip = shared.clientIp(c)
  const wait = shared.limiter.hit(ip)
  if (wait > 0) {
    shared.log({ event: 'admin.rate_limited', path: c.req.path, ip })
    c.header('Retry-After', String(wait))
    const message = TEXT.flash.rateLimited(wait)
    if (wantsJson(c) || c.req.header('content-type')?.includes('application/json')) return jsonError(c, 429, message)
    setFlash(c, shared, { kind: 'error', text: message })
    return c.redirect(redirectTo, 303)
  }
  return undefined
}
