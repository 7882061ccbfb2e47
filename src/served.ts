// What an answered request leaves behind on this node, noted once its answer is
// sent: the Cache-Status the explain page shows for its key, its count in this
// node's traffic (minutes, top misses, requests per key for the hot set) and
// the bytes served per tier on /_caje/metrics.

import type { Metrics } from './metrics.ts'
import type { OnServed } from './proxy/http-adapter.ts'
import type { TrafficRecorder } from './traffic.ts'

export interface ServedAccountingDeps {
  traffic: Pick<TrafficRecorder, 'record'>
  metrics: Pick<Metrics, 'bytesServed'>
}

/** The proxy's onServed: called for every answered request, on the request path, so it only counts. */
export function accountServed(deps: ServedAccountingDeps): OnServed {
  const { traffic, metrics } = deps
  return function onServed(result, bytes, request, at) {
    // The text the answer carries when it has one: no look into its header object, whose shape
    // varies by answer (a plain hit's shared fields, a copy, an origin's).
    const sent = result.cacheStatusText ?? result.headers['cache-status']
    // Its count and its key's last status (the explain page) in one record per key (traffic.ts).
    traffic.record(result, bytes, request, at, typeof sent === 'string' ? sent : undefined)
    if (result.tier !== 'none') metrics.bytesServed(result.tier, bytes)
  }
}
