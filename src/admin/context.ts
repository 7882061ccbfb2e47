// What every admin route shares: dependencies, clock, cookie names, limiter.

import type { Context } from 'hono'
import type { Kysely } from 'kysely'
import type { Config } from '../config.ts'
import type { Database } from '../manifest/database.ts'
import type { AdminActions } from './actions.ts'
import type { RateLimiter } from './rate-limit.ts'
import type { Tx } from './repo.ts'

/** Who is making the request. */
export type Auth =
  | { kind: 'session'; adminId: string; adminName: string; csrfToken: string; sessionHash: string }
  /** `tokenId` is null for CAJE_API_TOKEN. */
  | { kind: 'token'; tokenId: string | null; name: string }

export type AdminEnv = { Variables: { auth: Auth } }

export type AdminContext = Context<AdminEnv>

export interface CookieSettings {
  session: string
  flash: string
  secure: boolean
  path: string
}

export interface SessionTimes {
  /** Idle lifetime: every use pushes expiry this far out. */
  idleMs: number
  /** Hard cap from sign-in, however active the session is. */
  absoluteMs: number
  /** Write last_seen_at at most this often (each write may go to the primary). */
  touchEveryMs: number
}

export interface Shared {
  config: Config
  /** For reads (WAL: they never wait for a writer). Writes go through `write`. */
  db: Kysely<Database>
  /**
   * Run admin writes as one transaction without blocking the event loop on
   * another process's write lock (writeWhenFree): retried with timers for a
   * few seconds, then ManifestBusyError, which the app answers with 503.
   */
  write<T>(fn: (trx: Tx) => Promise<T>): Promise<T>
  actions: AdminActions
  log: (o: Record<string, unknown>) => void
  now: () => number
  cookies: CookieSettings
  session: SessionTimes
  /** Login, enrolment and invite attempts per client IP. */
  limiter: RateLimiter
  enrolment: { code: string | undefined; used: boolean }
  clientIp: (c: Context) => string
}

/** Cookie names and attributes: `__Host-` + Secure + Path=/ on https, else Path=/_caje. */
export function cookieSettings(publicOrigin: string): CookieSettings {
  const secure = new URL(publicOrigin).protocol === 'https:'
  return secure
    ? { session: '__Host-caje_session', flash: '__Host-caje_flash', secure: true, path: '/' }
    : { session: 'caje_session', flash: 'caje_flash', secure: false, path: '/_caje' }
}

/** Names of the admin cookies, so the proxy can strip them before forwarding a request to the origin. */
export const ADMIN_COOKIE_NAMES: readonly string[] = ['__Host-caje_session', '__Host-caje_flash', 'caje_session', 'caje_flash']
