// createApp(deps) → Hono: caje's own routes under /_caje/, everything else
// through the proxy. No side effects here: main.ts builds the dependencies.

import { Hono } from 'hono'
import { ADMIN_BODY_LIMIT_BYTES, limitBody } from './admin/body-limit.ts'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import type { Logger } from './log.ts'
import { renderMetrics, type Metrics } from './metrics.ts'
import { bearerToken, secretEquals } from './bearer.ts'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Server } from 'node:net'
import { getRequestListener } from '@hono/node-server'
import { nodeProxyListener, proxyHandler, type OnServed, type ProxyHandlerOptions } from './proxy/http-adapter.ts'
import type { ReadyStatus } from './manifest/hot-set.ts'
import type { Proxy } from './proxy/proxy.ts'

export interface AppDeps {
  config: Pick<Config, 'nodeId' | 'region' | 'accessLog' | 'trustForwardedHeaders' | 'metricsToken'>
  store: CacheStore
  proxy: Proxy
  log: Logger
  /** Whether this node has warmed up (hot-set.ts), for /_caje/ready; absent means always ready. */
  readiness?: () => ReadyStatus
  /** Extra fields for /_caje/health: the role, and counts (only numbers and flags are shown). */
  healthInfo?: () => HealthInfo
  /** Sub-apps mounted under /_caje (admin, internal, metrics), most specific first. */
  mounts?: Array<{ path: string; app: Hono }>
  onServed?: OnServed
  metrics?: Metrics
}

export const ADMIN_PREFIX = '/_caje'

export interface HealthInfo {
  role: 'primary' | 'replica' | 'replica, primary unknown'
  /** Queue and delivery counts of the manifest writer. */
  manifestWriter?: object
  /** The last populate run's counts. */
  populate?: object | null
  /** Event-loop stalls since start (event-loop-stalls.ts). */
  eventLoop?: object
}

/**
 * Only the numbers and flags of an object: health is public, so a path, a URL
 * or an error text (the manifest file, the primary's internal address) that a
 * stats object also carries stays on the signed-in status page.
 */
