import { afterEach, describe, expect, it } from 'vitest'
import { createStallCounter, watchEventLoopStalls, type EventLoopWatch } from './event-loop-stalls.ts'

describe('createStallCounter', () => {
  it('counts a tick that comes the threshold or more past its due time as one stall of that length', () => {
    let clock = 1000
    const seen: number[] = []
    const counter = createStallCounter({ intervalMs: 50, thresholdMs: 100, now: () => clock, onStall: (ms) => seen.push(ms) })
    clock += 50
    counter.tick()
    clock += 149
    counter.tick()
    expect(counter.stats()).toEqual({ stalls: 0, stalledMs: 0, longestStallMs: 0 })
    clock += 150
    counter.tick()
    clock += 5050
    counter.tick()
    clock += 60
    counter.tick()
    expect(seen).toEqual([100, 5000])
    expect(counter.stats()).toEqual({ stalls: 2, stalledMs: 5100, longestStallMs: 5000 })
  })
})

describe('watchEventLoopStalls', () => {
  let watch: EventLoopWatch | undefined
  afterEach(() => watch?.stop())

  it('counts the loop held by synchronous work', async () => {
    const lengths: number[] = []
    let counted: () => void
    const stalled = new Promise<void>((resolve) => (counted = resolve))
    watch = watchEventLoopStalls({ onStall: (ms) => (lengths.push(ms), counted()) })
    // Hold the loop for 400 ms from the watch's start: its first tick, due after 50 ms, comes at least 350 ms late.
    const until = performance.now() + 400
    while (performance.now() < until) {
      // Holding the loop, as a synchronous call would.
    }
    await stalled
    expect(watch.stats().stalls).toBeGreaterThan(0)
    expect(Math.max(...lengths)).toBeGreaterThanOrEqual(350)
    expect(watch.stats().longestStallMs).toBe(Math.max(...lengths))
  })
})
