// The last Cache-Status this node sent per cache key, for the explain page:
// a Map kept in the order keys were first recorded, bounded (the oldest key goes first).

export interface LastStatus {
  /** `at`: when it was sent (epoch ms), when the caller has read the clock already. */
  record(key: string, cacheStatus: string, at?: number): void
  get(key: string): { cacheStatus: string; at: number } | undefined
}

export function createLastStatus(limit = 10_000, now: () => number = Date.now): LastStatus {
  const seen = new Map<string, { cacheStatus: string; at: number }>()
  return {
    record(key, cacheStatus, at = now()) {
      const known = seen.get(key)
      // A key answered again keeps its record and its place: a hit's Cache-Status changes once a
      // second, and moving the key to the end of the Map with a new record each time made, under
      // a mix of thousands of keys, a record per key per second that lived long enough to be promoted.
      if (known !== undefined) {
        known.cacheStatus = cacheStatus
        known.at = at
        return
      }
      seen.set(key, { cacheStatus, at })
      if (seen.size > limit) seen.delete(seen.keys().next().value!)
    },
    get: (key) => seen.get(key),
  }
}
