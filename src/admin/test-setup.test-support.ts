// Shared setup for the admin route tests: a real caje node (disk store, SQLite
// manifest and writer, purge applier, populate) on temp dirs in front of a
// real origin, its admin actions behind an admin app mounted at /_caje as the
// main app does (with a clock the tests move), and a cookie-keeping client.

import fs from 'node:fs'
import http from 'node:http'
import { Hono } from 'hono'
import type { Kysely } from 'kysely'
import type { RunningCaje } from '../caje.ts'
import { startCaje } from '../caje.ts'
import { loadConfig, type Config } from '../config.ts'
import { silentLogger } from '../log.ts'
import type { Database } from '../manifest/database.ts'
import { toEntryRecord } from '../manifest/repositories.ts'
import { startOrigin, whenReached, type TestOrigin } from '../test-support/servers.ts'
import { tempDirSync } from '../test-support/temp-dirs.ts'
import type { ManifestEntry } from './actions.ts'
import { createAdminApp, type AdminDeps } from './app.ts'

export const ORIGIN = 'http://localhost:8080'
export const PASSWORD = 'correct horse battery staple'
export const API_TOKEN = 'static-api-token-for-tests-0123456789'
/** The site the sample pages are requested as (the Host header), so keys read like a real site's. */
export const SITE = 'http://www.example.com'
/** Another node of the cluster: sample pages it holds are in the manifest, not on this node's disk. */
export const PEER = 'node-b'

/** The sample site's kinds of page, in turn: page i (from 1) is `${path}${i}${ext}`, tagged with its kind. */
const KINDS = [
  { path: '/blog/post-', type: 'text/html; charset=utf-8', tag: 'blog' },
  { path: '/assets/app-', type: 'application/javascript', tag: 'assets', ext: '.js' },
  { path: '/images/photo-', type: 'image/webp', tag: 'images', ext: '.webp' },
  { path: '/api/products/', type: 'application/json', tag: 'api' },
  { path: '/docs/page-', type: 'text/html; charset=utf-8', tag: 'docs' },
]

/** The path of sample page i (0-based). */
export function samplePath(i: number): string {
  const k = KINDS[i % KINDS.length]!
  return `${k.path}${i + 1}${k.ext ?? ''}`
}

/** Sample pages on this node's disk: all but every sixth, which only the peer holds. */
export const onThisNode = (i: number) => i % 6 !== 5

export interface Harness {
  app: Hono
  /** The tests reach the database itself, not a getter. */
  deps: AdminDeps & { db: Kysely<Database> }
  /** The real node whose actions the admin app drives: node.store is its disk cache, node.manifest the shared file. */
  node: RunningCaje
  origin: TestOrigin
  config: Config
  logs: Record<string, unknown>[]
  clock: { now: number }
  client(): Client
  /** Hold every origin response until the returned function is called. */
  holdOrigin(): () => void
  /** Entries on this node's disk. */
  diskCount(): number
  /** URLs in the shared manifest, once queued writes are in. */
  manifestCount(filter?: string): Promise<number>
  /** Purges recorded in the manifest's log, once queued writes are in. */
  purgeCount(): Promise<number>
  /** The manifest's entries (up to 1000), once queued writes are in. */
  manifestEntries(filter?: string): Promise<ManifestEntry[]>
  close(): Promise<void>
}

