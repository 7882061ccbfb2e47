// Prometheus metrics for one caje process, in its own prom-client Registry
// (never the global one, so tests and several apps in one process never share
// counters).
//
// The proxy calls small named methods on the hot path. Those that run on every
// request (request, bytesServed) or on every store event cost one array
// increment: the counts live in Float64Arrays indexed by a label table fixed at
// start, and are handed to prom-client only when /_caje/metrics is scraped
// (each counter's collect() adds what changed since the last scrape). prom-client's
// own `.labels(...).inc()` allocates a label object and a hash string per
// call, which is fine once per scrape and not once per hit. The origin latency
// histogram, observed once per origin exchange (once per request on
// pass-through), is plain counts per status code too, written out when scraped.

import { createRequire } from 'node:module'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { StoreEvent } from './cache/types.ts'
import { CACHE_STATUSES, ORIGIN_ERROR_KINDS, POPULATE_RESULTS, PURGE_KINDS, SERVE_TIERS, type CacheStatusLabel, type OriginErrorKind, type PopulateResult, type PurgeKind, type ServeTier } from './vocabulary.ts'

export { CACHE_STATUSES, ORIGIN_ERROR_KINDS, POPULATE_RESULTS, PURGE_KINDS, SERVE_TIERS } from './vocabulary.ts'
export type { CacheStatusLabel, OriginErrorKind, PopulateResult, PurgeKind, ServeTier } from './vocabulary.ts'

/** What the cache gauges show; CacheStore#stats() returns a superset of this. */
export interface CacheGaugeStats {
  entries: number
  bytes: number
  memoryEntries: number
  memoryBytes: number
  /** Disk writes queued and not yet done, and the body bytes they hold. */
  writeQueueJobs?: number
  writeQueueBytes?: number
}

export interface MetricsOptions {
  /** Read at scrape time for the cache gauges. Can also be set later with setCacheStats(). */
  cacheStats?: () => CacheGaugeStats
  /** Add prom-client's process and Node.js metrics (CPU, RSS, heap, event-loop lag). Default true. */
  processMetrics?: boolean
  /** Upper bounds, in seconds, of the origin latency histogram. */
  originLatencyBuckets?: number[]
}

export interface Metrics {
  readonly registry: Registry
  /** One client request answered, by how the cache handled it. */
  request(cacheStatus: CacheStatusLabel): void
  /** Time until the origin's response headers arrived, by origin status code. */
  originLatency(seconds: number, status: number): void
  /** Response body bytes sent to clients, by where they came from. */
  bytesServed(tier: ServeTier, n: number): void
  /** A response was stored (a new or replaced variant). */
  stored(): void
  /** Entries dropped to stay within the disk or memory budget. */
  evicted(n?: number): void
  /** A stored body failed its integrity check (it is dropped and fetched again). */
  integrityFailure(): void
  /** Writing a response to the cache failed (the response itself was still served). */
  writeFailure(): void
  /** A storable response was served without being stored: the disk write queue was full. */
  writeSkipped(): void
  /** A storable response was kept in the memory tier only: the disk write queue was full. */
  storedMemoryOnly(): void
  /** An origin exchange failed before a usable response, by kind. */
  originError(kind: OriginErrorKind): void
  /** One entry handled by a populate run; bytes counted when it was fetched. */
  populate(result: PopulateResult, bytes?: number): void
  /** A purge applied on this node. */
  purge(kind: PurgeKind): void
  /** The event loop ran nothing else for this long (event-loop-stalls.ts: only stalls past its threshold). */
  eventLoopStall(seconds: number): void
  /** Where the cache gauges read from (the CacheStore usually exists after the metrics). */
  setCacheStats(source: () => CacheGaugeStats): void
  /** Hits ÷ answers of cacheable requests since start (hit and stale over those plus miss, revalidated and pass); null before any. */
  hitRatio(): number | null
}

/** Upper bounds, in seconds, of the event-loop stall histogram (stalls start at 0.1 s, event-loop-stalls.ts). */
export const EVENT_LOOP_STALL_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 30]

