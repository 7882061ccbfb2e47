// This node's traffic, counted once per answered request: per minute, the
// requests, answers from cache and from the origin, the bytes of each, and the
// paths that went to the origin most (with why); per cache key, how often it
// was asked for (the hot set, src/manifest/hot-set.ts). Kept in memory and
// recorded in the manifest in batches, never on the request path:
//
//  - finished minutes once a minute, each with its bounded top paths, so any
//    node can draw every node's charts and top-misses tables ('minutes' ops);
//  - the counts per key every CAJE_HIT_FLUSH_SECONDS, or sooner when
//    MAX_PENDING_HIT_KEYS keys are waiting, as 'hits' ops of up to
//    MAX_KEYS_PER_HITS_OP keys, added to every node's counts in url_hits:
//    what populate fetches first and what /_caje/ready waits for.

import { countsTowardHotSet, MAX_KEYS_PER_HITS_OP, MAX_PENDING_HIT_KEYS, type HitsOp } from './manifest/hot-set.ts'
import type { ManifestWriter } from './manifest/writer.ts'
import type { MinuteStats, PathMisses } from './manifest/repositories.ts'
import { primaryKey } from './proxy/cache-key.ts'
import { statusLabel } from './proxy/cache-status.ts'
import type { ProxyResult } from './proxy/proxy.ts'

export const MINUTE_MS = 60_000

/** Paths remembered per minute for the top-misses tables; more are counted under OTHER_PATHS. */
const PATHS_PER_MINUTE = 500
export const OTHER_PATHS = '(other paths)'
/** Minutes of per-path misses kept in memory when nothing takes them (no manifest writer). */
const MISS_MINUTES_KEPT = 60
/**
 * A minute's paths recorded in the manifest: its top ones by misses and its
 * top ones by origin bytes (a path can be both). Summed over a window, a path
 * that is never in a minute's top is left out: the tables show the heavy ones.
 */
export const TOP_PATHS_RECORDED = 50

export type { PathMisses }

/**
 * What the recorder reads of an answered request (http-adapter's ServedRequest): host and
 * path name it in the top-misses tables; a scheme says the proxy handled it, and its key is
 * the one the rules made (the entry is stored under it), else the plain URL's.
 */
export interface CountedRequest {
  method: string
  host: string
  path: string
  scheme?: string
  rules?: { key: string }
}

export interface TrafficRecorder {
  /**
   * Count one answered request (called when its body has been sent, `at` epoch ms, else now): its
   * minute and, when it counts toward the hot set, its key; `sent`, the Cache-Status text it was
   * answered with, is noted as its key's last status when the rules matched it (lastStatus).
   */
  record(result: Pick<ProxyResult, 'cacheStatus' | 'tier' | 'keyCounter'>, bytes: number, request?: CountedRequest, at?: number, sent?: string): void
  /** The last Cache-Status sent for a cache key and when (the explain page), for the most recent KEYS_KEPT keys. */
  lastStatus(key: string): { cacheStatus: string; at: number } | undefined
  /** Finished minutes not taken yet, oldest first, each with its top paths; they leave the recorder. */
  takeFinished(): MinuteStats[]
  /** Everything still held here, the current minute included (not yet in the manifest), each with its top paths. */
  pending(): MinuteStats[]
  /** Requests per cache key counted since the last take; the counts leave the recorder. */
  takeHits(): HitsOp['counts']
}

export interface TrafficRecorderOptions {
  now?: () => number
  /**
   * Called (synchronously, from record) when MAX_PENDING_HIT_KEYS keys are waiting: take them
   * now. Without it they are dropped there, so memory stays bounded whatever the traffic.
   */
  onHitsFull?: () => void
}

/**
 * What the recorder keeps per cache key: requests since the last take (a request for a key
 * already counted only adds one), and the last Cache-Status sent for it. One record, found once
 * per answered request: under a mix of thousands of URLs each lookup in a map that large is a
 * few cache misses, a measurable part of a memory hit.
 */
interface KeyRecord {
  key: string
  hits: number
  cacheStatus: string | undefined
  at: number
  /** Dropped from the recorder (KEYS_KEPT): a KeyCounter that still names it has to find its key's record again. */
  gone: boolean
}

/**
 * Where an answer can carry its key's record from one request to the next (ProxyResult.keyCounter):
 * the proxy keeps one per stored response and hands it out with each answer from it, so a hit
 * finds its count without a lookup in the recorder's map of thousands of keys (a few cache
 * misses, about 0.7 µs of a memory hit). What it holds is the recorder's own business.
 */
export interface KeyCounter {
  record?: unknown
}

/**
 * Keys kept at most: the explain page's last status for this many keys, the oldest recorded
 * first to go. Counts waiting in a record that goes are handed over first.
 */
export const KEYS_KEPT = Math.max(10_000, MAX_PENDING_HIT_KEYS)

