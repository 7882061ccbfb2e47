// One slice of background work per turn of the event loop, shared by every
// bulk pass in the process: a purge's pass over the disk index and its file
// removals, a soft purge's marks, populate storing copies, a peer reading
// bodies for a populate.
//
// Each pass works a few milliseconds, then yields (setImmediate: the poll
// phase, which accepts connections and reads requests, runs in between).
// That bounds one pass, not one turn: sixteen passes resuming in one check
// phase ran sixteen slices back to back, and a health check that connected
// meanwhile waited for that turn and the next (libuv accepts a connection in
// one poll phase and reads its request in the next). Here the passes share one
// slice per turn: a pass that resumes once the slice is spent waits for the
// next turn, ahead of the passes that worked in this one.

/** The slice of work per turn, shared by all passes, in ms. */
export const TURN_SLICE_MS = 4

/**
 * Use as `while (budget.spent()) await budget.next()` before each unit of
 * work: a pass resumed after the others used the turn's slice waits again.
 */
export interface TurnBudget {
  /** Whether this turn's slice is used up. */
  spent(): boolean
  /** Resolves in a later turn, after its poll phase; check spent() again. */
  next(): Promise<void>
}

export interface TurnScheduler {
  /** A budget for one pass; its first slice starts now. */
  budget(): TurnBudget
  /** Turns in which passes were resumed so far (for tests). */
  turns(): number
}

/** A scheduler on its own clock (tests); the process shares `turnBudget` below. */
export function createTurnScheduler(now: () => number = () => performance.now()): TurnScheduler {
  let sliceStart = -Infinity
  let turns = 0
  /** Passes that waited for a turn: those that found the slice spent first, then the rest in order. */
  let skipped: (() => void)[] = []
  let waiting: (() => void)[] = []
  let scheduled = false

  const runTurn = () => {
    scheduled = false
    turns++
    sliceStart = now()
    const ready = skipped.length > 0 ? skipped.concat(waiting) : waiting
    skipped = []
    waiting = []
    for (const resume of ready) resume()
  }

  const wait = (first: boolean) =>
    new Promise<void>((resolve) => {
      ;(first ? skipped : waiting).push(resolve)
      if (!scheduled) {
        scheduled = true
        setImmediate(runTurn)
      }
    })

  return {
    budget() {
      let started = now()
      /** Whether the pass worked since it last resumed (a new pass starts a slice of its own). */
      let worked = true
      return {
        spent() {
          const spent = now() - started >= TURN_SLICE_MS
          if (!spent) worked = true
          return spent
        },
        async next() {
          // Resumed in order, a pass may find the slice used by the ones before it: then it goes first next turn.
          const first = !worked
          worked = false
          await wait(first)
          started = sliceStart
        },
      }
    },
    turns: () => turns,
  }
}

const shared = createTurnScheduler()

/** A budget for one bulk pass, sharing each turn's slice with every other pass in the process. */
export function turnBudget(): TurnBudget {
  return shared.budget()
}
