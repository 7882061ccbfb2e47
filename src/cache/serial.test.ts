import { describe, expect, it } from 'vitest'
import { Limiter } from './serial.ts'

describe('Limiter', () => {
  it('runs every task, never more than the limit at once, starting them in call order', async () => {
    const limiter = new Limiter(3)
    let running = 0
    let most = 0
    const started: number[] = []
    const results = await Promise.all(
      Array.from({ length: 2000 }, (_, i) =>
        limiter.run(async () => {
          started.push(i)
          running++
          most = Math.max(most, running)
          await new Promise<void>((resolve) => setImmediate(resolve))
          running--
          if (i % 7 === 0) throw new Error(`task ${i}`)
          return i
        }).catch((err: Error) => err.message),
      ),
    )
    expect(most).toBe(3)
    expect(started).toEqual(Array.from({ length: 2000 }, (_, i) => i))
    expect(results[7]).toBe('task 7')
    expect(results[8]).toBe(8)
    // A failed task frees its slot like any other: the limiter is still usable afterwards.
    expect(await limiter.run(async () => 'again')).toBe('again')
  })
})
