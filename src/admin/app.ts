// The admin sub-app, mounted by the main app at /_caje: pages (hono/jsx),
// passkey sign-in, sessions, CSRF, and the JSON API for scripts.
// /_caje/health, /_caje/metrics and /_caje/internal/* belong to other modules.

import { Hono, type Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Kysely } from 'kysely'
import { ErrorPage } from '../../views/error.tsx'
import { TEXT } from '../../views/text.ts'
import type { Config } from '../config.ts'
import type { Database } from '../manifest/database.ts'
import { DEFAULT_BUSY_RETRY_MS, ManifestBusyError, writeWhenFree } from '../manifest/ops.ts'
import type { AdminActions } from './actions.ts'
import { registerAccessRoutes } from './access-routes.ts'
import { registerAssetRoutes } from './assets.ts'
import { registerAuthRoutes } from './auth-routes.ts'
import { ADMIN_BODY_LIMIT_BYTES, limitBody } from './body-limit.ts'
import { registerCacheRoutes } from './cache-routes.ts'
import { registerRulesRoutes, type RulesAdmin } from './rules-routes.ts'
import { cookieSettings, type AdminEnv, type SessionTimes, type Shared } from './context.ts'
import { jsonError, renderPage, securityHeaders, wantsJson } from './http.ts'
import { clientAddress } from './client-address.ts'
import { createRateLimiter } from './rate-limit.ts'
import * as repo from './repo.ts'
import { createEnrolmentCode } from './secrets.ts'

export type { AdminActions, DiskEntry, ListQuery, ListResult, ManifestEntry, NodeStatus, PopulateStatus, PurgeRequest } from './actions.ts'
export { ADMIN_COOKIE_NAMES } from './context.ts'
export { createEnrolmentCode } from './secrets.ts'

export interface AdminDeps {
  config: Config
  /**
   * The manifest, or a function giving the handle to use now. Under LiteFS
   * pass the function: a promotion opens a writable handle and a demotion
   * closes it, so a handle kept from start-up goes read-only or destroyed.
   */
  db: Kysely<Database> | (() => Kysely<Database>)
  actions: AdminActions
  log: (o: Record<string, unknown>) => void
  now?: () => number
  /**
   * One-time code that enrols the first passkey when CAJE_ADMIN_PASSWORD is
   * unset. Create it with `createEnrolmentCode()` and print it with
   * `enrolmentNotice()`. Without a password and without a code, the app makes
   * one itself and logs it (event `admin.enrolment_code`).
   */
  enrolmentCode?: string
  /** The rules file: explain and reload (absent: those routes are not served). */
  rules?: RulesAdmin
  /**
   * The client's address for rate limiting; default `clientAddress(config)`: the socket's
   * address, the trusted proxy's (rightmost X-Forwarded-For; Fly-Client-IP on Fly), or the
   * one a replica relayed, signed with the cluster secret.
   */
  clientIp?: (c: Context) => string
  /** Sign-in / enrolment attempts per client per window; default 20 per 5 minutes. */
  loginRateLimit?: { max: number; windowMs: number }
  session?: Partial<SessionTimes>
  /**
   * How long an admin write keeps retrying while another process holds the
   * manifest's write lock before the request is answered 503. Default 3000.
   */
  busyRetryMs?: number
}

export const DEFAULT_SESSION: SessionTimes = {
  idleMs: 12 * 3600_000,
  absoluteMs: 7 * 24 * 3600_000,
  touchEveryMs: 60_000,
}