const DEFAULT_ORIGIN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * Counts kept in a Float64Array (index = position in `labelValues`), published
 * into a prom-client Counter at scrape time. Every label value is published
 * from the start at 0, so `rate()` works from the first scrape.
 */
class CounterTable {
  readonly counts: Float64Array
  private readonly published: Float64Array
  private readonly children: { inc(value?: number): void }[]

  constructor(registry: Registry, config: { name: string; help: string; labelName?: string; labelValues?: readonly string[] }) {
    const labelValues = config.labelValues ?? ['']
    this.counts = new Float64Array(labelValues.length)
    this.published = new Float64Array(labelValues.length)
    const table = this
    const counter = new Counter({
      name: config.name,
      help: config.help,
      labelNames: config.labelName ? [config.labelName] : [],
      registers: [registry],
      collect() {
        table.publish()
      },
    })
    this.children = labelValues.map((value) => {
      const child = config.labelName ? counter.labels(value) : { inc: (n?: number) => counter.inc(n ?? 1) }
      child.inc(0)
      return child
    })
  }

  private publish(): void {
    for (let i = 0; i < this.counts.length; i++) {
      const delta = this.counts[i]! - this.published[i]!
      if (delta > 0) {
        this.children[i]!.inc(delta)
        this.published[i] = this.counts[i]!
      }
    }
  }
}

/** One status code's observations in a LatencyHistogram. */
interface LatencySeries {
  /** Observations per bucket (not cumulative); the last one counts those above every bound. */
  readonly counts: Float64Array
  sum: number
}

/**
 * A Prometheus histogram by HTTP status, `status="200"` (or `"other"` for a code outside
 * 100-599), kept as plain counts and written out only when scraped. prom-client's Histogram
 * builds a label object and a hash string on every observation, and the origin latency is
 * observed once per origin exchange: on pass-through, once per request. The exposition is the
 * one prom-client writes for a histogram (cumulative `_bucket` lines with `le`, `_sum`, `_count`).
 */
class LatencyHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly bounds: readonly number[]
  /** By status code; index 0 holds the codes outside 100-599. */
  private series: (LatencySeries | undefined)[] = []

  constructor(registry: Registry, config: { name: string; help: string; buckets: readonly number[] }) {
    this.name = config.name
    this.help = config.help
    this.bounds = [...config.buckets].sort((a, b) => a - b)
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0])
  }

  observe(seconds: number, status: number): void {
    const code = Number.isInteger(status) && status >= 100 && status <= 599 ? status : 0
    const s = (this.series[code] ??= { counts: new Float64Array(this.bounds.length + 1), sum: 0 })
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && seconds > bounds[i]!) i++
    s.counts[i]!++
    s.sum += seconds
  }

  /** What prom-client's registry asks of a metric when it writes /metrics. */
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    this.series.forEach((s, code) => {
      if (!s) return
      const status = code === 0 ? 'other' : String(code)
      let cumulative = 0
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i]!
        values.push({ labels: { le, status }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      cumulative += s.counts[this.bounds.length]!
      values.push({ labels: { le: '+Inf', status }, value: cumulative, metricName: `${this.name}_bucket` })
      values.push({ labels: { status }, value: s.sum, metricName: `${this.name}_sum` })
      values.push({ labels: { status }, value: cumulative, metricName: `${this.name}_count` })
    })
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset(): void {
    this.series = []
  }
}

/**
 * prom-client's default process and Node.js metrics (the collectors collectDefaultMetrics runs, by
 * the names it lists), all but its `gc` one, nodejs_gc_duration_seconds. That one observes every
 * garbage collection through a PerformanceObserver: for each, Node builds an entry (a Map and four
 * deprecation wrappers), dispatches it in a setImmediate, and prom-client observes it with a label
 * object.
 * Under a 1 KiB memory hit load, with a scavenge every few hundred requests, that took about
 * 0.2 µs of main-thread CPU per request in a CPU profile (1% of a hit), for a metric nothing in
 * caje reads; the heap gauges (nodejs_heap_*) stay.
 */
const PROCESS_COLLECTORS = collectDefaultMetrics.metricsList.filter((name) => name !== 'gc')

