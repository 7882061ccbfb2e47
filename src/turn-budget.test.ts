import { describe, expect, it } from 'vitest'
import { TURN_SLICE_MS, createTurnScheduler } from './turn-budget.ts'

describe('turn budget', () => {
  /** Passes of `units` units each, every unit 1 ms on the scheduler's clock; which turn each unit ran in. */
  async function run(passes: number, units: number): Promise<{ perTurn: Map<number, string[]>; turns: number }> {
    let clock = 0
    const s = createTurnScheduler(() => clock)
    const perTurn = new Map<number, string[]>()
    const pass = async (name: string) => {
      const budget = s.budget()
      for (let i = 0; i < units; i++) {
        while (budget.spent()) await budget.next()
        clock += 1
        const turn = s.turns()
        perTurn.set(turn, [...(perTurn.get(turn) ?? []), name])
      }
    }
    await Promise.all(Array.from({ length: passes }, (_, i) => pass(String.fromCharCode(97 + i))))
    return { perTurn, turns: s.turns() }
  }

  it('gives all passes one slice per turn between them, not one each', async () => {
    const { perTurn } = await run(3, 12)
    // Before the first yield each pass starts a slice of its own; after it, a turn holds at most one slice of work.
    for (const [turn, units] of perTurn) if (turn > 0) expect(units.length, `turn ${turn}: ${units.join('')}`).toBeLessThanOrEqual(TURN_SLICE_MS)
    expect([...perTurn.values()].flat()).toHaveLength(36)
  })

  it('lets the pass that found the slice spent go first in the next turn, so every pass moves on', async () => {
    const { perTurn } = await run(3, 12)
    // Each turn's slice goes to one pass, and they take turns: a, b, c, a, b, c...
    const workers = [...perTurn].filter(([turn]) => turn > 0).map(([, units]) => units[0])
    expect(workers.slice(0, 6)).toEqual(['a', 'b', 'c', 'a', 'b', 'c'])
  })
})
