import { describe, expect, it } from 'vitest'
import type { CacheStatus } from './proxy/cache-status.ts'
import { MAX_KEYS_PER_HITS_OP, MAX_PENDING_HIT_KEYS } from './manifest/hot-set.ts'
import type { ManifestOp } from './manifest/ops.ts'
import { createTrafficRecorder, KEYS_KEPT, rankPaths, startTrafficRecording, TOP_PATHS_RECORDED, type CountedRequest, type KeyCounter } from './traffic.ts'

const served = (cacheStatus: CacheStatus, tier: 'memory' | 'disk' | 'origin' | 'none') => ({ cacheStatus, tier })
const hit = served({ hit: true, ttl: 60 }, 'memory')
/** A GET the proxy handled (http), named by its host and path. */
const get = (host: string, path: string, more: Partial<CountedRequest> = {}): CountedRequest => ({ method: 'GET', scheme: 'http', host, path, ...more })

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
      { minute, requests: 5, hits: 2, misses: 2, bytesCache: 150, bytesOrigin: 1015, paths: [] },
      { minute: minute + 60_000, requests: 1, hits: 1, misses: 0, bytesCache: 7, bytesOrigin: 0, paths: [] },
    ])
    // Only finished minutes leave; the current one stays until it is over.
    expect(t.takeFinished().map((m) => m.minute)).toEqual([minute])
    expect(t.takeFinished()).toEqual([])
    expect(t.pending().map((m) => m.minute)).toEqual([minute + 60_000])
  })

  it('ranks the paths that went to the origin by misses and by origin bytes, with why', () => {
    const clock = { now: Date.UTC(2026, 0, 1, 12, 0, 30) }
    const t = createTrafficRecorder({ now: () => clock.now })
    const at = (path: string) => get('shop.example', path)
    for (let i = 0; i < 3; i++) t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 10, at('/cart'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'too-large' }, 'origin'), 5_000_000, at('/video.mp4'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin'), 100, at('/page'))
    t.record(served({ fwd: 'vary-miss', fwdStatus: 200, stored: true }, 'origin'), 100, at('/page'))
    t.record(served({ hit: true, ttl: 5 }, 'memory'), 100, at('/page'))
    clock.now += 60_000
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 10, at('/cart'))
    const minute = Date.UTC(2026, 0, 1, 12, 0)
    // Each minute carries its own paths; the finished one leaves with them.
    expect(t.pending().map((m) => [m.minute, m.paths?.length])).toEqual([
      [minute, 3],
      [minute + 60_000, 1],
    ])
    const [finished] = t.takeFinished()
    expect(t.pending()[0]!.paths).toEqual([{ path: 'shop.example/cart', misses: 1, originBytes: 10, reasons: { private: 1 } }])
    const lists = [finished!.paths!, t.pending()[0]!.paths!]
    expect(rankPaths(lists, 'misses', 10)).toEqual([
      { path: 'shop.example/cart', misses: 4, originBytes: 40, reasons: { private: 4 } },
      { path: 'shop.example/page', misses: 2, originBytes: 200, reasons: { 'not yet cached': 1, 'vary-miss': 1 } },
      { path: 'shop.example/video.mp4', misses: 1, originBytes: 5_000_000, reasons: { 'too-large': 1 } },
    ])
    expect(rankPaths(lists, 'bytes', 1).map((p) => p.path)).toEqual(['shop.example/video.mp4'])
    // Summing never changes the lists it was given.
    expect(finished!.paths!.find((p) => p.path === 'shop.example/cart')).toEqual({ path: 'shop.example/cart', misses: 3, originBytes: 30, reasons: { private: 3 } })
  })

  it('records a bounded top of each minute: the most missed paths and the paths with the most origin bytes', () => {
    const clock = { now: Date.UTC(2026, 0, 1, 12, 0, 30) }
    const t = createTrafficRecorder({ now: () => clock.now })
    const miss = served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin')
    // 200 paths missed twice each with small bodies, and 60 missed once with large ones.
    for (let i = 0; i < 200; i++) for (let n = 0; n < 2; n++) t.record(miss, 10, get('h', `/often/${String(i).padStart(3, '0')}`))
    for (let i = 0; i < 60; i++) t.record(miss, 1_000_000 + i, get('h', `/big/${i}`))
    clock.now += 60_000
    const [m] = t.takeFinished()
    const paths = m!.paths!.map((p) => p.path)
    expect(paths).toHaveLength(2 * TOP_PATHS_RECORDED)
    expect(paths.filter((p) => p.startsWith('h/often/')).sort()).toEqual(Array.from({ length: TOP_PATHS_RECORDED }, (_, i) => `h/often/${String(i).padStart(3, '0')}`))
    expect(paths.filter((p) => p.startsWith('h/big/')).sort()).toEqual(Array.from({ length: TOP_PATHS_RECORDED }, (_, i) => `h/big/${i + 10}`).sort())
    // The minute's own counts are whole, whatever its top lists leave out.
    expect(m!.misses).toBe(460)
  })

  it('records what is left, the current minute included with its top paths and the counts per key, when it stops', () => {
    const ops: unknown[] = []
    const recording = startTrafficRecording({ writer: { submit: (op) => void ops.push(op) }, nodeId: 'n1', intervalMs: 3_600_000, hitFlushMs: 3_600_000 })
    const t = recording.recorder
    t.record(served({ hit: true, ttl: 1 }, 'memory'), 1, get('h', '/page'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'no-store' }, 'origin'), 9, get('h', '/feed'))
    expect(ops).toEqual([])
    recording.stop()
    expect(ops).toMatchObject([
      { type: 'minutes', nodeId: 'n1', minutes: [{ requests: 2, hits: 1, misses: 1, paths: [{ path: 'h/feed', misses: 1, originBytes: 9, reasons: { 'no-store': 1 } }] }] },
      { type: 'hits', nodeId: 'n1', counts: [{ key: 'http://h/page', hits: 1 }] },
    ])
    // Nothing is served after stop; were it counted, it would not reach a closing writer.
    t.record(hit, 1, get('h', '/page'))
    recording.recordHitsNow()
    recording.stop()
    expect(ops).toHaveLength(2)
  })
})

