import { describe, expect, it } from 'vitest'
import { createMemoryTier } from './memory-tier.ts'

const item = (size: number, integrity = 'x') => ({ buffer: Buffer.alloc(size), integrity })

describe('memory tier', () => {
  it('is bounded in bytes and evicts the least recently used first', () => {
    const tier = createMemoryTier({ maxBytes: 100, maxObjectBytes: 50 })
    expect(tier.set('a', item(40))).toBe(true)
    expect(tier.set('b', item(40))).toBe(true)
    expect(tier.get('a')).toBeDefined() // a is now more recent than b
    expect(tier.set('c', item(40))).toBe(true)
    expect(tier.has('b')).toBe(false)
    expect(tier.has('a')).toBe(true)
    expect(tier.has('c')).toBe(true)
    expect(tier.bytes).toBe(80)
    expect(tier.size).toBe(2)
  })

  it('evicts as many small items as needed for one larger item', () => {
    const tier = createMemoryTier({ maxBytes: 100, maxObjectBytes: 100 })
    for (let i = 0; i < 10; i++) tier.set(`k${i}`, item(10))
    tier.set('big', item(55))
    expect(tier.bytes).toBeLessThanOrEqual(100)
    expect(tier.has('big')).toBe(true)
    expect(tier.has('k0')).toBe(false)
    expect(tier.has('k5')).toBe(false)
    expect(tier.has('k6')).toBe(true)
  })

  it('does not keep objects over the per-object cut (default a quarter of the budget)', () => {
    const tier = createMemoryTier({ maxBytes: 100 })
    expect(tier.maxObjectBytes).toBe(25)
    expect(tier.set('big', item(26))).toBe(false)
    expect(tier.has('big')).toBe(false)
    expect(tier.bytes).toBe(0)
  })

  it('replacing a key adjusts the byte count, and delete/clear release bytes', () => {
    const tier = createMemoryTier({ maxBytes: 100 })
    tier.set('a', item(20))
    tier.set('a', item(5, 'y'))
    expect(tier.bytes).toBe(5)
    expect(tier.get('a')?.integrity).toBe('y')
    // Replacing with an object that is too big removes the old copy rather than keeping a stale one.
    tier.set('a', item(90))
    expect(tier.has('a')).toBe(false)
    tier.set('b', item(10))
    expect(tier.delete('b')).toBe(true)
    expect(tier.delete('b')).toBe(false)
    tier.set('c', item(10))
    tier.clear()
    expect(tier.bytes).toBe(0)
    expect(tier.size).toBe(0)
  })

  it('maxBytes 0 disables the tier', () => {
    const tier = createMemoryTier({ maxBytes: 0 })
    expect(tier.set('a', item(1))).toBe(false)
    expect(tier.set('empty', item(0))).toBe(false)
    expect(tier.size).toBe(0)
  })

  it('rejects a negative budget', () => {
    expect(() => createMemoryTier({ maxBytes: -1 })).toThrow(RangeError)
  })
})