export async function setup(
  opts: {
    env?: Record<string, string>
    /** Sample pages cached through the node (the peer's share recorded in the manifest only). */
    entries?: number
    /** Further manifest rows held by the peer only, written straight into the file (for the 100,000-entry check). */
    peerRows?: number
    deps?: Partial<Omit<AdminDeps, 'db'>>
  } = {},
): Promise<Harness> {
  const dir = tempDirSync('caje-admin-')
  let gate: Promise<void> | undefined
  const origin = await startOrigin((req, res) => {
    const pathname = (req.url ?? '/').split('?')[0]!
    const kind = KINDS.find((k) => pathname.startsWith(k.path))
    const n = /(\d+)(\.\w+)?$/.exec(pathname)?.[1]
    const send = () => {
      res.writeHead(200, {
        'content-type': kind?.type ?? 'text/plain',
        // /private/…: a page for one user, which a shared cache must not store (RFC 9111 §5.2.2.7).
        'cache-control': pathname.startsWith('/private/') ? 'private' : 'public, max-age=3600',
        ...(kind ? { 'surrogate-key': `${kind.tag} item-${n}` } : {}),
      })
      res.end(`sample page ${pathname}\n`.repeat(8))
    }
    if (gate) void gate.then(send)
    else send()
  })
  const config = loadConfig({
    PORT: '0',
    CAJE_LISTEN_HOST: '127.0.0.1',
    CAJE_ORIGIN: origin.url,
    CAJE_DATA_DIR: dir,
    CAJE_NODE_ID: 'node-a',
    CAJE_REGION: 'ams',
    CAJE_PUBLIC_ORIGIN: ORIGIN,
    CAJE_ADMIN_PASSWORD: PASSWORD,
    CAJE_API_TOKEN: API_TOKEN,
    CAJE_ACCESS_LOG: 'false',
    CAJE_POPULATE_INTERVAL: '0',
    CAJE_SHUTDOWN_TIMEOUT_MS: '2000',
    ...opts.env,
  })
  const node = await startCaje(config, silentLogger)
  const db = node.manifest.readDb()
  try {
    await seed(node, opts.entries ?? 0)
    if (opts.peerRows) await seedPeerRows(node, opts.peerRows)
  } catch (err) {
    await node.close()
    await origin.close()
    throw err
  }

  const clock = { now: Date.UTC(2026, 0, 15, 12, 0, 0) }
  const logs: Record<string, unknown>[] = []
  const deps: AdminDeps & { db: Kysely<Database> } = {
    config,
    db,
    actions: node.actions,
    log: (o) => logs.push(o),
    now: () => clock.now,
    clientIp: (c) => c.req.header('x-test-ip') ?? '192.0.2.1',
    ...opts.deps,
  }
  const app = new Hono().route('/_caje', createAdminApp(deps))
  return {
    app,
    deps,
    node,
    origin,
    config,
    logs,
    clock,
    client: () => new Client(app),
    holdOrigin() {
      let release!: () => void
      gate = new Promise<void>((resolve) => (release = resolve))
      return () => {
        gate = undefined
        release()
      }
    },
    diskCount: () => node.store.stats().entries,
    async manifestCount(filter = '') {
      await node.manifest.writer.flush()
      return (await node.actions.listManifest({ filter, offset: 0, limit: 1 })).total
    },
    async manifestEntries(filter = '') {
      await node.manifest.writer.flush()
      return (await node.actions.listManifest({ filter, offset: 0, limit: 1000 })).entries
    },
    async purgeCount() {
      await node.manifest.writer.flush()
      return Number((await db.selectFrom('purges').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
    },
    async close() {
      await node.close()
      await origin.close()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** GET a path through the node as the sample site. */
export function fetchAsSite(node: RunningCaje, pathname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: node.port, path: pathname, headers: { host: new URL(SITE).host }, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      .on('error', reject)
  })
}

/**
 * Cache `n` sample pages through the node's proxy; then hand every sixth to the
 * peer: recorded in the manifest as held by it, dropped from this node's disk.
 */
async function seed(node: RunningCaje, n: number): Promise<void> {
  if (n === 0) return
  let next = 0
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < n) {
        const status = await fetchAsSite(node, samplePath(next++))
        if (status !== 200) throw new Error(`seeding the sample site: ${status}`)
      }
    }),
  )
  await whenReached(node.store, () => node.store.stats().entries === n)
  const peerUrls = new Set<string>()
  for (let i = 0; i < n; i++) {
    if (onThisNode(i)) continue
    const url = `${SITE}${samplePath(i)}`
    peerUrls.add(url)
    for (const meta of await node.store.variants(url)) {
      node.manifest.writer.submit({ type: 'stored', nodeId: PEER, entry: toEntryRecord(meta) })
      // Gone from this node as an eviction would record it (a purge would remove the manifest entry too).
      node.manifest.writer.submit({ type: 'deleted', nodeId: node.config.nodeId, key: meta.key, variant: meta.variant })
    }
  }
  await node.store.deleteWhere((meta) => peerUrls.has(meta.url), 'purged')
  await node.manifest.writer.flush()
}

/** `n` more manifest rows, held by the peer only: bulk statements in one transaction (the test measures reads). */
async function seedPeerRows(node: RunningCaje, n: number): Promise<void> {
  await node.manifest.writer.flush()
  const now = Date.now()
  const host = new URL(SITE).host
  await node.manifest
    .readDb()
    .transaction()
    .execute(async (trx) => {
      for (let from = 0; from < n; from += 500) {
        const rows = Array.from({ length: Math.min(500, n - from) }, (_, j) => {
          const i = from + j
          return { key: `${SITE}/bulk/${i}`, variant: '', storedAt: now - n + i }
        })
        const ids = await trx
          .insertInto('entries')
          .values(
            rows.map((r) => ({
              key: r.key,
              variant: r.variant,
              host,
              url: r.key,
              status: 200,
              size: 1000,
              content_type: 'text/plain',
              stored_at: r.storedAt,
              stale_at: now + 3_600_000,
              delete_at: now + 7_200_000,
              tags: '[]',
              vary_headers: '{}',
            })),
          )
          .returning(['id', 'stored_at'])
          .execute()
        await trx
          .insertInto('entry_nodes')
          .values(ids.map((r) => ({ entry_id: r.id, node_id: PEER, stored_at: r.stored_at })))
          .execute()
      }
    })
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
