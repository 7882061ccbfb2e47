/**
 * What tells its listeners of each change: a cache store (every store, replacement and removal is
 * an event), a role source (every change of role or of primary).
 */
export interface Changing {
  subscribe(listener: () => void): () => void
}

/**
 * Resolves once `reached` holds: checked now and again after each change `source` tells of,
 * never on a timer. A change that never comes is left to the test's timeout.
 */
export async function whenReached(source: Changing, reached: () => boolean | Promise<boolean>): Promise<void> {
  let changed = false
  let wake: (() => void) | undefined
  const unsubscribe = source.subscribe(() => {
    changed = true
    wake?.()
  })
  try {
    for (;;) {
      changed = false
      if (await reached()) return
      // An event that came while `reached` ran is not waited for again.
      if (!changed) await new Promise<void>((resolve) => (wake = resolve))
      wake = undefined
    }
  } finally {
    unsubscribe()
  }
}
