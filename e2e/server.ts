// The server the e2e specs drive: a real origin and two full caje nodes
// (startCaje) sharing one manifest file, each with its own disk cache.
//
//  - node 1 (`e2e-node-1`, region ams) is what the browser uses, on
//    http://localhost:PORT (WebAuthn refuses IP-address origins). It is warmed
//    with SITE_PAGES, some of them requested twice so the hit ratio is real.
//  - node 2 (`e2e-node-2`) holds a few of node 1's pages plus PEER_ONLY pages
//    node 1 never saw, all under node 1's public host (as every node of a CDN
//    serves one hostname), so Populate on node 1 has something to copy from it.
//
// Everything the specs check is derived from the tables below and from what the
// origin saw (`origin.count(path)`), never from a fixture inside caje.

import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { gzipSync } from 'node:zlib'
import { startCaje, type RunningCaje } from '../src/caje.ts'
import { freePort } from '../src/test-support/servers.ts'
import { loadConfig } from '../src/config.ts'
import type { Logger } from '../src/log.ts'
import { startOrigin, waitFor, type TestOrigin } from '../src/test-support/servers.ts'

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/**
 * Pages node 1 holds after the warm-up, in the order they are first requested
 * (assets and API calls interleaved, as a browsing session would), besides `/`,
 * which it holds twice: once per Accept-Encoding variant.
 */
export const SITE_PAGES = [
  ...range(1, 10).map((n) => `/assets/app-${n}.js`),
  ...range(11, 40).flatMap((n) => [`/assets/app-${n}.js`, `/api/products/${n - 10}`]),
  '/css/site.css',
]
/** Node 1's pages that node 2 holds too. */
export const SHARED_PAGES = range(1, 10).map((n) => `/assets/app-${n}.js`)
/** Pages only node 2 holds: what Populate on node 1 fetches from its peer. */
export const PEER_ONLY = [...range(1, 6).map((n) => `/assets/vendor-${n}.js`), ...range(31, 42).map((n) => `/api/products/${n}`)]
/** Requested on node 1 a second time, after they are stored: hits. */
const REPEATED = [...range(1, 40).map((n) => `/assets/app-${n}.js`), ...range(1, 10).map((n) => `/api/products/${n}`)]
/** Private, never stored: counted as misses. */
const UNCACHEABLE = '/api/cart'
/** Private too, asked for on node 2 only: the traffic page shows it for all nodes and for node 2, never for node 1. */
export const PEER_MISSED = '/api/wishlist'

/** Home page variants on node 1: one per Accept-Encoding it was asked with. */
const HOME_ENCODINGS = ['gzip, br', 'identity']

export interface E2eNode extends RunningCaje {
  /** Cache key of a path under the public host, as the store and the manifest record it. */
  keyOf(pathname: string): string
}

export interface E2eServer {
  /** `http://localhost:PORT` of node 1: the admin's public origin and the proxy's public host. */
  origin: string
  /** The CAJE_ADMIN_PASSWORD the nodes were started with. */
  adminPassword: string
  /** The CAJE_API_TOKEN the nodes were started with (the JSON API for scripts). */
  apiToken: string
  /** A URL node 1 and node 2 both hold, for purge. */
  sampleUrl: string
  node1: E2eNode
  node2: E2eNode
  upstream: TestOrigin
  /** What node 1's disk and the shared manifest hold after the warm-up. */
  counts: { node1Disk: number; manifest: number; peerOnly: number }
  /** Hits and misses node 1 served during the warm-up. */
  warmup: { hits: number; misses: number }
  /** Error log lines of either node (the final check wants none). */
  serverErrors: string[]
  close(): Promise<void>
}

// ---------------------------------------------------------------------------
// The origin: a small shop with versioned assets, a product API and a home page.

function filler(label: string, bytes: number): string {
  const line = `/* ${label}: generated body for the caje end-to-end test */\n`
  return line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes)
}