function countsOf(o: object | null | undefined): Record<string, number | boolean | null> | null {
  if (!o) return null
  const out: Record<string, number | boolean | null> = {}
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number' || typeof v === 'boolean') out[k] = v
  return out
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono()
  const startedAt = Date.now()

  // Every body sent to caje's own routes is capped before anything reads it; the internal
  // routes authenticate first and keep their own, larger limit for manifest batches.
  app.use(`${ADMIN_PREFIX}/*`, limitBody({ maxBytes: ADMIN_BODY_LIMIT_BYTES, except: [`${ADMIN_PREFIX}/internal/`] }))

  // Health is public (load balancers and fly checks call it): status, node, region, role and
  // counts, nothing about where the manifest lives or how to reach the primary.
  app.get(`${ADMIN_PREFIX}/health`, (c) => {
    const stats = deps.store.stats()
    const info = deps.healthInfo?.()
    c.header('cache-control', 'no-store')
    return c.json({
      status: 'ok',
      node: deps.config.nodeId,
      region: deps.config.region,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      cache: { entries: stats.entries, bytes: stats.bytes, diskEntries: stats.diskEntries, maxEntries: stats.maxEntries, memoryEntries: stats.memoryEntries, memoryBytes: stats.memoryBytes, memoryHeldBytes: stats.memoryHeldBytes, memoryDroppedBytes: stats.memoryDroppedBytes, memoryDroppedHeldBytes: stats.memoryDroppedHeldBytes, memorySlabsAllocatedBytes: stats.memorySlabsAllocatedBytes, integrityFailures: stats.integrityFailures, writeFailures: stats.writeFailures, writesSkipped: stats.writesSkipped, writesMemoryOnly: stats.writesMemoryOnly, writeQueueJobs: stats.writeQueueJobs, writeQueueBytes: stats.writeQueueBytes, writeThreadSharedBytes: stats.writeThreadSharedBytes, indexBytes: stats.indexBytes, indexPackedLiveBytes: stats.indexPackedLiveBytes },
      fills: deps.proxy.stats(),
      ...(info && { role: info.role, manifestWriter: countsOf(info.manifestWriter), populate: countsOf(info.populate), eventLoop: countsOf(info.eventLoop) }),
    })
  })

  // Readiness, for load balancers: 503 while a node that started empty fetches the cluster's hot
  // set, then 200 for good. Liveness stays /_caje/health (a warming node is alive, not broken).
  // Public like health: counts and a state name only.
  app.get(`${ADMIN_PREFIX}/ready`, (c) => {
    c.header('cache-control', 'no-store')
    const status = deps.readiness?.()
    if (!status) return c.json({ ready: true, state: 'not-empty', node: deps.config.nodeId })
    return c.json({ node: deps.config.nodeId, ...status }, status.ready ? 200 : 503)
  })

  // Prometheus text; behind a bearer token when CAJE_METRICS_TOKEN is set.
  app.get(`${ADMIN_PREFIX}/metrics`, async (c) => {
    c.header('cache-control', 'no-store')
    const token = deps.config.metricsToken
    if (token) {
      const sent = bearerToken(c)
      if (sent === undefined || !secretEquals(sent, token)) {
        c.header('www-authenticate', 'Bearer realm="caje metrics"')
        return c.text('401 Unauthorized: send Authorization: Bearer <CAJE_METRICS_TOKEN>\n', 401)
      }
    }
    if (!deps.metrics) return c.text('404 Not Found: metrics are not enabled on this node\n', 404)
    const { contentType, body } = await renderMetrics(deps.metrics)
    return c.body(body, 200, { 'content-type': contentType })
  })

  // The README's address for the admin, `/_caje/`, and the bare `/_caje` both lead to the list.
  // Registered before the mounts: a sub-app mounted at '' does not match the trailing slash.
  app.all(`${ADMIN_PREFIX}/`, (c) => c.redirect(`${ADMIN_PREFIX}/list`, 303))

  for (const m of deps.mounts ?? []) app.route(`${ADMIN_PREFIX}${m.path}`, m.app)

  // Anything else under /_caje/ is caje's own namespace: never proxied, never cached.
  app.all(`${ADMIN_PREFIX}/*`, (c) => {
    c.header('cache-control', 'no-store')
    return c.text('404 Not Found: no such caje admin route\n', 404)
  })
  app.all(ADMIN_PREFIX, (c) => c.redirect(`${ADMIN_PREFIX}/list`, 302))

  app.all('*', proxyHandler(proxyOptions(deps)))
  return app
}

function proxyOptions(deps: AppDeps): ProxyHandlerOptions {
  return { proxy: deps.proxy, log: deps.log, accessLog: deps.config.accessLog, trustForwarded: deps.config.trustForwardedHeaders, onServed: deps.onServed }
}

/** Whether a request target belongs to caje's own routes (anything else is proxied). */
export function isAdminTarget(url: string): boolean {
  if (!url.startsWith('/')) return true // absolute-form or odd targets: let the router decide
  // The router resolves dot segments and percent-encoding (`/../_caje`, `/%5Fcaje`) before it
  // matches, so the fast path must see the same path, or such a target would reach the origin.
  if (url.includes('%') || url.includes('/.')) {
    let path = new URL(url, 'http://caje.invalid').pathname
    try {
      path = decodeURIComponent(path)
    } catch {
      return true // undecodable: the router answers it
    }
    return hasAdminPrefix(path)
  }
  return hasAdminPrefix(url)
}

function hasAdminPrefix(path: string): boolean {
  if (!path.startsWith(ADMIN_PREFIX)) return false
  const next = path.charCodeAt(ADMIN_PREFIX.length)
  return Number.isNaN(next) || next === 47 /* / */ || next === 63 /* ? */
}

/**
 * The Node request listener for a node: /_caje/ goes through Hono, everything
 * else straight to the proxy handler that Hono's fallback route would reach,
 * without the router's promise plumbing on the hit path.
 */
export function createRequestListener(app: Hono, deps: AppDeps): (incoming: IncomingMessage, outgoing: ServerResponse) => void {
  const viaHono = getRequestListener(app.fetch, { overrideGlobalObjects: false })
  const direct = nodeProxyListener(proxyOptions(deps))
  return (incoming, outgoing) => {
    if (isAdminTarget(incoming.url ?? '/')) void viaHono(incoming, outgoing)
    else direct(incoming, outgoing)
  }
}

// ── listeners ────────────────────────────────────────────────────────────

/** Errors that mean "this host has no IPv6" when binding `::`. */
const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EPROTONOSUPPORT', 'EADDRNOTAVAIL'])

