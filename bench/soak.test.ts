// A short soak (a few seconds, few connections) so every test run checks the
// soak harness and caje under mixed load: no wrong body, no 5xx, no failure.

import { describe, expect, it } from 'vitest'
import { formatSoak, runSoak } from './soak.ts'

describe('soak (short)', () => {
  it('serves only right bodies and no 5xx under a mix of hits, misses, revalidations, passes and purges', async () => {
    // A disk budget smaller than the objects requested, so eviction runs under the mix too.
    const r = await runSoak({ durationS: 5, connections: 8, warmupS: 1, purgeEveryS: 1, cacheMaxBytes: 4 * 1024 * 1024, memoryCacheBytes: 1024 * 1024 })
    expect(r.problems).toEqual([])
    expect(r.wrongBodies).toBe(0)
    expect(r.serverErrors).toBe(0)
    expect(r.failures).toBe(0)
    expect(r.otherStatuses).toBe(0)
    expect(r.purgeFailures).toBe(0)
    expect(r.purges).toBeGreaterThan(0)
    // Every kind of request was exercised, and caching did happen.
    for (const kind of ['hit', 'miss', 'revalidate', 'pass'] as const) expect(r.byKind[kind], kind).toBeGreaterThan(0)
    expect(r.cacheHits).toBeGreaterThan(0)
    expect(r.start.rssBytes).toBeGreaterThan(0)
    expect(r.end.fds).toBeGreaterThan(0)
    // The timeline: caje's heap and cache figures read from /_caje/metrics, the budget holding.
    expect(r.metricsFailures).toBe(0)
    expect(r.timeline.length).toBeGreaterThanOrEqual(2)
    expect(r.end.heapUsedBytes).toBeGreaterThan(0)
    expect(r.end.heapFloorBytes).toBeGreaterThan(0)
    expect(r.end.evictions).toBeGreaterThan(0)
    expect(r.end.cacheEntries).toBeGreaterThan(0)
    expect(formatSoak(r)).toContain('| 0 | 0 | 0 |')
  }, 45_000)
})
