// Assembles one caje node from a Config: stores, origin client, proxy, app,
// HTTP server. main.ts calls it once; tests call it with port 0 and temp dirs.

import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { serve } from '@hono/node-server'
import { createApp } from './app.ts'
import { createCacheStore } from './cache/tiered-store.ts'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import { startDemoOrigin, type DemoOrigin } from './demo-origin.ts'
import type { Logger } from './log.ts'
import { createOriginClient } from './proxy/origin.ts'
import { createProxy, type Proxy } from './proxy/proxy.ts'
import { createMetrics, type Metrics } from './metrics.ts'

export interface RunningCaje {
  /** http://host:port caje listens on. */
  url: string
  port: number
  config: Config
  store: CacheStore
  proxy: Proxy
  metrics: Metrics
  /** Set when the built-in demo origin is running. */
  demoOrigin?: DemoOrigin
  /** Stop accepting, finish in-flight requests (up to shutdownTimeoutMs), close stores. */
  close(): Promise<void>
}

export async function startCaje(config: Config, log: Logger): Promise<RunningCaje> {
  const demoOrigin = !config.origin && config.sites.size === 0 ? await startDemoOrigin() : undefined
  const defaultOrigin = config.origin ?? (demoOrigin ? new URL(demoOrigin.url) : undefined)

  const store = await createCacheStore({
    dir: config.cacheDir,
    maxBytes: config.cacheMaxBytes,
    memoryBytes: config.memoryCacheBytes,
    maxObjectBytes: config.maxObjectBytes,
    log,
  })
  const metrics = createMetrics({ cacheStats: () => store.stats() })
  store.subscribe((event) => {
    switch (event.type) {
      case 'stored':
        return metrics.stored()
      case 'deleted':
        if (event.reason === 'evicted') metrics.evicted(1)
        return
      case 'integrity-failure':
        return metrics.integrityFailure()
      case 'write-failure':
        return metrics.writeFailure()
    }
  })
  const origin = createOriginClient({
    connectTimeoutMs: config.originConnectTimeoutMs,
    headersTimeoutMs: config.originHeadersTimeoutMs,
    bodyTimeoutMs: config.originBodyTimeoutMs,
  })
  const proxy = createProxy({
    store,
    origin,
    resolveOrigin: (host) => config.sites.get(host) ?? defaultOrigin,
    maxObjectBytes: config.maxObjectBytes,
    cacheSetCookie: config.cacheSetCookie,
    preserveHost: config.preserveHost,
    trustForwarded: config.trustForwardedHeaders,
    log,
    metrics,
  })
  const app = createApp({
    config,
    store,
    proxy,
    log,
    metrics,
    onServed: (result, bytes) => {
      if (result.tier !== 'none') metrics.bytesServed(result.tier, bytes)
    },
  })

  // Native Response objects: the server's lightweight Response ignores the "already sent" marker
  // on HEAD requests (Hono answers HEAD by wrapping the GET response), which would write headers twice.
  const server = serve({ fetch: app.fetch, port: config.port, hostname: config.listenHost, overrideGlobalObjects: false }) as Server
  await new Promise<void>((resolve, reject) => {
    if (server.listening) return resolve()
    server.once('listening', resolve)
    server.once('error', reject)
  })
  // Slow clients must not hold connections forever (slowloris): bound header and request time.
  server.headersTimeout = config.headersTimeoutMs
  server.requestTimeout = config.requestTimeoutMs
  server.keepAliveTimeout = 5_000

  const port = (server.address() as AddressInfo).port
  const host = config.listenHost === '0.0.0.0' || config.listenHost === '::' ? '127.0.0.1' : config.listenHost
  let closing: Promise<void> | undefined

  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    config,
    store,
    proxy,
    metrics,
    demoOrigin,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()))
        server.closeIdleConnections()
        const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), config.shutdownTimeoutMs).unref())
        if ((await Promise.race([closed, deadline])) === 'timeout') {
          log({ level: 'warn', msg: 'shutdown timeout reached; closing remaining connections' })
          server.closeAllConnections()
          await closed
        }
        await proxy.idle()
        await store.close()
        await origin.close()
        await demoOrigin?.close()
      })()
      return closing
    },
  }
}
