import { describe, expect, it, vi } from 'vitest'
import { Counter, Registry, collectDefaultMetrics, register as globalRegistry } from 'prom-client'
import { CACHE_STATUSES, createMetrics, renderMetrics, type CacheGaugeStats } from './metrics.ts'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** Parse the Prometheus text format (enough of it for these tests: no timestamps, no exemplars). */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (!line.trim()) continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) {
      types.set(type[1]!, type[2]!)
      continue
    }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return { samples, types }
}

async function scrape(metrics: ReturnType<typeof createMetrics>) {
  const { body } = await renderMetrics(metrics)
  const { samples, types } = parse(body)
  const value = (name: string, labels: Record<string, string> = {}): number | undefined => {
    const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`)
    return found[0]?.value
  }
  return { body, samples, types, value }
}

describe('createMetrics', () => {
  it('publishes every counter series at 0 before anything happened', async () => {
    const m = await scrape(createMetrics({ processMetrics: false }))
    for (const status of CACHE_STATUSES) expect(m.value('caje_requests_total', { cache_status: status })).toBe(0)
    for (const tier of ['memory', 'disk', 'origin']) expect(m.value('caje_served_bytes_total', { tier })).toBe(0)
    for (const kind of ['connect', 'timeout', 'reset', 'other']) expect(m.value('caje_origin_errors_total', { kind })).toBe(0)
    expect(m.value('caje_cache_stored_total')).toBe(0)
    expect(m.types.get('caje_requests_total')).toBe('counter')
    expect(m.types.get('caje_origin_response_seconds')).toBe('histogram')
    expect(m.types.get('caje_cache_entries')).toBe('gauge')
  })

  it('counts requests by cache status and bytes by tier', async () => {
    const metrics = createMetrics({ processMetrics: false })
    for (let i = 0; i < 5; i++) metrics.request('hit')
    metrics.request('miss')
    metrics.request('stale')
    metrics.bytesServed('memory', 1024)
    metrics.bytesServed('memory', 1024)
    metrics.bytesServed('disk', 65536)
    metrics.bytesServed('origin', 10)
    const m = await scrape(metrics)
    expect(m.value('caje_requests_total', { cache_status: 'hit' })).toBe(5)
    expect(m.value('caje_requests_total', { cache_status: 'miss' })).toBe(1)
    expect(m.value('caje_requests_total', { cache_status: 'stale' })).toBe(1)
    expect(m.value('caje_requests_total', { cache_status: 'bypass' })).toBe(0)
    expect(m.value('caje_served_bytes_total', { tier: 'memory' })).toBe(2048)
    expect(m.value('caje_served_bytes_total', { tier: 'disk' })).toBe(65536)
    expect(m.value('caje_served_bytes_total', { tier: 'origin' })).toBe(10)
  })

  it('does not count twice across scrapes, and keeps counting after one', async () => {
    const metrics = createMetrics({ processMetrics: false })
    metrics.request('hit')
    metrics.evicted(3)
    expect((await scrape(metrics)).value('caje_requests_total', { cache_status: 'hit' })).toBe(1)
    expect((await scrape(metrics)).value('caje_requests_total', { cache_status: 'hit' })).toBe(1)
    metrics.request('hit')
    metrics.evicted()
    const m = await scrape(metrics)
    expect(m.value('caje_requests_total', { cache_status: 'hit' })).toBe(2)
    expect(m.value('caje_cache_evictions_total')).toBe(4)
  })

  it('counts store, origin, populate and purge events', async () => {
    const metrics = createMetrics({ processMetrics: false })
    metrics.stored()
    metrics.stored()
    metrics.integrityFailure()
    metrics.writeFailure()
    metrics.originError('timeout')
    metrics.originError('connect')
    metrics.originError('connect')
    metrics.originError('something-new' as never)
    metrics.populate('done', 10_000)
    metrics.populate('done', 5_000)
    metrics.populate('skipped')
    metrics.populate('failed')
    metrics.purge('prefix')
    metrics.purge('all')
    const m = await scrape(metrics)
    expect(m.value('caje_cache_stored_total')).toBe(2)
    expect(m.value('caje_cache_integrity_failures_total')).toBe(1)
    expect(m.value('caje_cache_write_failures_total')).toBe(1)
    expect(m.value('caje_origin_errors_total', { kind: 'connect' })).toBe(2)
    expect(m.value('caje_origin_errors_total', { kind: 'timeout' })).toBe(1)
    expect(m.value('caje_origin_errors_total', { kind: 'other' })).toBe(1)
    expect(m.value('caje_populate_entries_total', { result: 'done' })).toBe(2)
    expect(m.value('caje_populate_entries_total', { result: 'skipped' })).toBe(1)
    expect(m.value('caje_populate_entries_total', { result: 'failed' })).toBe(1)
    expect(m.value('caje_populate_bytes_total')).toBe(15_000)
    expect(m.value('caje_purges_total', { kind: 'prefix' })).toBe(1)
    expect(m.value('caje_purges_total', { kind: 'all' })).toBe(1)
    expect(m.value('caje_purges_total', { kind: 'url' })).toBe(0)
  })

  it('records origin latency in a cumulative histogram by status', async () => {
    const metrics = createMetrics({ processMetrics: false, originLatencyBuckets: [0.01, 0.1, 1] })
    metrics.originLatency(0.005, 200)
    metrics.originLatency(0.05, 200)
    metrics.originLatency(2, 200)
    metrics.originLatency(0.02, 304)
    metrics.originLatency(0.02, 42) // not an HTTP status
    const m = await scrape(metrics)
    const bucket = (status: string, le: string) => m.value('caje_origin_response_seconds_bucket', { status, le })
    expect(bucket('200', '0.01')).toBe(1)
    expect(bucket('200', '0.1')).toBe(2)
    expect(bucket('200', '1')).toBe(2)
    expect(bucket('200', '+Inf')).toBe(3)
    expect(m.value('caje_origin_response_seconds_count', { status: '200' })).toBe(3)
    expect(m.value('caje_origin_response_seconds_sum', { status: '200' })).toBeCloseTo(2.055, 6)
    expect(m.value('caje_origin_response_seconds_count', { status: '304' })).toBe(1)
    expect(m.value('caje_origin_response_seconds_count', { status: 'other' })).toBe(1)
  })

  it('counts a latency equal to a bound in that bound’s bucket (le is inclusive)', async () => {
    const metrics = createMetrics({ processMetrics: false, originLatencyBuckets: [0.01, 0.1] })
    metrics.originLatency(0.01, 200)
    metrics.originLatency(0.1, 200)
    const m = await scrape(metrics)
    expect(m.value('caje_origin_response_seconds_bucket', { status: '200', le: '0.01' })).toBe(1)
    expect(m.value('caje_origin_response_seconds_bucket', { status: '200', le: '0.1' })).toBe(2)
    expect(m.value('caje_origin_response_seconds_bucket', { status: '200', le: '+Inf' })).toBe(2)
  })

  it('ignores values that are not counts instead of throwing on the request path', async () => {
    const metrics = createMetrics({ processMetrics: false })
    expect(() => {
      metrics.originLatency(Number.NaN, 200)
      metrics.originLatency(Number.POSITIVE_INFINITY, 200)
      metrics.originLatency(-1, 200)
      metrics.bytesServed('memory', -5)
      metrics.bytesServed('memory', Number.NaN)
      metrics.evicted(0)
      metrics.request('nonsense' as never)
    }).not.toThrow()
    const m = await scrape(metrics)
    expect(m.value('caje_origin_response_seconds_count', { status: '200' })).toBeUndefined()
    expect(m.value('caje_served_bytes_total', { tier: 'memory' })).toBe(0)
    expect(m.value('caje_cache_evictions_total')).toBe(0)
    expect(m.samples.filter((s) => s.name === 'caje_requests_total').reduce((a, s) => a + s.value, 0)).toBe(0)
  })

  it('reads the cache gauges from the stats source at scrape time', async () => {
    let stats: CacheGaugeStats = { entries: 3, bytes: 3000, memoryEntries: 2, memoryBytes: 2000 }
    const metrics = createMetrics({ processMetrics: false })
    metrics.setCacheStats(() => stats)
    let m = await scrape(metrics)
    expect(m.value('caje_cache_entries')).toBe(3)
    expect(m.value('caje_cache_bytes')).toBe(3000)
    expect(m.value('caje_memory_cache_entries')).toBe(2)
    expect(m.value('caje_memory_cache_bytes')).toBe(2000)
    stats = { entries: 4, bytes: 4096, memoryEntries: 0, memoryBytes: 0 }
    m = await scrape(metrics)
    expect(m.value('caje_cache_entries')).toBe(4)
    expect(m.value('caje_memory_cache_bytes')).toBe(0)
  })

  it('still answers when the stats source throws, and counts it', async () => {
    let fail = false
    const metrics = createMetrics({
      processMetrics: false,
      cacheStats: () => {
        if (fail) throw new Error('store closed')
        return { entries: 7, bytes: 70, memoryEntries: 0, memoryBytes: 0 }
      },
    })
    expect((await scrape(metrics)).value('caje_cache_entries')).toBe(7)
    fail = true
    const m = await scrape(metrics)
    expect(m.value('caje_cache_entries')).toBe(7)
    expect(m.value('caje_metrics_collect_errors_total')).toBe(6) // once per cache gauge: entries, bytes, memory entries and bytes, write queue jobs and bytes
  })

  it('uses its own registry: two instances and the global registry never share counts', async () => {
    const a = createMetrics({ processMetrics: false })
    const b = createMetrics({ processMetrics: false })
    a.request('hit')
    expect((await scrape(a)).value('caje_requests_total', { cache_status: 'hit' })).toBe(1)
    expect((await scrape(b)).value('caje_requests_total', { cache_status: 'hit' })).toBe(0)
    expect(await globalRegistry.metrics()).not.toContain('caje_requests_total')
  })

  it('adds process metrics by default and renders the Prometheus text content type', async () => {
    const metrics = createMetrics()
    const rendered = await renderMetrics(metrics)
    expect(rendered.contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    const m = await scrape(metrics)
    expect(m.value('process_resident_memory_bytes')).toBeGreaterThan(0)
    expect(m.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge')
  })

  it("has every one of prom-client's default metrics but the per-collection GC histogram, which costs every collection a callback", async () => {
    const defaults = new Registry()
    collectDefaultMetrics({ register: defaults })
    const expected = defaults
      .getMetricsAsArray()
      .map((metric) => metric.name)
      .filter((name) => name !== 'nodejs_gc_duration_seconds')
    const names = createMetrics()
      .registry.getMetricsAsArray()
      .map((metric) => metric.name)
    expect(names).toEqual(expect.arrayContaining(expected))
    expect(names).not.toContain('nodejs_gc_duration_seconds')
  })

  it('keeps the hot-path calls cheap: they only count, and prom-client sees the counts when scraped', async () => {
    // Every increment of a prom-client counter, its labelled children's included (prom-client
    // 15 binds them to this method when the counter is made, so the spy goes first).
    const proto = Counter.prototype as unknown as { incWithoutExemplar: (...args: unknown[]) => void }
    const inc = vi.spyOn(proto, 'incWithoutExemplar')
    try {
      const metrics = createMetrics({ processMetrics: false })
      const before = inc.mock.calls.length
      const n = 10_000
      for (let i = 0; i < n; i++) {
        metrics.request('hit')
        metrics.bytesServed('memory', 1024)
      }
      // Not one prom-client call per request: no label lookup, no increment.
      expect(inc.mock.calls.length).toBe(before)
      const m = await scrape(metrics)
      expect(m.value('caje_requests_total', { cache_status: 'hit' })).toBe(n)
      expect(m.value('caje_served_bytes_total', { tier: 'memory' })).toBe(n * 1024)
      // The scrape hands each count over at once: one increment per series that changed.
      expect(inc.mock.calls.length - before).toBe(2)
    } finally {
      inc.mockRestore()
    }
  })
})

describe('hitRatio', () => {
  it('is hits and stale answers over the answers of cacheable requests, null before any', () => {
    const metrics = createMetrics({ processMetrics: false })
    expect(metrics.hitRatio()).toBeNull()
    metrics.request('bypass')
    metrics.request('error')
    expect(metrics.hitRatio()).toBeNull()
    for (const s of ['hit', 'hit', 'stale', 'miss', 'revalidated', 'pass'] as const) metrics.request(s)
    expect(metrics.hitRatio()).toBe(3 / 6)
  })
})

describe('event-loop stalls', () => {
  it('are a histogram of their lengths, empty until the first', async () => {
    const metrics = createMetrics({ processMetrics: false })
    let m = await scrape(metrics)
    expect(m.types.get('caje_event_loop_stall_seconds')).toBe('histogram')
    expect(m.value('caje_event_loop_stall_seconds_count')).toBe(0)
    metrics.eventLoopStall(0.3)
    metrics.eventLoopStall(5.2)
    metrics.eventLoopStall(Number.NaN)
    m = await scrape(metrics)
    expect(m.value('caje_event_loop_stall_seconds_count')).toBe(2)
    expect(m.value('caje_event_loop_stall_seconds_sum')).toBeCloseTo(5.5)
    expect(m.value('caje_event_loop_stall_seconds_bucket', { le: '0.25' })).toBe(0)
    expect(m.value('caje_event_loop_stall_seconds_bucket', { le: '0.5' })).toBe(1)
    expect(m.value('caje_event_loop_stall_seconds_bucket', { le: '5' })).toBe(1)
    expect(m.value('caje_event_loop_stall_seconds_bucket', { le: '10' })).toBe(2)
  })
})
