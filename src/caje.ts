// Assembles one caje node from a Config: stores, manifest, origin client,
// proxy, admin and internal apps, HTTP server. main.ts calls it once; tests
// call it with port 0 and temp dirs.

import http from 'node:http'
import { Hono } from 'hono'
import type { AdminActions } from './admin/actions.ts'
import { createAdminApp, createEnrolmentCode, enrolmentNotice } from './admin/app.ts'
import { NODE_LOCAL_PATHS } from './admin/cache-routes.ts'
import { createApp, createRequestListener, listen, localUrl, refuseInternalRoutes, startInternalListener, type AppDeps } from './app.ts'
import { createCacheStore } from './cache/tiered-store.ts'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import { startDemoOrigin, type DemoOrigin } from './demo-origin.ts'
import { forwardWritesToPrimary } from './forward-to-primary.ts'
import type { Logger } from './log.ts'
import { createInternalApp, INTERNAL_BASE_PATH } from './manifest/internal-routes.ts'
import type { ManifestLog } from './manifest/log.ts'
import { reconcileHoldings, recordStoreEvents, startHeartbeat } from './manifest/recorder.ts'
import { createPopulator } from './manifest/populate.ts'
import { createWarmUp } from './manifest/hot-set.ts'
import { createPurgeApplier } from './manifest/purge.ts'
import { describeRole } from './manifest/primary.ts'
import { startManifest, type ManifestRuntime } from './manifest/runtime.ts'
import { watchEventLoopStalls } from './event-loop-stalls.ts'
import { countStoreEvents, createMetrics, type Metrics } from './metrics.ts'
import { createNodeActions } from './node-actions.ts'
import { createOriginClient } from './proxy/origin.ts'
import { createProxy, type Proxy } from './proxy/proxy.ts'
import { explain } from './rules/explain.ts'
import { needsDemoOrigin, originResolver } from './rules/origins.ts'
import { createRulesRuntime, type RulesRuntime } from './rules/runtime.ts'
import { accountServed } from './served.ts'
import { startTrafficRecording } from './traffic.ts'

export interface RunningCaje {
  /** http://host:port caje listens on. */
  url: string
  port: number
  /** http://host:port of the internal listener (CAJE_INTERNAL_LISTEN), when there is one. */
  internalListenUrl?: string
  config: Config
  store: CacheStore
  proxy: Proxy
  metrics: Metrics
  manifest: ManifestRuntime
  /** The Hono app answering /_caje/* (its `routes` list every admin and internal route). */
  app: Hono
  /** What the admin asks of this node: its disk store, the manifest, populate and purge. */
  actions: AdminActions
  /** The rules file in force (reload on SIGHUP). */
  rules: RulesRuntime
  /** Set when the built-in demo origin is running. */
  demoOrigin?: DemoOrigin
  /** What an operator must know at start (how to enrol the first passkey). */
  notices: string[]
  /** Record this node's traffic in the manifest now, the current minute as it stands (it is recorded once a minute anyway). */
  recordTraffic(): void
  /** Stop accepting, finish in-flight requests (up to shutdownTimeoutMs), close stores. */
  close(): Promise<void>
}

