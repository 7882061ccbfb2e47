// This node's traffic per minute: requests, answers from cache and from the
// origin, and the bytes of each. Kept in memory and recorded in the manifest
// once a minute (one batch of finished minutes), so any node can draw every
// node's charts.

import type { ManifestWriter } from './manifest/writer.ts'
import type { MinuteStats } from './manifest/repositories.ts'
import { statusLabel } from './proxy/cache-status.ts'
import type { ProxyResult } from './proxy/proxy.ts'

export const MINUTE_MS = 60_000

export interface TrafficRecorder {
  /** Count one answered request (called when its body has been sent). */
  record(result: Pick<ProxyResult, 'cacheStatus' | 'tier'>, bytes: number): void
  /** Finished minutes not taken yet, oldest first; they leave the recorder. */
  takeFinished(): MinuteStats[]
  /** Everything still held here, the current minute included (not yet in the manifest). */
  pending(): MinuteStats[]
}

export function createTrafficRecorder(options: { now?: () => number } = {}): TrafficRecorder {
  const now = options.now ?? Date.now
  const minutes = new Map<number, MinuteStats>()
  const bucket = (minute: number): MinuteStats => {
    let m = minutes.get(minute)
    if (!m) {
      m = { minute, requests: 0, hits: 0, misses: 0, bytesCache: 0, bytesOrigin: 0 }
      minutes.set(minute, m)
    }
    return m
  }
  return {
    record(result, bytes) {
      const m = bucket(Math.floor(now() / MINUTE_MS) * MINUTE_MS)
      m.requests++
      const label = statusLabel(result.cacheStatus)
      if (label === 'hit' || label === 'stale' || label === 'revalidated') m.hits++
      else if (label === 'miss' || label === 'pass') m.misses++
      if (result.tier === 'memory' || result.tier === 'disk') m.bytesCache += bytes
      else if (result.tier === 'origin') m.bytesOrigin += bytes
    },
    takeFinished() {
      const current = Math.floor(now() / MINUTE_MS) * MINUTE_MS
      const done = [...minutes.values()].filter((m) => m.minute < current).sort((a, b) => a.minute - b.minute)
      for (const m of done) minutes.delete(m.minute)
      return done.map((m) => ({ ...m }))
    },
    pending() {
      return [...minutes.values()].sort((a, b) => a.minute - b.minute).map((m) => ({ ...m }))
    },
  }
}

/** Record finished minutes in the manifest every interval; the returned function stops and records what is left. */
export function startTrafficRecording(options: { recorder: TrafficRecorder; writer: Pick<ManifestWriter, 'submit'>; nodeId: string; intervalMs?: number }): () => void {
  const submit = (minutes: MinuteStats[]) => {
    if (minutes.length > 0) options.writer.submit({ type: 'minutes', nodeId: options.nodeId, minutes })
  }
  const timer = setInterval(() => submit(options.recorder.takeFinished()), options.intervalMs ?? MINUTE_MS)
  timer.unref()
  return () => {
    clearInterval(timer)
    // At shutdown the current minute is recorded as it stands.
    submit([...options.recorder.takeFinished(), ...options.recorder.pending()])
  }
}
