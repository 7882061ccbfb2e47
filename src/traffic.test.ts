import { describe, expect, it } from 'vitest'
import type { CacheStatus } from './proxy/cache-status.ts'
import { createTrafficRecorder, startTrafficRecording } from './traffic.ts'

const served = (cacheStatus: CacheStatus, tier: 'memory' | 'disk' | 'origin' | 'none') => ({ cacheStatus, tier })

describe('traffic per minute', () => {
  it('counts requests, answers from cache and from the origin, and their bytes, per minute', () => {
    const clock = { now: Date.UTC(2026, 0, 1, 12, 0, 30) }
    const t = createTrafficRecorder({ now: () => clock.now })
    t.record(served({ hit: true, ttl: 50 }, 'memory'), 100)
    t.record(served({ hit: true, fwd: 'stale', fwdStatus: 304, ttl: 60 }, 'disk'), 50)
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin'), 1000)
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 10)
    t.record(served({ fwd: 'method', fwdStatus: 201 }, 'origin'), 5)
    clock.now += 60_000
    t.record(served({ hit: true, ttl: 10 }, 'memory'), 7)
    const minute = Date.UTC(2026, 0, 1, 12, 0)
    expect(t.pending()).toEqual([
      { minute, requests: 5, hits: 2, misses: 2, bytesCache: 150, bytesOrigin: 1015 },
      { minute: minute + 60_000, requests: 1, hits: 1, misses: 0, bytesCache: 7, bytesOrigin: 0 },
    ])
    // Only finished minutes leave; the current one stays until it is over.
    expect(t.takeFinished().map((m) => m.minute)).toEqual([minute])
    expect(t.takeFinished()).toEqual([])
    expect(t.pending().map((m) => m.minute)).toEqual([minute + 60_000])
  })

  it('records what is left, the current minute included, when it stops', () => {
    const ops: unknown[] = []
    const t = createTrafficRecorder()
    t.record(served({ hit: true, ttl: 1 }, 'memory'), 1)
    const stop = startTrafficRecording({ recorder: t, writer: { submit: (op) => void ops.push(op) }, nodeId: 'n1', intervalMs: 3_600_000 })
    stop()
    expect(ops).toMatchObject([{ type: 'minutes', nodeId: 'n1', minutes: [{ requests: 1, hits: 1 }] }])
  })
})
