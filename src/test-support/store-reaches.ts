import type { CacheStore } from '../cache/types.ts'

/**
 * Resolves once `reached` holds: checked now and again after each event `store` emits (every
 * store, replacement and removal is one), never on a timer. A change that never comes is left to
 * the test's timeout.
 */
export async function storeReaches(store: Pick<CacheStore, 'subscribe'>, reached: () => boolean | Promise<boolean>): Promise<void> {
  let changed = false
  let wake: (() => void) | undefined
  const unsubscribe = store.subscribe(() => {
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
