// Event-loop stalls: stretches in which the loop ran nothing else, so no
// request, health check or new connection was served either. Everything
// synchronous runs on the loop (better-sqlite3's statements and its busy
// handler, JSON of a large batch, a regular expression gone wrong), and a
// stall is what such a call costs every user of the node at that moment.
//
// A timer due every STALL_CHECK_MS notes how late it fires: lateness of
// STALL_THRESHOLD_MS or more is one stall, of that length. Operators read the
// count and lengths in /_caje/metrics (caje_event_loop_stall_seconds) and
// /_caje/health (eventLoop); prom-client's nodejs_eventloop_lag_* gauges show
// percentiles of the recent past, which a single 5 s stall barely moves.

/** How often the watch timer is due, in ms. */
export const STALL_CHECK_MS = 50
/** Lateness of the watch timer counted as a stall, in ms. */
export const STALL_THRESHOLD_MS = 100

export interface EventLoopStallStats {
  /** Stalls of STALL_THRESHOLD_MS or more since the watch started. */
  stalls: number
  /** Their lengths summed, in ms. */
  stalledMs: number
  /** The longest one, in ms (0 before any). */
  longestStallMs: number
}

export interface StallCounter {
  /** The watch timer fired now: a stall if it is STALL_THRESHOLD_MS or more late. */
  tick(): void
  stats(): EventLoopStallStats
}

export interface StallCounterOptions {
  /** When the timer is due after each tick, in ms. Default STALL_CHECK_MS. */
  intervalMs?: number
  /** Default STALL_THRESHOLD_MS. */
  thresholdMs?: number
  /** Called with the length of each stall, in ms. */
  onStall?: (ms: number) => void
  now?: () => number
}

/** The counting, on any clock (the watch below drives it with a timer). */
export function createStallCounter(options: StallCounterOptions = {}): StallCounter {
  const intervalMs = options.intervalMs ?? STALL_CHECK_MS
  const thresholdMs = options.thresholdMs ?? STALL_THRESHOLD_MS
  const now = options.now ?? (() => performance.now())
  let last = now()
  const stats: EventLoopStallStats = { stalls: 0, stalledMs: 0, longestStallMs: 0 }
  return {
    tick() {
      const t = now()
      const late = t - last - intervalMs
      last = t
      if (late < thresholdMs) return
      const ms = Math.round(late)
      stats.stalls++
      stats.stalledMs += ms
      if (ms > stats.longestStallMs) stats.longestStallMs = ms
      options.onStall?.(ms)
    },
    stats: () => ({ ...stats }),
  }
}

export interface EventLoopWatch {
  stats(): EventLoopStallStats
  stop(): void
}

/** Count this thread's event-loop stalls until stop(); the timer never keeps the process alive. */
export function watchEventLoopStalls(options: Omit<StallCounterOptions, 'now'> = {}): EventLoopWatch {
  const counter = createStallCounter(options)
  const timer = setInterval(() => counter.tick(), options.intervalMs ?? STALL_CHECK_MS)
  timer.unref()
  return { stats: () => counter.stats(), stop: () => clearInterval(timer) }
}