export interface ListenOptions {
  host: string
  port: number
  /** The setting that chose the address, named in errors (CAJE_LISTEN_HOST, CAJE_INTERNAL_LISTEN). */
  variable: string
  /** `::` was the default, not asked for: on a host without IPv6, listen on 0.0.0.0 instead (and say so). */
  fallbackToIpv4?: boolean
  log: Logger
}

/**
 * Bind `server`. `::` is dual stack (IPv6 and IPv4-mapped addresses): Fly's
 * private network (`<machine>.vm.<app>.internal`) is IPv6 only, and clients
 * on 127.0.0.1 must still reach the node. Errors name the setting to change.
 */
export async function listen(server: Server, opts: ListenOptions): Promise<AddressInfo> {
  try {
    return await listenOnce(server, opts.host, opts.port)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? ''
    if (opts.host === '::' && NO_IPV6.has(code)) {
      if (opts.fallbackToIpv4) {
        opts.log({ level: 'warn', msg: `this host has no IPv6 (${code}): listening on 0.0.0.0 (IPv4 only); peers that reach this node over IPv6 will fail. Set ${opts.variable}=0.0.0.0 to say so explicitly`, port: opts.port })
        return await listenOnce(server, '0.0.0.0', opts.port)
      }
      throw new Error(`${opts.variable}: cannot listen on :: because this host has no IPv6 (${code}); set ${opts.variable} to 0.0.0.0 (IPv4 only) or an address this host has`)
    }
    if (code === 'EADDRINUSE') throw new Error(`${opts.variable}: port ${opts.port} on ${opts.host} is already in use; stop the other process or choose another port`)
    if (code === 'EADDRNOTAVAIL') throw new Error(`${opts.variable}: ${opts.host} is not an address of this host; use ::, 0.0.0.0 or one of its interface addresses`)
    throw err
  }
}

function listenOnce(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening)
      reject(err)
    }
    const onListening = () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    }
    server.once('error', onError)
    server.once('listening', onListening)
    // ipv6Only: false, whatever net.ipv6.bindv6only says: one socket for both families.
    server.listen({ host, port, ipv6Only: false })
  })
}

/** A URL to reach a listener bound to `address` from this machine (`::`/`0.0.0.0` → loopback). */
export function localUrl(address: AddressInfo): string {
  const host = address.address === '::' || address.address === '0.0.0.0' ? '127.0.0.1' : address.address
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`
}

export const INTERNAL_ONLY_TEXT = '404 Not Found: internal routes are served on the internal listener (CAJE_INTERNAL_LISTEN) only\n'

/** Mounted at /_caje/internal on the public listener when CAJE_INTERNAL_LISTEN is set: the public port refuses them. */
export function refuseInternalRoutes(): Hono {
  const app = new Hono()
  app.all('*', (c) => {
    c.header('cache-control', 'no-store')
    return c.text(INTERNAL_ONLY_TEXT, 404)
  })
  return app
}

export interface InternalListener {
  url: string
  server: http.Server
  close(): Promise<void>
}

/**
 * CAJE_INTERNAL_LISTEN: a second listener that serves /_caje/internal/* and
 * nothing else, so peers' traffic can stay on the private network (Fly:
 * bind it on `[::]` and expose no service for its port).
 */
export async function startInternalListener(opts: {
  internalApp: Hono
  host: string
  port: number
  headersTimeoutMs: number
  requestTimeoutMs: number
  log: Logger
}): Promise<InternalListener> {
  const app = new Hono()
  app.route(`${ADMIN_PREFIX}/internal`, opts.internalApp)
  app.all('*', (c) => {
    c.header('cache-control', 'no-store')
    return c.text('404 Not Found: this listener serves /_caje/internal/* only\n', 404)
  })
  const server = http.createServer({ connectionsCheckingInterval: 1_000 }, getRequestListener(app.fetch, { overrideGlobalObjects: false }))
  server.headersTimeout = opts.headersTimeoutMs
  server.requestTimeout = opts.requestTimeoutMs
  server.keepAliveTimeout = 5_000
  const address = await listen(server, { host: opts.host, port: opts.port, variable: 'CAJE_INTERNAL_LISTEN', log: opts.log })
  return {
    url: localUrl(address),
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeIdleConnections()
      }),
  }
}