export function createTrafficRecorder(options: TrafficRecorderOptions = {}): TrafficRecorder {
  const now = options.now ?? Date.now
  // Per key, one lookup per answered request, in the order keys were first recorded (a key
  // answered again keeps its record and its place: no new record per request to be promoted).
  const keys = new Map<string, KeyRecord>()
  /** Keys with counts waiting: at most MAX_PENDING_HIT_KEYS between takes. */
  let pendingKeys = 0
  const takeHits = (): HitsOp['counts'] => {
    const counts: HitsOp['counts'] = []
    if (pendingKeys === 0) return counts
    for (const [key, k] of keys) {
      if (k.hits === 0) continue
      counts.push({ key, hits: k.hits })
      k.hits = 0
    }
    pendingKeys = 0
    return counts
  }
  const hitsFull = options.onHitsFull ?? (() => void takeHits())
  const recordOf = (key: string): KeyRecord => {
    let k = keys.get(key)
    if (k === undefined) {
      if (keys.size >= KEYS_KEPT) {
        const [oldest, record] = keys.entries().next().value!
        // Its counts go with the others before it leaves.
        if (record.hits !== 0) hitsFull()
        keys.delete(oldest)
        record.gone = true
      }
      k = { key, hits: 0, cacheStatus: undefined, at: 0, gone: false }
      keys.set(key, k)
    }
    return k
  }
  const minutes = new Map<number, MinuteStats>()
  const missesByMinute = new Map<number, Map<string, PathMisses>>()
  const noteMiss = (minute: number, path: string, reason: string, bytes: number) => {
    let paths = missesByMinute.get(minute)
    if (!paths) {
      paths = new Map()
      missesByMinute.set(minute, paths)
      for (const old of missesByMinute.keys()) if (old < minute - MISS_MINUTES_KEPT * MINUTE_MS) missesByMinute.delete(old)
    }
    const key = paths.has(path) || paths.size < PATHS_PER_MINUTE ? path : OTHER_PATHS
    let p = paths.get(key)
    if (!p) {
      p = { path: key, misses: 0, originBytes: 0, reasons: {} }
      paths.set(key, p)
    }
    p.misses++
    p.originBytes += bytes
    p.reasons[reason] = (p.reasons[reason] ?? 0) + 1
  }
  const withPaths = (m: MinuteStats): MinuteStats => ({ ...m, paths: topOfMinute(missesByMinute.get(m.minute)?.values() ?? []) })
  /** The minute last counted in: nearly every request counts in the same one as the one before. */
  let last: MinuteStats | undefined
  const bucket = (t: number): MinuteStats => {
    if (last !== undefined && t >= last.minute && t < last.minute + MINUTE_MS) return last
    const minute = Math.floor(t / MINUTE_MS) * MINUTE_MS
    let m = minutes.get(minute)
    if (!m) {
      m = { minute, requests: 0, hits: 0, misses: 0, bytesCache: 0, bytesOrigin: 0 }
      minutes.set(minute, m)
    }
    return (last = m)
  }
  return {
    record(result, bytes, request, at = now(), sent) {
      const m = bucket(at)
      m.requests++
      const label = statusLabel(result.cacheStatus)
      if (label === 'hit' || label === 'stale' || label === 'revalidated') m.hits++
      else if (label === 'miss' || label === 'pass') {
        m.misses++
        if (request) {
          const s = result.cacheStatus
          // Why: what kept it out of the cache (no-store, private, set-cookie, too-large...), else the kind of miss.
          const reason = s.detail ?? (s.fwd === 'vary-miss' ? 'vary-miss' : s.fwd === 'stale' ? 'stale' : s.stored ? 'not yet cached' : (s.fwd ?? 'miss'))
          noteMiss(m.minute, `${request.host}${request.path.slice(0, 300)}`, reason, result.tier === 'origin' ? bytes : 0)
        }
      }
      if (result.tier === 'memory' || result.tier === 'disk') m.bytesCache += bytes
      else if (result.tier === 'origin') m.bytesOrigin += bytes
      const counted = request?.scheme !== undefined && countsTowardHotSet(label, request.method)
      const noted = sent !== undefined && request?.rules !== undefined
      if (!counted && !noted) return
      const key = request!.rules?.key ?? primaryKey(request!.scheme!, request!.host, request!.path)
      // The record the answer's counter carries when it is this key's and still kept, else the map's.
      const counter = result.keyCounter
      let k = counter?.record as KeyRecord | undefined
      if (k === undefined || k.gone || k.key !== key) {
        k = recordOf(key)
        if (counter !== undefined) counter.record = k
      }
      if (noted) {
        k.cacheStatus = sent
        k.at = at
      }
      if (counted && k.hits++ === 0 && ++pendingKeys >= MAX_PENDING_HIT_KEYS) hitsFull()
    },

    lastStatus(key) {
      const k = keys.get(key)
      return k?.cacheStatus === undefined ? undefined : { cacheStatus: k.cacheStatus, at: k.at }
    },
    takeFinished() {
      const current = Math.floor(now() / MINUTE_MS) * MINUTE_MS
      const done = [...minutes.values()].filter((m) => m.minute < current).sort((a, b) => a.minute - b.minute)
      const taken = done.map(withPaths)
      for (const m of done) {
        if (m === last) last = undefined
        minutes.delete(m.minute)
        missesByMinute.delete(m.minute)
      }
      return taken
    },

    pending() {
      return [...minutes.values()].sort((a, b) => a.minute - b.minute).map(withPaths)
    },

    takeHits,
  }
}

