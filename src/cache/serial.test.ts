import { describe, expect, it } from 'vitest'
import { WorkQueue } from './serial.ts'

describe('WorkQueue', () => {
  it('runs every task, never more than its concurrency at once, starting them in the order queued', async () => {
    const queue = new WorkQueue(3)
    let running = 0
    let most = 0
    const started: number[] = []
    const done = Array.from({ length: 2000 }, (_, i) =>
      queue.push(async () => {
        started.push(i)
        running++
        most = Math.max(most, running)
        await new Promise<void>((resolve) => setImmediate(resolve))
        running--
        // A failing task is its own business: the queue goes on.
        if (i % 7 === 0) throw new Error(`task ${i}`)
      }),
    )
    expect(queue.pending).toBe(2000)
    await queue.idle()
    await Promise.all(done)
    expect(most).toBe(3)
    expect(started).toEqual(Array.from({ length: 2000 }, (_, i) => i))
    expect(queue.pending).toBe(0)
    // Still usable afterwards.
    let ran = false
    await queue.push(async () => {
      ran = true
    })
    expect(ran).toBe(true)
  })
})