describe('requests per cache key (the hot set)', () => {
  it('counts a read answered from the cache or stored, under the key the entry is stored under', () => {
    const t = createTrafficRecorder()
    t.record(hit, 1, get('h', '/a'))
    t.record(hit, 1, get('h', '/a', { method: 'HEAD' }))
    t.record(served({ hit: true, fwd: 'stale', fwdStatus: 304, ttl: 60 }, 'disk'), 1, get('h', '/a'))
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin'), 1, get('h', '/b', { scheme: 'https' }))
    // The rules file shaped the key: the entry is stored under it, not under the URL.
    t.record(hit, 1, get('h', '/c?utm_source=x', { rules: { key: 'http://h/c' } }))
    // Not counted: passed through (not stored), not a read, refused before the proxy (no scheme), an error.
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, detail: 'private' }, 'origin'), 1, get('h', '/cart'))
    t.record(served({ fwd: 'method', fwdStatus: 201 }, 'origin'), 1, get('h', '/a', { method: 'POST' }))
    t.record(hit, 1, get('h', '/a', { scheme: undefined }))
    t.record(served({ fwd: 'uri-miss' }, 'none'), 1, get('h', '/down'))
    t.record(hit, 1)
    expect(t.takeHits()).toEqual([
      { key: 'http://h/a', hits: 3 },
      { key: 'https://h/b', hits: 1 },
      { key: 'http://h/c', hits: 1 },
    ])
    // The same requests counted once each in the minute too.
    expect(t.pending()[0]).toMatchObject({ requests: 10, hits: 6, misses: 2 })
    // Taken counts leave; a key asked for again counts from one.
    expect(t.takeHits()).toEqual([])
    t.record(hit, 1, get('h', '/a'))
    t.record(hit, 1, get('h', '/a'))
    expect(t.takeHits()).toEqual([{ key: 'http://h/a', hits: 2 }])
  })

  it('hands the counts over early when enough keys are waiting, as ops of a bounded size, so memory stays bounded whatever the traffic', () => {
    const ops: ManifestOp[] = []
    const recording = startTrafficRecording({ writer: { submit: (op) => void ops.push(op) }, nodeId: 'n1', hitFlushMs: 0 })
    const t = recording.recorder
    for (let i = 0; i < MAX_PENDING_HIT_KEYS - 1; i++) t.record(hit, 1, get('h', `/${i % (MAX_KEYS_PER_HITS_OP + 10)}`))
    // Many hits, but fewer keys than a hand-over takes: nothing handed over yet.
    expect(ops).toHaveLength(0)
    for (let i = 0; i < MAX_PENDING_HIT_KEYS + 10; i++) t.record(hit, 1, get('h', `/${i}`))
    const sizes = ops.map((op) => (op.type === 'hits' ? op.counts.length : -1))
    expect(sizes).toEqual(Array(MAX_PENDING_HIT_KEYS / MAX_KEYS_PER_HITS_OP).fill(MAX_KEYS_PER_HITS_OP))
    const handed = ops.flatMap((op) => (op.type === 'hits' ? op.counts : []))
    expect(handed).toContainEqual({ key: 'http://h/0', hits: Math.ceil((MAX_PENDING_HIT_KEYS - 1) / (MAX_KEYS_PER_HITS_OP + 10)) + 1 })
    // Keys handed over and asked for again wait again, up to the same bound.
    for (let i = 0; i < MAX_PENDING_HIT_KEYS - 11; i++) t.record(hit, 1, get('h', `/${i}`))
    expect(ops).toHaveLength(sizes.length)
    t.record(hit, 1, get('h', '/new'))
    expect(ops).toHaveLength(2 * sizes.length)
    recording.stop()
    expect(ops.filter((op) => op.type === 'hits').flatMap((op) => (op.type === 'hits' ? op.counts : [])).filter((c) => c.key === 'http://h/0')).toEqual([
      { key: 'http://h/0', hits: Math.ceil((MAX_PENDING_HIT_KEYS - 1) / (MAX_KEYS_PER_HITS_OP + 10)) + 1 },
      { key: 'http://h/0', hits: 1 },
    ])
  })

  it('without a taker, drops the counts at the bound rather than hold more', () => {
    const t = createTrafficRecorder()
    for (let i = 0; i < MAX_PENDING_HIT_KEYS; i++) t.record(hit, 1, get('h', `/${i}`))
    t.record(hit, 1, get('h', '/after'))
    expect(t.takeHits()).toEqual([{ key: 'http://h/after', hits: 1 }])
  })

  it('hands the counts over every hitFlushMs', async () => {
    const handed = new Promise<ManifestOp>((resolve) => {
      const recording = startTrafficRecording({
        writer: {
          submit(op) {
            if (op.type !== 'hits') return
            recording.stop()
            resolve(op)
          },
        },
        nodeId: 'n1',
        hitFlushMs: 1,
      })
      recording.recorder.record(hit, 1, get('h', '/a'))
    })
    expect(await handed).toMatchObject({ type: 'hits', nodeId: 'n1', counts: [{ key: 'http://h/a', hits: 1 }] })
  })
})

