import { describe, expect, it } from 'vitest'
import { hashKey } from './entry-index.ts'
import { RecentKeys } from './recent-keys.ts'

describe('RecentKeys', () => {
  it('knows a key from the second time it is noted on', () => {
    const recent = new RecentKeys(1024)
    expect(recent.has('https://a.example/x')).toBe(false)
    expect(recent.note('https://a.example/x')).toBe(false)
    expect(recent.has('https://a.example/x')).toBe(true)
    expect(recent.note('https://a.example/x')).toBe(true)
    expect(recent.has('https://a.example/y')).toBe(false)
  })

  it('forgets a key whose slot another key took, and only that one', () => {
    const recent = new RecentKeys(4)
    // Keys by the slot their hash gives in a table of four.
    const bySlot = new Map<number, string[]>()
    for (let i = 0; bySlot.size < 4 || [...bySlot.values()].some((keys) => keys.length < 2); i++) {
      const key = `https://a.example/${i}`
      const slot = (hashKey(key) || 1) & 3
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), key])
    }
    const [[first, second], [other]] = [bySlot.get(0)!, bySlot.get(1)!]
    recent.note(first!)
    recent.note(other!)
    recent.note(second!)
    expect(recent.has(second!)).toBe(true)
    expect(recent.has(first!)).toBe(false)
    expect(recent.has(other!)).toBe(true)
  })

  it('takes only a power of two of slots', () => {
    expect(() => new RecentKeys(1000)).toThrow(/power of two/)
  })
})
