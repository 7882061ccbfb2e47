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

  it('ranks the paths that went to the origin by misses and by origin bytes, with why', () => {
    const clock = { now: Date.UTC(2026, 0, 1, 12, 0, 30) }
    const t = createTrafficRecorder({ now: () => clock.now })
    const at = (path: string) => ({ host: 'shop.example', path })
    for (let i = 0; i < 3; i++) t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 10, at('/cart'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'too-large' }, 'origin'), 5_000_000, at('/video.mp4'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin'), 100, at('/page'))
    t.record(served({ fwd: 'vary-miss', fwdStatus: 200, stored: true }, 'origin'), 100, at('/page'))
    t.record(served({ hit: true, ttl: 5 }, 'memory'), 100, at('/page'))
    clock.now += 60_000
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 10, at('/cart'))
    const byMisses = t.topMisses(clock.now - 3600_000, 10, 'misses')
    expect(byMisses).toEqual([
      { path: 'shop.example/cart', misses: 4, originBytes: 40, reasons: { private: 4 } },
      { path: 'shop.example/page', misses: 2, originBytes: 200, reasons: { 'not yet cached': 1, 'vary-miss': 1 } },
      { path: 'shop.example/video.mp4', misses: 1, originBytes: 5_000_000, reasons: { 'too-large': 1 } },
    ])
    expect(t.topMisses(clock.now - 3600_000, 1, 'bytes').map((p) => p.path)).toEqual(['shop.example/video.mp4'])
    // Only the minutes asked for.
    expect(t.topMisses(clock.now, 10, 'misses')).toEqual([{ path: 'shop.example/cart', misses: 1, originBytes: 10, reasons: { private: 1 } }])
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