export function createAdminApp(deps: AdminDeps): Hono<AdminEnv> {
  const now = deps.now ?? Date.now
  let enrolmentCode = deps.enrolmentCode
  if (deps.config.adminPassword === undefined && enrolmentCode === undefined) {
    enrolmentCode = createEnrolmentCode()
    deps.log({
      level: 'warn',
      event: 'admin.enrolment_code',
      message: `No CAJE_ADMIN_PASSWORD: enrol the first passkey at ${deps.config.publicOrigin}/_caje/auth with this one-time code`,
      code: enrolmentCode,
    })
  }
  const limit = deps.loginRateLimit ?? { max: 20, windowMs: 5 * 60_000 }
  const busyRetry = { totalMs: deps.busyRetryMs ?? DEFAULT_BUSY_RETRY_MS }
  const db = currentDb(deps.db)
  const shared: Shared = {
    config: deps.config,
    get db() {
      return db()
    },
    write: (fn) => writeWhenFree(db(), fn, busyRetry),
    actions: deps.actions,
    log: deps.log,
    now,
    cookies: cookieSettings(deps.config.publicOrigin),
    session: { ...DEFAULT_SESSION, ...deps.session },
    limiter: createRateLimiter({ max: limit.max, windowMs: limit.windowMs, now }),
    enrolment: { code: enrolmentCode, used: false },
    clientIp: deps.clientIp ?? clientAddress(deps.config),
  }

  const app = new Hono<AdminEnv>()
  app.use('*', securityHeaders())
  // Mounted in the main app the cap is already in place; the app alone (tests) gets it here.
  app.use('*', limitBody({ maxBytes: ADMIN_BODY_LIMIT_BYTES }))
  registerAssetRoutes(app)
  registerAuthRoutes(app, shared)
  registerCacheRoutes(app, shared)
  registerAccessRoutes(app, shared)
  if (deps.rules) registerRulesRoutes(app, shared, deps.rules)

  app.notFound((c) => (wantsJson(c) ? jsonError(c, 404, TEXT.errors.notFound) : renderPage(c, ErrorPage, { status: 404, message: TEXT.errors.notFound }, 404)))
  app.onError((err, c) => {
    if (err instanceof ManifestBusyError) {
      // Another process (a node, a migration, sqlite3 in a shell) held the write lock past the retry window.
      deps.log({ level: 'warn', event: 'admin.manifest_busy', path: c.req.path, method: c.req.method, waitedMs: err.waitedMs, attempts: err.attempts })
      c.header('Retry-After', '1')
      return wantsJson(c) ? jsonError(c, 503, TEXT.errors.manifestBusy) : renderPage(c, ErrorPage, { status: 503, message: TEXT.errors.manifestBusy }, 503)
    }
    if (err instanceof HTTPException && err.status < 500) {
      return wantsJson(c) ? jsonError(c, err.status, err.message || TEXT.errors.badRequest) : renderPage(c, ErrorPage, { status: err.status, message: err.message || TEXT.errors.badRequest }, err.status)
    }
    deps.log({ level: 'error', event: 'admin.error', path: c.req.path, error: err instanceof Error ? (err.stack ?? err.message) : String(err) })
    return wantsJson(c) ? jsonError(c, 500, TEXT.errors.internal) : renderPage(c, ErrorPage, { status: 500, message: TEXT.errors.internal }, 500)
  })
  return app
}

/**
 * What the main program prints at start while no passkey exists: where to go
 * and the password or one-time code to use. Undefined once a passkey exists.
 */
export async function enrolmentNotice(deps: Pick<AdminDeps, 'config' | 'db' | 'enrolmentCode'>): Promise<string | undefined> {
  if ((await repo.countPasskeys(currentDb(deps.db)())) > 0) return undefined
  const url = `${deps.config.publicOrigin}/_caje/auth`
  if (deps.config.adminPassword !== undefined) return `No admin passkey yet: open ${url} and sign in with CAJE_ADMIN_PASSWORD to register one.`
  if (deps.enrolmentCode === undefined) return undefined
  return `No admin passkey yet: open ${url} and enter the one-time enrolment code ${deps.enrolmentCode} to register one.`
}

function currentDb(db: AdminDeps['db']): () => Kysely<Database> {
  return typeof db === 'function' ? db : () => db
}
