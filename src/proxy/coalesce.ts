// Request coalescing: concurrent misses on one key make one origin request.
// The first caller leads; the others wait for the leader's outcome and then
// look the key up again. The leader only reports *whether* it stored a
// shareable response: waiters never receive the leader's response itself, so
// a private or Set-Cookie response can never reach another user (each waiter
// then goes to the origin on its own).

export type LeaderOutcome = 'stored' | 'not-shared'

interface Inflight {
  outcome: Promise<LeaderOutcome>
  /** The leader has the origin's whole response; only the cache write is left. */
  received: boolean
  /** Requests that joined as waiters and wait for this leader's outcome. */
  waiters: number
}

export class Coalescer {
  private readonly inflight = new Map<string, Inflight>()
  private waiting = 0

  /** Number of keys with a leader in flight (for tests and metrics). */
  get size(): number {
    return this.inflight.size
  }

  /** Requests waiting for a leader's outcome, over all keys (those that joined as waiters, until it settles). */
  get waiters(): number {
    return this.waiting
  }

  /** The outcome of the leader in flight for `key`, if any (for requests that may wait but never lead). */
  pending(key: string): Promise<LeaderOutcome> | undefined {
    return this.inflight.get(key)?.outcome
  }

  /** Whether a leader for `key` is still waiting for the origin (not only for its cache write). */
  awaitingOrigin(key: string): boolean {
    const f = this.inflight.get(key)
    return f !== undefined && !f.received
  }

  /**
   * If a leader is in flight for `key`, returns its outcome promise (you are a
   * waiter; `collapsed` says whether you joined while the leader still waited
   * for the origin, rather than only for its cache write). Otherwise makes you
   * the leader: call `received` once the origin's response is complete, and
   * `settle` exactly once, whatever happens.
   */
  join(
    key: string,
  ): { role: 'waiter'; outcome: Promise<LeaderOutcome>; collapsed: boolean } | { role: 'leader'; received: () => void; settle: (o: LeaderOutcome) => void } {
    const existing = this.inflight.get(key)
    if (existing) {
      existing.waiters++
      this.waiting++
      return { role: 'waiter', outcome: existing.outcome, collapsed: !existing.received }
    }
    let resolve!: (o: LeaderOutcome) => void
    const outcome = new Promise<LeaderOutcome>((r) => (resolve = r))
    const entry: Inflight = { outcome, received: false, waiters: 0 }
    this.inflight.set(key, entry)
    let settled = false
    return {
      role: 'leader',
      received: () => {
        entry.received = true
      },
      settle: (o) => {
        if (settled) return
        settled = true
        this.inflight.delete(key)
        this.waiting -= entry.waiters
        resolve(o)
      },
    }
  }
}

/** A request's part in filling a key from the origin (see FillGate). */
export type FillTurn =
  /** Fetch and store; `received` once the origin's whole response is in, `settle` with whether it was stored. */
  | { role: 'leader' | 'alone'; received: () => void; settle: (stored: boolean) => void }
  /**
   * Wait for the leader, then look the key up again ('stored') or ask the origin yourself
   * ('not-shared'); `collapsed`: joined while the leader still waited for the origin.
   */
  | { role: 'waiter'; outcome: Promise<LeaderOutcome>; collapsed: boolean }

/**
 * Coalescing for cache fills, with "hit-for-miss": a key whose last fill was not shareable
 * skips coalescing for a while (`alone`), as otherwise every wave of concurrent requests to an
 * uncacheable URL would queue behind one. A stored fill clears the mark.
 */
export class FillGate {
  private readonly coalescer = new Coalescer()
  private readonly passMarks: ExpiringSet

  /** `markTtlMs`, `markLimit`: how long a key that was not shareable bypasses coalescing, and how many such keys are remembered. */
  constructor(markTtlMs: number, markLimit: number, now: () => number = Date.now) {
    this.passMarks = new ExpiringSet(markTtlMs, markLimit, now)
  }

  /** The outcome of the fill in flight for `key`, if any (for requests that may wait but never lead). */
  pending(key: string): Promise<LeaderOutcome> | undefined {
    return this.coalescer.pending(key)
  }

  /** Whether a leader for `key` is still waiting for the origin (not only for its cache write). */
  awaitingOrigin(key: string): boolean {
    return this.coalescer.awaitingOrigin(key)
  }

  /** Fills in flight (keys with a leader), and the requests waiting for their outcome. */
  stats(): { inFlight: number; waiters: number } {
    return { inFlight: this.coalescer.size, waiters: this.coalescer.waiters }
  }

  /** This request's turn for `key`; a leader or lone filler must call `settle` exactly once, whatever happens. */
  join(key: string): FillTurn {
    const marks = this.passMarks
    if (marks.has(key)) {
      return {
        role: 'alone',
        received: () => {},
        settle: (stored) => {
          if (stored) marks.delete(key)
        },
      }
    }
    const role = this.coalescer.join(key)
    if (role.role === 'waiter') return role
    return {
      role: 'leader',
      received: role.received,
      settle: (stored) => {
        if (stored) marks.delete(key)
        else marks.add(key)
        role.settle(stored ? 'stored' : 'not-shared')
      },
    }
  }
}

/** Runs a background task at most once per key at a time (stale-while-revalidate refreshes). */
export class OncePerKey {
  private readonly running = new Set<string>()

  get size(): number {
    return this.running.size
  }

  /** Starts `task` unless one is already running for `key`; returns whether it started. */
  run(key: string, task: () => Promise<void>): boolean {
    if (this.running.has(key)) return false
    this.running.add(key)
    void task().finally(() => this.running.delete(key))
    return true
  }

  /** Resolves when no task is running (for graceful shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 10))
  }
}

/** A bounded set whose members expire: the oldest are dropped first when it is full. */
export class ExpiringSet {
  private readonly until = new Map<string, number>()

  constructor(
    private readonly ttlMs: number,
    private readonly limit: number,
    private readonly now: () => number = Date.now,
  ) {}

  add(key: string): void {
    this.until.delete(key)
    this.until.set(key, this.now() + this.ttlMs)
    if (this.until.size > this.limit) this.until.delete(this.until.keys().next().value!)
  }

  has(key: string): boolean {
    const t = this.until.get(key)
    if (t === undefined) return false
    if (t > this.now()) return true
    this.until.delete(key)
    return false
  }

  delete(key: string): void {
    this.until.delete(key)
  }
}
