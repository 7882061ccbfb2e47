// createApp(deps) → Hono: caje's own routes under /_caje/, everything else
// through the proxy. No side effects here: main.ts builds the dependencies.

import { Hono } from 'hono'
import { ADMIN_BODY_LIMIT_BYTES, limitBody } from './admin/body-limit.ts'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import type { Logger } from './log.ts'
import { renderMetrics, type Metrics } from './metrics.ts'
import { bearerToken, secretEquals } from './bearer.ts'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { getRequestListener } from '@hono/node-server'
import { nodeProxyListener, proxyHandler, type ProxyHandlerOptions } from './proxy/http-adapter.ts'
import type { Proxy, ProxyResult } from './proxy/proxy.ts'

export interface AppDeps {
  config: Pick<Config, 'nodeId' | 'region' | 'accessLog' | 'trustForwardedHeaders' | 'metricsToken'>
  store: CacheStore
  proxy: Proxy
  log: Logger
  /** Extra fields for /_caje/health: the role, and counts (only numbers and flags are shown). */
  healthInfo?: () => HealthInfo
  /** Sub-apps mounted under /_caje (admin, internal, metrics), most specific first. */
  mounts?: Array<{ path: string; app: Hono }>
  onServed?: (result: ProxyResult, bytes: number) => void
  metrics?: Metrics
}

export const ADMIN_PREFIX = '/_caje'

export interface HealthInfo {
  role: 'primary' | 'replica'
  /** Queue and delivery counts of the manifest writer. */
  manifestWriter?: object
  /** The last populate run's counts. */
  populate?: object | null
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
      cache: { entries: stats.entries, bytes: stats.bytes, memoryEntries: stats.memoryEntries, memoryBytes: stats.memoryBytes, integrityFailures: stats.integrityFailures, writeFailures: stats.writeFailures },
      ...(info && { role: info.role, manifestWriter: countsOf(info.manifestWriter), populate: countsOf(info.populate) }),
    })
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