describe('the last Cache-Status per key (the explain page)', () => {
  const pass = served({ fwd: 'bypass', fwdStatus: 200 }, 'origin')
  const ruled = (path: string) => get('h', path, { rules: { key: `http://h${path}` } })

  it('gives the status and time of the latest answer for a key the rules matched, kept in the same record as its count', () => {
    const t = createTrafficRecorder()
    t.record(served({ fwd: 'uri-miss', fwdStatus: 200, stored: true }, 'origin'), 1, ruled('/a'), 1000, 'caje; fwd=uri-miss; fwd-status=200; stored')
    t.record(hit, 1, ruled('/a'), 2000, 'caje; hit; ttl=59')
    expect(t.lastStatus('http://h/a')).toEqual({ cacheStatus: 'caje; hit; ttl=59', at: 2000 })
    // Taking the counts leaves the status; a request without a rules match notes none.
    expect(t.takeHits()).toEqual([{ key: 'http://h/a', hits: 2 }])
    expect(t.lastStatus('http://h/a')).toEqual({ cacheStatus: 'caje; hit; ttl=59', at: 2000 })
    t.record(hit, 1, get('h', '/b'), 3000, 'caje; hit; ttl=1')
    expect(t.lastStatus('http://h/b')).toBeUndefined()
    expect(t.takeHits()).toEqual([{ key: 'http://h/b', hits: 1 }])
  })

  it('keeps at most KEYS_KEPT keys, dropping the one recorded first, whose waiting count is handed over before it goes', () => {
    const taken: Array<{ key: string; hits: number }> = []
    const t: ReturnType<typeof createTrafficRecorder> = createTrafficRecorder({ onHitsFull: () => void taken.push(...t.takeHits()) })
    t.record(hit, 1, ruled('/first'), 1, 'caje; hit; ttl=1')
    // Passed through: a status noted, nothing counted.
    for (let i = 1; i < KEYS_KEPT; i++) t.record(pass, 1, ruled(`/p${i}`), 1, 'caje; fwd=bypass')
    expect(taken).toEqual([])
    t.record(pass, 1, ruled('/last'), 2, 'caje; fwd=bypass')
    expect(taken).toEqual([{ key: 'http://h/first', hits: 1 }])
    expect(t.lastStatus('http://h/first')).toBeUndefined()
    expect(t.lastStatus('http://h/p1')?.cacheStatus).toBe('caje; fwd=bypass')
    expect(t.lastStatus('http://h/last')).toEqual({ cacheStatus: 'caje; fwd=bypass', at: 2 })
  })
})

