// createApp(deps) → Hono: caje's own routes under /_caje/, everything else
// through the proxy. No side effects here: main.ts builds the dependencies.

import { Hono } from 'hono'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import type { Logger } from './log.ts'
import { renderMetrics, type Metrics } from './metrics.ts'
import { secretEquals } from './admin/secrets.ts'
import { proxyHandler } from './proxy/http-adapter.ts'
import type { Proxy, ProxyResult } from './proxy/proxy.ts'

export interface AppDeps {
  config: Pick<Config, 'nodeId' | 'region' | 'accessLog' | 'trustForwardedHeaders' | 'metricsToken'>
  store: CacheStore
  proxy: Proxy
  log: Logger
  /** Extra fields for /_caje/health (role, populate progress, ...). */
  healthInfo?: () => Record<string, unknown>
  /** Sub-apps mounted under /_caje (admin, internal, metrics), most specific first. */
  mounts?: Array<{ path: string; app: Hono }>
  onServed?: (result: ProxyResult, bytes: number) => void
  metrics?: Metrics
}

export const ADMIN_PREFIX = '/_caje'

export function createApp(deps: AppDeps): Hono {
  const app = new Hono()
  const startedAt = Date.now()

  // Health is public (load balancers and fly checks call it) and reveals nothing secret.
  app.get(`${ADMIN_PREFIX}/health`, (c) => {
    const stats = deps.store.stats()
    c.header('cache-control', 'no-store')
    return c.json({
      status: 'ok',
      node: deps.config.nodeId,
      region: deps.config.region,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      cache: { entries: stats.entries, bytes: stats.bytes, memoryEntries: stats.memoryEntries, memoryBytes: stats.memoryBytes, integrityFailures: stats.integrityFailures, writeFailures: stats.writeFailures },
      ...deps.healthInfo?.(),
    })
  })

  // Prometheus text; behind a bearer token when CAJE_METRICS_TOKEN is set.
  app.get(`${ADMIN_PREFIX}/metrics`, async (c) => {
    c.header('cache-control', 'no-store')
    const token = deps.config.metricsToken
    if (token) {
      const auth = c.req.header('authorization') ?? ''
      if (!auth.startsWith('Bearer ') || !secretEquals(auth.slice(7), token)) {
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

  app.all('*', proxyHandler({ proxy: deps.proxy, log: deps.log, accessLog: deps.config.accessLog, trustForwarded: deps.config.trustForwardedHeaders, onServed: deps.onServed }))
  return app
}