const byMisses = (a: PathMisses, b: PathMisses) => b.misses - a.misses || b.originBytes - a.originBytes || a.path.localeCompare(b.path)
const byBytes = (a: PathMisses, b: PathMisses) => b.originBytes - a.originBytes || b.misses - a.misses || a.path.localeCompare(b.path)

/** Paths summed (a path listed in several lists counts once per list), most misses (or origin bytes) first. */
export function rankPaths(lists: Iterable<Iterable<PathMisses>>, by: 'misses' | 'bytes', limit: number): PathMisses[] {
  const total = new Map<string, PathMisses>()
  for (const list of lists) {
    for (const p of list) {
      const t = total.get(p.path) ?? { path: p.path, misses: 0, originBytes: 0, reasons: {} }
      t.misses += p.misses
      t.originBytes += p.originBytes
      for (const [r, n] of Object.entries(p.reasons)) t.reasons[r] = (t.reasons[r] ?? 0) + n
      total.set(p.path, t)
    }
  }
  return [...total.values()].sort(by === 'misses' ? byMisses : byBytes).slice(0, limit)
}

/** A minute's top paths, by misses and by origin bytes, each once (copies: the recorder keeps counting). */
function topOfMinute(paths: Iterable<PathMisses>): PathMisses[] {
  const all = [...paths]
  const kept = new Set([...all.sort(byMisses).slice(0, TOP_PATHS_RECORDED), ...all.sort(byBytes).slice(0, TOP_PATHS_RECORDED)])
  return [...kept].map((p) => ({ ...p, reasons: { ...p.reasons } }))
}

export interface TrafficRecording {
  /** What counts this node's traffic. */
  recorder: TrafficRecorder
  /** Record every minute held now, the current one as it stands; when it finishes, its full count overwrites it. */
  recordNow(): void
  /** Hand the counts per key to the writer now, as ops of at most MAX_KEYS_PER_HITS_OP keys. */
  recordHitsNow(): void
  /** Stop, recording what is left. */
  stop(): void
}

export interface TrafficRecordingOptions {
  writer: Pick<ManifestWriter, 'submit'>
  nodeId: string
  /** How often finished minutes go to the manifest. */
  intervalMs?: number
  /** How often the counts per key go to the manifest; 0 sends them only at stop or when MAX_PENDING_HIT_KEYS keys are waiting. */
  hitFlushMs: number
  now?: () => number
}

/** Count this node's traffic and record it in the manifest: finished minutes every interval, counts per key every hitFlushMs. */
export function startTrafficRecording(options: TrafficRecordingOptions): TrafficRecording {
  const now = options.now ?? Date.now
  let stopped = false
  const recordHits = () => {
    const counts = recorder.takeHits()
    if (stopped) return
    const at = now()
    for (let i = 0; i < counts.length; i += MAX_KEYS_PER_HITS_OP) options.writer.submit({ type: 'hits', nodeId: options.nodeId, at, counts: counts.slice(i, i + MAX_KEYS_PER_HITS_OP) })
  }
  const recorder = createTrafficRecorder({ now, onHitsFull: recordHits })
  const submit = (minutes: MinuteStats[]) => {
    if (minutes.length > 0) options.writer.submit({ type: 'minutes', nodeId: options.nodeId, minutes })
  }
  const timer = setInterval(() => submit(recorder.takeFinished()), options.intervalMs ?? MINUTE_MS)
  timer.unref()
  const hitTimer = options.hitFlushMs > 0 ? setInterval(recordHits, options.hitFlushMs) : undefined
  hitTimer?.unref()
  const recordNow = () => submit([...recorder.takeFinished(), ...recorder.pending()])
  return {
    recorder,
    recordNow,
    recordHitsNow: recordHits,
    stop() {
      if (stopped) return
      clearInterval(timer)
      if (hitTimer) clearInterval(hitTimer)
      // At shutdown the current minute is recorded as it stands, with the last counts per key.
      recordNow()
      recordHits()
      // Anything counted later (nothing is served after stop) is dropped: the writer is closing.
      stopped = true
    },
  }
}
