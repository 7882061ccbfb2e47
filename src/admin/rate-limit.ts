// Fixed-window attempt counter per client, in memory (per node). Good enough to
// stop password guessing and challenge flooding; not a distributed limiter.

export interface RateLimitOptions {
  /** Attempts allowed per window. */
  max: number
  windowMs: number
  now: () => number
}

export interface RateLimiter {
  /** Count one attempt; returns 0 when allowed, else the seconds to wait. */
  hit(key: string): number
  reset(key: string): void
}

export function createRateLimiter(opts: RateLimitOptions): RateLimiter {
  if (opts.max < 1 || opts.windowMs < 1) throw new Error('rate limit needs max >= 1 and windowMs >= 1')
  const windows = new Map<string, { count: number; resetAt: number }>()
  let lastSweep = opts.now()

  function sweep(now: number) {
    if (now - lastSweep < opts.windowMs) return
    lastSweep = now
    for (const [key, w] of windows) if (w.resetAt <= now) windows.delete(key)
  }

  return {
    hit(key) {
      const now = opts.now()
      sweep(now)
      let w = windows.get(key)
      if (!w || w.resetAt <= now) {
        w = { count: 0, resetAt: now + opts.windowMs }
        windows.set(key, w)
      }
      w.count++
      if (w.count <= opts.max) return 0
      return Math.max(1, Math.ceil((w.resetAt - now) / 1000))
    },
    reset(key) {
      windows.delete(key)
    },
  }
}