describe("an answer's key counter (a stored response's record carried from one hit to the next)", () => {
  const ruled = (path: string) => get('h', path, { rules: { key: `http://h${path}` } })
  const hitWith = (keyCounter: KeyCounter) => ({ ...hit, keyCounter })

  it('counts and notes through the record the counter carries, as the map would', () => {
    const t = createTrafficRecorder()
    const counter: KeyCounter = {}
    t.record(hitWith(counter), 1, ruled('/a'), 1000, 'caje; hit; ttl=59')
    expect(counter.record).toBeDefined()
    const carried = counter.record
    t.record(hitWith(counter), 1, ruled('/a'), 2000, 'caje; hit; ttl=58')
    t.record(hit, 1, ruled('/a'), 3000, 'caje; hit; ttl=57')
    // One record for the key, whichever way it was found.
    expect(counter.record).toBe(carried)
    expect(t.takeHits()).toEqual([{ key: 'http://h/a', hits: 3 }])
    expect(t.lastStatus('http://h/a')).toEqual({ cacheStatus: 'caje; hit; ttl=57', at: 3000 })
  })

  it("never counts under another key's record: a counter carried to a request for another key is filled again", () => {
    const t = createTrafficRecorder()
    const counter: KeyCounter = {}
    t.record(hitWith(counter), 1, ruled('/a'), 1, 'caje; hit')
    t.record(hitWith(counter), 1, ruled('/b'), 2, 'caje; hit')
    expect(t.takeHits().sort((x, y) => x.key.localeCompare(y.key))).toEqual([
      { key: 'http://h/a', hits: 1 },
      { key: 'http://h/b', hits: 1 },
    ])
  })

  it('finds the key again once its record left the recorder (KEYS_KEPT), so no count is lost', () => {
    const taken: Array<{ key: string; hits: number }> = []
    const t: ReturnType<typeof createTrafficRecorder> = createTrafficRecorder({ onHitsFull: () => void taken.push(...t.takeHits()) })
    const counter: KeyCounter = {}
    t.record(hitWith(counter), 1, ruled('/first'), 1, 'caje; hit')
    for (let i = 1; i <= KEYS_KEPT; i++) t.record(served({ fwd: 'bypass', fwdStatus: 200 }, 'origin'), 1, ruled(`/p${i}`), 1, 'caje; fwd=bypass')
    expect(t.lastStatus('http://h/first')).toBeUndefined()
    t.record(hitWith(counter), 1, ruled('/first'), 2, 'caje; hit')
    expect(t.lastStatus('http://h/first')).toEqual({ cacheStatus: 'caje; hit', at: 2 })
    expect([...taken, ...t.takeHits()].filter((c) => c.key === 'http://h/first')).toEqual([
      { key: 'http://h/first', hits: 1 },
      { key: 'http://h/first', hits: 1 },
    ])
  })
})