function handleOrigin(req: http.IncomingMessage, res: http.ServerResponse): void {
  const { pathname } = new URL(req.url ?? '/', 'http://origin')
  const send = (status: number, headers: Record<string, string>, body: string | Buffer) => {
    res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), 'last-modified': 'Mon, 06 Jan 2025 10:00:00 GMT', ...headers })
    res.end(body)
  }
  let m: RegExpExecArray | null
  if (pathname === '/') {
    const html = `<!doctype html><title>Shop</title>${filler('home', 6_000)}`
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))
    const body = gzip ? gzipSync(html) : Buffer.from(html)
    return send(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'public, max-age=300', vary: 'Accept-Encoding', ...(gzip ? { 'content-encoding': 'gzip' } : {}), 'surrogate-key': 'pages home' }, body)
  }
  if (pathname === '/css/site.css') {
    return send(200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'public, max-age=3600', etag: '"css-1"', 'surrogate-key': 'assets' }, filler('site.css', 18_500))
  }
  if ((m = /^\/assets\/(app|vendor)-(\d+)\.js$/.exec(pathname))) {
    const n = Number(m[2])
    const size = m[1] === 'vendor' ? 40_000 + n * 7_919 : 900 + ((n * 2_654) % 48_000)
    return send(
      200,
      { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=3600', etag: `"${m[1]}-${n}"`, 'surrogate-key': `assets ${m[1]}-${n}` },
      filler(`${m[1]}-${n}.js`, size),
    )
  }
  if ((m = /^\/api\/products\/(\d+)$/.exec(pathname))) {
    const n = Number(m[1])
    const body = JSON.stringify({ id: n, name: `Product ${n}`, price: 4.5 + n, description: filler(`product ${n}`, 200 + ((n * 97) % 1_400)) })
    return send(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=600', 'surrogate-key': `products product-${n}` }, body)
  }
  if (pathname === UNCACHEABLE || pathname === PEER_MISSED) {
    return send(200, { 'content-type': 'application/json', 'cache-control': 'private, no-store' }, '{"items":[]}')
  }
  send(404, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' }, 'not found')
}

// ---------------------------------------------------------------------------


/** GET through a node with an explicit Host (fetch() cannot set one); drains the body. */
function proxyGet(nodeUrl: string, pathname: string, headers: Record<string, string>): Promise<{ status: number; cacheStatus: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(pathname, nodeUrl), { headers, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cacheStatus: String(res.headers['cache-status'] ?? '') }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

export async function startServer(): Promise<E2eServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caje-e2e-'))
  const adminPassword = 'e2e admin password 1234'
  const apiToken = 'e2e-api-token-0123456789abcdefghij'
  const clusterSecret = 'e2e-cluster-secret-0123456789abcdef'
  const databasePath = path.join(dir, 'manifest.db')
  const serverErrors: string[] = []
  const logFor =
    (nodeId: string): Logger =>
    (entry) => {
      if (entry.level === 'error' || entry.event === 'admin.action_failed') serverErrors.push(`${nodeId}: ${JSON.stringify(entry)}`)
    }

  const upstream = await startOrigin(handleOrigin)
  const [port1, port2] = [await freePort(), await freePort()]
  const origin = `http://localhost:${port1}`
  const publicHost = `localhost:${port1}`

  const start = async (nodeId: string, port: number): Promise<E2eNode> => {
    const config = loadConfig({
      PORT: String(port),
      CAJE_LISTEN_HOST: '127.0.0.1',
      CAJE_ORIGIN: upstream.url,
      CAJE_DATA_DIR: path.join(dir, nodeId),
      CAJE_DATABASE_PATH: databasePath,
      CAJE_NODE_ID: nodeId,
      CAJE_REGION: 'ams',
      CAJE_INTERNAL_URL: `http://127.0.0.1:${port}`,
      CAJE_CLUSTER_SECRET: clusterSecret,
      CAJE_PUBLIC_ORIGIN: `http://localhost:${port}`,
      CAJE_ADMIN_PASSWORD: adminPassword,
      CAJE_API_TOKEN: apiToken,
      CAJE_POPULATE_INTERVAL: '0',
      // Purges reach the other node by the nudge only: its poll of the purge log is 10 minutes away.
      CAJE_PURGE_POLL_MS: '600000',
      CAJE_ACCESS_LOG: 'false',
      CAJE_SHUTDOWN_TIMEOUT_MS: '2000',
    })
    const node = await startCaje(config, logFor(nodeId))
    return Object.assign(node, { keyOf: (pathname: string) => `http://${publicHost}${pathname}` })
  }
  const node1 = await start('e2e-node-1', port1)
  const node2 = await start('e2e-node-2', port2)

  const stored = async (node: E2eNode, pathname: string, variants = 1) =>
    waitFor(async () => (await node.store.variants(node.keyOf(pathname))).length >= variants, `${node.config.nodeId} to store ${pathname}`)
  const get = async (node: E2eNode, pathname: string, headers: Record<string, string> = {}) => {
    const r = await proxyGet(node.url, pathname, { host: publicHost, 'accept-encoding': 'gzip, br', ...headers })
    if (r.status !== 200) throw new Error(`warm-up: ${node.config.nodeId} answered ${r.status} for ${pathname}`)
    return r
  }

  // Node 1: every page once (misses), the uncacheable one a few times, then the popular ones again (hits).
  const warmup = { hits: 0, misses: 0 }
  for (const p of SITE_PAGES) await get(node1, p)
  for (const encoding of HOME_ENCODINGS) await get(node1, '/', { 'accept-encoding': encoding })
  for (let i = 0; i < 3; i++) await get(node1, UNCACHEABLE)
  warmup.misses = HOME_ENCODINGS.length + SITE_PAGES.length + 3
  await stored(node1, '/', HOME_ENCODINGS.length)
  for (const p of SITE_PAGES) await stored(node1, p)
  for (const p of REPEATED) {
    const r = await get(node1, p)
    if (!/;\s*hit\b/.test(r.cacheStatus)) throw new Error(`warm-up: expected a hit for ${p}, got Cache-Status: ${r.cacheStatus}`)
  }
  warmup.hits = REPEATED.length

  // Node 2: some of node 1's pages, and the ones only it has.
  for (const p of [...SHARED_PAGES, ...PEER_ONLY]) await get(node2, p)
  for (const p of [...SHARED_PAGES, ...PEER_ONLY]) await stored(node2, p)
  for (let i = 0; i < 4; i++) await get(node2, PEER_MISSED)
  // A request is counted once its body is sent, a moment after the client has read it.
  const since = Date.now() - 3600_000
  await waitFor(async () => (await node2.actions.topMisses({ since, limit: 10, by: 'misses', node: 'e2e-node-2' })).some((p) => p.path.endsWith(PEER_MISSED) && p.misses === 4), 'node 2 to count its misses')
  // Node 2 records its minutes once a minute; record them now, as its next batch would, so node 1 can show them.
  node2.recordTraffic()

  // The manifest is written off the request path: wait until both nodes' records are in.
  await node1.manifest.writer.flush({ timeoutMs: 10_000 })
  await node2.manifest.writer.flush({ timeoutMs: 10_000 })

  return {
    origin,
    adminPassword,
    apiToken,
    sampleUrl: `${origin}/assets/app-2.js`,
    node1,
    node2,
    upstream,
    counts: {
      node1Disk: HOME_ENCODINGS.length + SITE_PAGES.length,
      manifest: HOME_ENCODINGS.length + SITE_PAGES.length + PEER_ONLY.length,
      peerOnly: PEER_ONLY.length,
    },
    warmup,
    serverErrors,
    async close() {
      await node1.close()
      await node2.close()
      await upstream.close()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}
