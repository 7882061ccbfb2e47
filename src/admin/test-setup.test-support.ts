// Shared setup for the admin route tests: a migrated SQLite file in a temp dir,
// the admin app mounted at /_caje as the main app does, and a cookie-keeping client.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Hono } from 'hono'
import type { Kysely } from 'kysely'
import { loadConfig, type Config } from '../config.ts'
import type { Database } from '../manifest/database.ts'
import { openDatabase } from '../manifest/database.ts'
import { migrateToLatest } from '../manifest/migrate.ts'
import { createAdminApp, type AdminDeps } from './app.ts'
import { createMemoryActions, sampleEntries, type MemoryActions } from './memory-actions.ts'

export const ORIGIN = 'http://localhost:8080'
export const PASSWORD = 'correct horse battery staple'
export const API_TOKEN = 'static-api-token-for-tests-0123456789'

export interface Harness {
  app: Hono
  /** The tests reach the database itself, not a getter. */
  deps: AdminDeps & { db: Kysely<Database> }
  actions: MemoryActions
  config: Config
  logs: Record<string, unknown>[]
  clock: { now: number }
  client(): Client
  close(): Promise<void>
}

export async function setup(
  opts: { env?: Record<string, string>; entries?: number; populateDelayMs?: number; deps?: Partial<Omit<AdminDeps, 'db'>> } = {},
): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caje-admin-'))
  const config = loadConfig({
    CAJE_DATA_DIR: dir,
    CAJE_NODE_ID: 'node-a',
    CAJE_REGION: 'ams',
    CAJE_PUBLIC_ORIGIN: ORIGIN,
    CAJE_ADMIN_PASSWORD: PASSWORD,
    CAJE_API_TOKEN: API_TOKEN,
    ...opts.env,
  })
  const { db } = openDatabase({ path: config.databasePath })
  await migrateToLatest(db)
  const clock = { now: Date.UTC(2026, 0, 15, 12, 0, 0) }
  const sample = sampleEntries({ n: opts.entries ?? 12, nodeId: 'node-a', peers: ['node-b'], now: clock.now })
  const actions = createMemoryActions({ nodeId: 'node-a', region: 'ams', hitRatio: 0.82, now: () => clock.now, populateDelayMs: opts.populateDelayMs, ...sample })
  const logs: Record<string, unknown>[] = []
  const deps: AdminDeps & { db: Kysely<Database> } = {
    config,
    db,
    actions,
    log: (o) => logs.push(o),
    now: () => clock.now,
    clientIp: (c) => c.req.header('x-test-ip') ?? '192.0.2.1',
    ...opts.deps,
  }
  const app = new Hono().route('/_caje', createAdminApp(deps))
  return {
    app,
    deps,
    actions,
    config,
    logs,
    clock,
    client: () => new Client(app),
    async close() {
      await db.destroy()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

export interface RequestOptions {
  method?: string
  form?: Record<string, string>
  json?: unknown
  headers?: Record<string, string>
  /** Add the session's CSRF token (form field or header). Default true when the client has one. */
  csrf?: boolean
}

/** Keeps cookies like a browser would (for one host), and remembers the CSRF token of the last page. */
export class Client {
  readonly jar = new Map<string, string>()
  csrfToken: string | undefined

  constructor(private readonly app: Hono) {}

  async request(p: string, o: RequestOptions = {}): Promise<Response> {
    const headers = new Headers(o.headers)
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ')
    if (cookie && !headers.has('cookie')) headers.set('cookie', cookie)
    let body: string | undefined
    const useCsrf = o.csrf ?? true
    if (o.form) {
      const form = { ...o.form }
      if (useCsrf && this.csrfToken && form._csrf === undefined) form._csrf = this.csrfToken
      body = new URLSearchParams(form).toString()
      headers.set('content-type', 'application/x-www-form-urlencoded')
    } else if (o.json !== undefined) {
      body = JSON.stringify(o.json)
      headers.set('content-type', 'application/json')
      if (!headers.has('accept')) headers.set('accept', 'application/json')
      if (useCsrf && this.csrfToken && !headers.has('x-csrf-token')) headers.set('x-csrf-token', this.csrfToken)
    }
    const res = await this.app.request(p, { method: o.method ?? (body !== undefined ? 'POST' : 'GET'), headers, body })
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';')
      const eq = pair!.indexOf('=')
      const name = pair!.slice(0, eq).trim()
      const value = pair!.slice(eq + 1).trim()
      if (/max-age=0/i.test(line) || value === '') this.jar.delete(name)
      else this.jar.set(name, value)
    }
    return res
  }

  /** GET a page and pick up its CSRF token. */
  async page(p: string): Promise<{ res: Response; html: string }> {
    const res = await this.request(p, { headers: { accept: 'text/html' } })
    const html = await res.text()
    const m = /<meta name="csrf-token" content="([^"]+)"/.exec(html)
    if (m) this.csrfToken = m[1]
    return { res, html }
  }

  /** Sign in with the admin password and load the list page (for its CSRF token). */
  async signInWithPassword(password = PASSWORD): Promise<Response> {
    const res = await this.request('/_caje/auth/password', { form: { password, name: 'Ada' }, csrf: false })
    await this.page('/_caje/list')
    return res
  }
}

/** The text of the flash cookie set by a redirect, decoded. */
export function flashOf(res: Response): { kind: string; text: string; secret?: { value: string } } | undefined {
  for (const line of res.headers.getSetCookie()) {
    const m = /^(?:__Host-)?caje_flash=([^;]*)/.exec(line)
    if (m && m[1]) return JSON.parse(decodeURIComponent(m[1])) as { kind: string; text: string }
  }
  return undefined
}