export async function startCaje(config: Config, log: Logger): Promise<RunningCaje> {
  const manifestLog: ManifestLog = (level, msg, fields) => log({ level, msg, ...fields })
  const rules = createRulesRuntime({ path: config.rulesPath, initial: config.rules, log })
  const demoOrigin = needsDemoOrigin(config, rules.current()) ? await startDemoOrigin() : undefined
  const resolveOrigin = originResolver(config, () => rules.current(), demoOrigin ? new URL(demoOrigin.url) : undefined)

  const store = await createCacheStore({
    dir: config.cacheDir,
    maxBytes: config.cacheMaxBytes,
    maxEntries: config.cacheMaxEntries,
    memoryBytes: config.memoryCacheBytes,
    maxObjectBytes: config.maxObjectBytes,
    maxVariants: config.maxVariants,
    writeQueueBytes: config.writeQueueBytes,
    diskAdmission: config.diskAdmission,
    log,
  })
  const manifest = await startManifest({
    databasePath: config.databasePath,
    litefsDir: config.litefsDir,
    litefsApi: config.litefsApi,
    primaryUrlTemplate: config.primaryUrlTemplate,
    port: config.port,
    internalPort: config.internalListen?.port,
    nodeId: config.nodeId,
    clusterSecret: config.clusterSecret,
    log: manifestLog,
  })
  // Every store and eviction reaches the manifest through the writer's queue, never on the request path.
  const stopRecording = recordStoreEvents(store, manifest.writer, config.nodeId, manifestLog)
  // After a crash the disk and the manifest disagree on what this node holds: settle it before serving.
  try {
    const settled = await reconcileHoldings({ store, db: manifest.readDb(), writer: manifest.writer, nodeId: config.nodeId })
    if (settled.recorded + settled.forgotten > 0) log({ msg: 'manifest reconciled with this node\'s disk cache', ...settled })
  } catch (err) {
    // A replica whose file LiteFS has not synced yet: its next stores and evictions still get recorded.
    log({ level: 'warn', msg: 'could not reconcile the manifest with this node\'s disk cache', error: (err as Error).message })
  }

  const metrics = createMetrics({ cacheStats: () => store.stats() })
  store.subscribe(countStoreEvents(metrics))
  // What synchronous work (SQLite, parsing) costs every user of this node: counted, for metrics and health.
  const eventLoop = watchEventLoopStalls({ onStall: (ms) => metrics.eventLoopStall(ms / 1000) })
  const origin = createOriginClient({
    connectTimeoutMs: config.originConnectTimeoutMs,
    headersTimeoutMs: config.originHeadersTimeoutMs,
    bodyTimeoutMs: config.originBodyTimeoutMs,
    metrics,
  })
  const proxy = createProxy({
    store,
    origin,
    resolveOrigin,
    rules: () => rules.current(),
    maxObjectBytes: config.maxObjectBytes,
    cacheSetCookie: config.cacheSetCookie,
    heuristicFreshness: config.heuristicFreshness,
    preserveHost: config.preserveHost,
    trustForwarded: config.trustForwardedHeaders,
    stripRequestHeaders: config.stripRequestHeaders,
    log,
    metrics,
  })

  // Purges: recorded in the manifest, applied here at once, by peers when nudged (and by their poll).
  const purges = createPurgeApplier({
    readDb: () => manifest.readDb(),
    store,
    writer: manifest.writer,
    nodeId: config.nodeId,
    clusterSecret: config.clusterSecret,
    log: manifestLog,
    metrics,
    pollMs: config.purgePollMs,
  })
  const populator = createPopulator({
    readDb: () => manifest.readDb(),
    listDb: () => manifest.listDb(),
    store,
    nodeId: config.nodeId,
    clusterSecret: config.clusterSecret,
    fill: (url, varyHeaders, signal) => proxy.fill(url, varyHeaders, signal),
    concurrency: config.populateConcurrency,
    log: manifestLog,
    metrics,
    isPurged: (meta) => purges.covers(meta),
    softPurgedAt: (meta) => purges.softPurgedAt(meta),
    hotFirst: config.readyHotSet,
  })
  // This node's traffic, to the manifest in batches: per minute for the charts and top-misses tables,
  // per cache key for the hot set (what a node that starts empty fetches first).
  const traffic = startTrafficRecording({ writer: manifest.writer, nodeId: config.nodeId, hitFlushMs: config.hitFlushSeconds * 1000 })
  // Decided before the first request: a node whose disk is empty fetches the hot set before /_caje/ready says 200.
  const warmUp = await createWarmUp({
    store,
    readDb: () => manifest.readDb(),
    nodeId: config.nodeId,
    share: config.readyWarmShare,
    hotSetSize: config.readyHotSet,
    timeoutMs: config.readyTimeoutSeconds * 1000,
    populateEnabled: config.populateInterval > 0,
    populate: () => void populator.run(),
    log: manifestLog,
  })
  const actions = createNodeActions({
    config,
    store,
    readDb: () => manifest.readDb(),
    listDb: () => manifest.listDb(),
    writer: manifest.writer,
    role: () => manifest.role.current(),
    hitRatio: () => metrics.hitRatio(),
    populator,
    // A row's key names one variant set; a rule keyed on a request header or cookie value stores
    // one key per value under the same URL, and warming "this URL" means all of them.
    keyUrl: (key) => rules.current().purgeUrl(key),
    purgeUrl: (url) => rules.current().purgeUrl(url),
    purge: (request, by) => purges.purge(request, by),
    log,
    direct: config.litefsDir === undefined,
    traffic: traffic.recorder,
  })
  const enrolmentCode = config.adminPassword === undefined ? createEnrolmentCode() : undefined
  // Resolved per request: a promotion opens a writable handle, a demotion closes it.
  const adminDb = () => manifest.readDb()
  const adminApp = createAdminApp({
    config,
    db: adminDb,
    actions,
    log,
    enrolmentCode,
    rules: { explain: (url) => explain({ rules: () => rules.current(), store, readDb: () => manifest.readDb(), resolveOrigin, lastStatus: (key) => traffic.recorder.lastStatus(key) }, url), reload: () => rules.reload(), status: () => rules.status() },
  })
  const internalApp = createInternalApp({
    clusterSecret: config.clusterSecret,
    writableDb: () => manifest.writer.writableDb(),
    applyOps: (db, ops, options) => manifest.writer.applyReceived(db, ops, options),
    applyBody: (db, chunks, compact) => manifest.writer.applyReceivedBody(db, chunks, compact),
    role: () => manifest.role.current(),
    nodeId: config.nodeId,
    store,
    onPurgeNudge: (purge) => purges.nudge(purge),
    log: manifestLog,
  })
  const admin = new Hono()
  // A replica relays the client's address with sign-in, signed, so the primary rate-limits per client.
  admin.use('*', forwardWritesToPrimary({ role: () => manifest.role.current(), log, localPrefixes: [INTERNAL_BASE_PATH, ...NODE_LOCAL_PATHS], clientAddress: config }))
  admin.route('/', adminApp)

  const appDeps: AppDeps = {
    config,
    store,
    proxy,
    log,
    metrics,
    readiness: () => warmUp.status(),
    healthInfo: () => ({ role: describeRole(manifest.role.current()).role, manifestWriter: manifest.writer.stats(), populate: populator.status() ?? null, eventLoop: eventLoop.stats() }),
    mounts: [
      // With CAJE_INTERNAL_LISTEN, peers use the internal listener and the public port refuses internal routes.
      { path: '/internal', app: config.internalListen ? refuseInternalRoutes() : internalApp },
      { path: '', app: admin },
    ],
    onServed: accountServed({ traffic: traffic.recorder, metrics }),
  }
  const app = createApp(appDeps)

  // /_caje/ goes through Hono (with native Response objects: the server's lightweight Response
  // ignores the "already sent" marker on HEAD); everything else goes straight to the proxy.
  // Node enforces headersTimeout / requestTimeout only when it sweeps its connections, every
  // connectionsCheckingInterval (default 30 s): once a second keeps a slowloris client within a
  // second of CAJE_HEADERS_TIMEOUT_MS.
  const server = http.createServer({ connectionsCheckingInterval: 1_000 }, createRequestListener(app, appDeps))
  const address = await listen(server, { host: config.listenHost, port: config.port, variable: 'CAJE_LISTEN_HOST', fallbackToIpv4: config.listenHostDefaulted, log })
  const internalListener = config.internalListen
    ? await startInternalListener({ internalApp, ...config.internalListen, headersTimeoutMs: config.headersTimeoutMs, requestTimeoutMs: config.requestTimeoutMs, log }).catch(async (err: unknown) => {
        server.close()
        throw err
      })
    : undefined
  // Slow clients must not hold connections forever (slowloris): bound header and request time.
  server.headersTimeout = config.headersTimeoutMs
  server.requestTimeout = config.requestTimeoutMs
  server.keepAliveTimeout = 5_000

  const port = address.port
  const url = localUrl(address)
  const internalUrl = config.internalUrl.endsWith(':0') ? (internalListener?.url ?? url) : config.internalUrl
  const stopHeartbeat = startHeartbeat({ writer: manifest.writer, node: { id: config.nodeId, region: config.region, internalUrl, startedAt: Date.now() } })
  // After the heartbeat: this node's row exists before its first 'purge-applied'.
  purges.start()
  populator.start(config.populateInterval)

  const notices: string[] = []
  const notice = await enrolmentNotice({ config, db: adminDb(), enrolmentCode })
  if (notice) notices.push(notice)

  let closing: Promise<void> | undefined
  return {
    url,
    port,
    internalListenUrl: internalListener?.url,
    config,
    store,
    proxy,
    metrics,
    manifest,
    app,
    actions,
    recordTraffic: () => traffic.recordNow(),
    rules,
    demoOrigin,
    notices,
    close() {
      closing ??= (async () => {
        const closed = Promise.all([new Promise<void>((resolve) => server.close(() => resolve())), internalListener?.close()])
        server.closeIdleConnections()
        const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), config.shutdownTimeoutMs).unref())
        if ((await Promise.race([closed, deadline])) === 'timeout') {
          log({ level: 'warn', msg: 'shutdown timeout reached; closing remaining connections' })
          server.closeAllConnections()
          internalListener?.server.closeAllConnections()
          await closed
        }
        stopHeartbeat()
        warmUp.close()
        // The last minutes and counts per key go out with the writer's queue below.
        traffic.stop()
        await populator.close()
        await purges.close()
        await proxy.idle()
        await store.close()
        stopRecording()
        // Queued manifest writes are delivered (or counted as lost) before the handles close.
        await manifest.close()
        await origin.close()
        await demoOrigin?.close()
        eventLoop.stop()
      })()
      return closing
    },
  }
}