function collectProcessMetrics(registry: Registry): void {
  const require = createRequire(import.meta.url)
  for (const name of PROCESS_COLLECTORS) {
    const collect = require(`prom-client/lib/metrics/${name}`) as (registry: Registry, config: { eventLoopMonitoringPrecision: number }) => void
    // collectDefaultMetrics' own default precision.
    collect(registry, { eventLoopMonitoringPrecision: 10 })
  }
}

function indexOf<T extends string>(values: readonly T[]): Record<T, number> {
  const out = {} as Record<T, number>
  values.forEach((v, i) => {
    out[v] = i
  })
  return out
}

const CACHE_STATUS_INDEX = indexOf(CACHE_STATUSES)
const SERVE_TIER_INDEX = indexOf(SERVE_TIERS)
const ORIGIN_ERROR_INDEX = indexOf(ORIGIN_ERROR_KINDS)
const POPULATE_INDEX = indexOf(POPULATE_RESULTS)
const PURGE_INDEX = indexOf(PURGE_KINDS)
const OTHER_ORIGIN_ERROR = ORIGIN_ERROR_INDEX.other

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry()
  if (options.processMetrics ?? true) collectProcessMetrics(registry)

  const requests = new CounterTable(registry, {
    name: 'caje_requests_total',
    help: 'Client requests answered, by cache status (hit, stale, miss, revalidated, bypass, pass, error).',
    labelName: 'cache_status',
    labelValues: CACHE_STATUSES,
  }).counts
  const served = new CounterTable(registry, {
    name: 'caje_served_bytes_total',
    help: 'Response body bytes sent to clients, by the tier they came from (memory, disk, origin).',
    labelName: 'tier',
    labelValues: SERVE_TIERS,
  }).counts
  const storedCount = new CounterTable(registry, { name: 'caje_cache_stored_total', help: 'Responses written to the cache.' }).counts
  const evictedCount = new CounterTable(registry, {
    name: 'caje_cache_evictions_total',
    help: 'Entries evicted to stay within the cache budgets.',
  }).counts
  const integrityCount = new CounterTable(registry, {
    name: 'caje_cache_integrity_failures_total',
    help: 'Stored bodies that failed their integrity check and were dropped.',
  }).counts
  const writeFailureCount = new CounterTable(registry, {
    name: 'caje_cache_write_failures_total',
    help: 'Cache writes that failed (the response was still served).',
  }).counts
  const writeSkippedCount = new CounterTable(registry, {
    name: 'caje_cache_writes_skipped_total',
    help: 'Storable responses served without being stored because the disk write queue was full.',
  }).counts
  const memoryOnlyCount = new CounterTable(registry, {
    name: 'caje_cache_writes_memory_only_total',
    help: 'Storable responses kept in the memory tier only (not written to disk, not shared with peers) because the disk write queue was full.',
  }).counts
  const originErrors = new CounterTable(registry, {
    name: 'caje_origin_errors_total',
    help: 'Origin exchanges that failed, by kind (connect, timeout, reset, protocol, dns, aborted, other).',
    labelName: 'kind',
    labelValues: ORIGIN_ERROR_KINDS,
  }).counts
  const populated = new CounterTable(registry, {
    name: 'caje_populate_entries_total',
    help: 'Entries handled by populate runs, by result (done, skipped, failed).',
    labelName: 'result',
    labelValues: POPULATE_RESULTS,
  }).counts
  const populatedBytes = new CounterTable(registry, {
    name: 'caje_populate_bytes_total',
    help: 'Body bytes fetched by populate runs.',
  }).counts
  const purges = new CounterTable(registry, {
    name: 'caje_purges_total',
    help: 'Purges applied on this node, by kind (url, prefix, tag, all).',
    labelName: 'kind',
    labelValues: PURGE_KINDS,
  }).counts

  const originLatency = new LatencyHistogram(registry, {
    name: 'caje_origin_response_seconds',
    help: 'Time from sending a request to the origin until its response headers arrived, by origin status code.',
    buckets: options.originLatencyBuckets ?? DEFAULT_ORIGIN_BUCKETS,
  })

  // Observed only when the loop stalled, rarely: prom-client's own histogram is cheap enough.
  const stallSeconds = new Histogram({
    name: 'caje_event_loop_stall_seconds',
    help: 'Event-loop stalls: stretches of 0.1 s or more in which the loop ran nothing else (no request, health check or new connection was served), by length.',
    buckets: EVENT_LOOP_STALL_BUCKETS,
    registers: [registry],
  })

  let cacheStats = options.cacheStats
  const cacheGauge = (name: string, help: string, read: (s: CacheGaugeStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        if (!cacheStats) return
        let value: number
        try {
          value = read(cacheStats())
        } catch {
          // The scrape must still answer; the failure is counted, the gauge keeps its last value.
          collectErrors[0]!++
          return
        }
        if (Number.isFinite(value)) this.set(value)
      },
    })
  cacheGauge('caje_cache_entries', 'Entries in the cache of this node (all tiers).', (s) => s.entries)
  cacheGauge('caje_cache_bytes', 'Body bytes in the disk cache of this node.', (s) => s.bytes)
  cacheGauge('caje_memory_cache_entries', 'Entries held in the memory tier.', (s) => s.memoryEntries)
  cacheGauge('caje_memory_cache_bytes', 'Body bytes held in the memory tier.', (s) => s.memoryBytes)
  cacheGauge('caje_cache_write_queue_jobs', 'Disk writes queued and not yet done.', (s) => s.writeQueueJobs ?? 0)
  cacheGauge('caje_cache_write_queue_bytes', 'Body bytes waiting in the disk write queue.', (s) => s.writeQueueBytes ?? 0)

  const collectErrors = new CounterTable(registry, {
    name: 'caje_metrics_collect_errors_total',
    help: 'Scrapes where the cache statistics could not be read (the cache gauges kept their last value).',
  }).counts

  const metrics: Metrics = {
    registry,
    request(cacheStatus) {
      const i = CACHE_STATUS_INDEX[cacheStatus]
      if (i !== undefined) requests[i]!++
    },
    originLatency(seconds, status) {
      // prom-client throws on a non-finite value; a metric must never fail a response.
      if (!(seconds >= 0) || seconds === Infinity) return
      originLatency.observe(seconds, status)
    },
    bytesServed(tier, n) {
      const i = SERVE_TIER_INDEX[tier]
      if (i !== undefined && n > 0) served[i]! += n
    },
    stored() {
      storedCount[0]!++
    },
    evicted(n = 1) {
      if (n > 0) evictedCount[0]! += n
    },
    integrityFailure() {
      integrityCount[0]!++
    },
    writeFailure() {
      writeFailureCount[0]!++
    },
    writeSkipped() {
      writeSkippedCount[0]!++
    },
    storedMemoryOnly() {
      memoryOnlyCount[0]!++
    },
    originError(kind) {
      originErrors[ORIGIN_ERROR_INDEX[kind] ?? OTHER_ORIGIN_ERROR]!++
    },
    populate(result, bytes) {
      const i = POPULATE_INDEX[result]
      if (i !== undefined) populated[i]!++
      if (bytes !== undefined && bytes > 0) populatedBytes[0]! += bytes
    },
    purge(kind) {
      const i = PURGE_INDEX[kind]
      if (i !== undefined) purges[i]!++
    },
    eventLoopStall(seconds) {
      if (seconds >= 0 && seconds !== Infinity) stallSeconds.observe(seconds)
    },
    setCacheStats(source) {
      cacheStats = source
    },
    hitRatio() {
      const count = (label: CacheStatusLabel) => requests[CACHE_STATUS_INDEX[label]!]!
      const hits = count('hit') + count('stale')
      const answers = hits + count('miss') + count('revalidated') + count('pass')
      return answers === 0 ? null : hits / answers
    },
  }
  return metrics
}

/** Counts what a cache store reports (subscribe this to CacheStore#subscribe). */
export function countStoreEvents(metrics: Metrics): (event: StoreEvent) => void {
  return (event) => {
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
      case 'write-skipped':
        return event.reason === 'memory-only' ? metrics.storedMemoryOnly() : metrics.writeSkipped()
    }
  }
}

/** The Prometheus text exposition of everything in this Metrics' registry. */
export async function renderMetrics(metrics: Metrics): Promise<{ contentType: string; body: string }> {
  return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }
}
