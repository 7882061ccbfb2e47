// The last Cache-Status this node sent per cache key, for the explain page:
// a Map kept in insertion order, bounded (the oldest key goes first).

export interface LastStatus {
  record(key: string, cacheStatus: string): void
  get(key: string): { cacheStatus: string; at: number } | undefined
}

export function createLastStatus(limit = 10_000, now: () => number = Date.now): LastStatus {
  const seen = new Map<string, { cacheStatus: string; at: number }>()
  return {
    record(key, cacheStatus) {
      const known = seen.get(key)
      // The same answer again (a hit's Cache-Status changes once a second): only its time moves.
      if (known !== undefined && known.cacheStatus === cacheStatus) {
        known.at = now()
        return
      }
      seen.delete(key)
      seen.set(key, { cacheStatus, at: now() })
      if (seen.size > limit) seen.delete(seen.keys().next().value!)
    },
    get: (key) => seen.get(key),
  }
}
