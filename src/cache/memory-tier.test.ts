import { describe, expect, it } from 'vitest'
import { createMemoryTier } from './memory-tier.ts'
import { bodyOf } from './test-support.ts'

const item = (size: number, integrity = 'x') => ({ buffer: Buffer.alloc(size), integrity })

describe('memory tier', () => {
  // 64 KiB of 4 KiB slabs: the slabs' room (two slabs) and the slab being opened come out of
  // the budget, which leaves 52 KiB for bodies.
  const small = { maxBytes: 64 * 1024, slabBytes: 4096 }

  it('keeps bodies up to the budget less the room its slabs need, so the slabs never take more than the budget', () => {
    const tier = createMemoryTier(small)
    expect(tier.maxBytes).toBe(64 * 1024)
    expect(tier.bodyBytes).toBe(52 * 1024)
    // Bodies of a slab's eighth and less go into slabs: fill the tier twice over.
    for (let i = 0; i < 260; i++) expect(tier.set(`k${i}`, item(500))).toBe(true)
    expect(tier.bytes).toBeLessThanOrEqual(tier.bodyBytes)
    expect(tier.bytes).toBeGreaterThan(tier.bodyBytes - 500)
    expect(tier.heldBytes).toBeLessThanOrEqual(tier.maxBytes)
  })

  it('is bounded in bytes and evicts the least recently used first', () => {
    const tier = createMemoryTier({ ...small, maxObjectBytes: 32 * 1024 })
    const size = Math.floor(tier.bodyBytes * 0.4)
    expect(tier.set('a', item(size))).toBe(true)
    expect(tier.set('b', item(size))).toBe(true)
    expect(tier.get('a')).toBeDefined() // a is now more recent than b
    expect(tier.set('c', item(size))).toBe(true)
    expect(tier.has('b')).toBe(false)
    expect(tier.has('a')).toBe(true)
    expect(tier.has('c')).toBe(true)
    expect(tier.bytes).toBe(2 * size)
    expect(tier.size).toBe(2)
  })

  it('moves an item used to the newest end only from the older half of the list: one in the newer half keeps its place', () => {
    const tier = createMemoryTier({ ...small, maxObjectBytes: 64 * 1024 })
    const tenth = Math.floor(tier.bodyBytes / 10)
    for (const k of ['a', 'b', 'c', 'd']) tier.set(k, item(tenth))
    expect(tier.get('c')).toBeDefined() // newer half: stays a b c d
    expect(tier.get('a')).toBeDefined() // older half: moves, b c d a
    const evicted: string[] = []
    tier.onEvict((key) => evicted.push(key))
    // Room for 10 tenths: a body of 9 tenths pushes out 3 of the 4, oldest first.
    expect(tier.set('big', item(tenth * 9))).toBe(true)
    expect(evicted).toEqual(['b', 'c', 'd'])
    expect(tier.has('a')).toBe(true)
  })

  it('evicts in recency order after hits, deletes and replacements at either end and in the middle', () => {
    const tier = createMemoryTier({ ...small, maxObjectBytes: 64 * 1024 })
    const tenth = Math.floor(tier.bodyBytes / 10)
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) tier.set(k, item(tenth))
    tier.get('c') // middle → newest: a b d e f c
    tier.get('a') // oldest → newest: b d e f c a
    tier.get('a') // newest already
    tier.delete('f') // middle: b d e c a
    tier.delete('b') // oldest: d e c a
    tier.delete('a') // newest: d e c
    tier.set('e', item(tenth)) // replaced: d c e
    tier.set('g', item(tenth)) // d c e g
    const evicted: string[] = []
    tier.onEvict((key) => evicted.push(key))
    // Room for 10 tenths: 4 held, a body of 9 tenths pushes out 3 of them, oldest first.
    expect(tier.set('big', item(tenth * 9))).toBe(true)
    expect(evicted).toEqual(['d', 'c', 'e'])
    expect([...['g', 'big'].map((k) => tier.has(k))]).toEqual([true, true])
    expect(tier.size).toBe(2)
    tier.clear()
    // After clear() the list starts again empty.
    tier.set('h', item(tenth * 9))
    expect(tier.set('i', item(tenth * 9))).toBe(true)
    expect(evicted).toEqual(['d', 'c', 'e', 'h'])
  })

  it('lends an item again by the loan that named it, moving it as lend() does, until it leaves the tier: then it holds no body', () => {
    const tier = createMemoryTier({ ...small, maxObjectBytes: 64 * 1024 })
    const tenth = Math.floor(tier.bodyBytes / 10)
    for (const k of ['a', 'b', 'c', 'd']) tier.set(k, { buffer: bodyOf(tenth, k.charCodeAt(0)), integrity: k })
    const a = tier.lend('a')!.item!
    const again = tier.lendItem(a, 'a')!
    expect(again.buffer).toEqual(bodyOf(tenth, 97))
    expect(again.integrity).toBe('a')
    expect(again.item).toBe(a)
    // Not the item under another key.
    expect(tier.lendItem(a, 'b')).toBeUndefined()
    // Moved to the newest end as a hit by key is: b c d a, so a body of 9 tenths evicts b, c and d.
    const evicted: string[] = []
    tier.onEvict((key) => evicted.push(key))
    tier.set('big', item(tenth * 9))
    expect(evicted).toEqual(['b', 'c', 'd'])
    const b = tier.lend('a')!.item!
    tier.set('a', { buffer: bodyOf(tenth, 1), integrity: 'a2' })
    expect(tier.lendItem(b, 'a')).toBeUndefined()
    expect((b as { buffer: Buffer }).buffer.length).toBe(0)
    const replaced = tier.lend('a')!.item!
    tier.delete('a')
    expect(tier.lendItem(replaced, 'a')).toBeUndefined()
    expect((replaced as { buffer: Buffer }).buffer.length).toBe(0)
    const big = tier.lend('big')!.item!
    tier.clear()
    expect(tier.lendItem(big, 'big')).toBeUndefined()
  })

  it('evicts as many small items as needed for one larger item', () => {
    const tier = createMemoryTier({ ...small, maxObjectBytes: 64 * 1024 })
    const tenth = Math.floor(tier.bodyBytes / 10)
    for (let i = 0; i < 10; i++) tier.set(`k${i}`, item(tenth))
    tier.set('big', item(Math.floor(tier.bodyBytes * 0.55)))
    expect(tier.bytes).toBeLessThanOrEqual(tier.bodyBytes)
    expect(tier.has('big')).toBe(true)
    expect(tier.has('k0')).toBe(false)
    expect(tier.has('k5')).toBe(false)
    expect(tier.has('k6')).toBe(true)
  })

  it('does not keep objects over the per-object cut (default a quarter of the budget)', () => {
    const tier = createMemoryTier(small)
    expect(tier.maxObjectBytes).toBe(16 * 1024)
    expect(tier.set('big', item(16 * 1024 + 1))).toBe(false)
    expect(tier.has('big')).toBe(false)
    expect(tier.bytes).toBe(0)
  })

  it('replacing a key adjusts the byte count, and delete/clear release bytes', () => {
    const tier = createMemoryTier(small)
    tier.set('a', item(200))
    tier.set('a', item(50, 'y'))
    expect(tier.bytes).toBe(50)
    expect(tier.get('a')?.integrity).toBe('y')
    // Replacing with an object that is too big removes the old copy rather than keeping a stale one.
    tier.set('a', item(20 * 1024))
    expect(tier.has('a')).toBe(false)
    tier.set('b', item(100))
    expect(tier.delete('b')).toBe(true)
    expect(tier.delete('b')).toBe(false)
    tier.set('c', item(100))
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

  it('keeps a body written into allocate()d memory where it is, and copies any other body', () => {
    const tier = createMemoryTier({ maxBytes: 64 * 1024, slabBytes: 4096 })
    const room = tier.allocate(100)!
    room.set(bodyOf(100, 1))
    expect(tier.set('a', { buffer: room, integrity: 'a' })).toBe(true)
    expect(tier.get('a')!.buffer).toBe(room)

    const own = bodyOf(100, 2)
    tier.set('b', { buffer: own, integrity: 'b' })
    const held = tier.get('b')!.buffer
    expect(held).not.toBe(own)
    expect(held.buffer).toBe(room.buffer)
    own.fill(0) // the caller's buffer is its own again
    expect(held).toEqual(bodyOf(100, 2))
    // The same allocated buffer set under a second key is a copy, not a second owner of that room.
    tier.set('c', { buffer: room, integrity: 'c' })
    expect(tier.get('c')!.buffer).not.toBe(room)
    expect(tier.bytes).toBe(300)
  })

  it('allocates nothing for a body it would not keep', () => {
    expect(createMemoryTier({ maxBytes: 0 }).allocate(10)).toBeUndefined()
    const tier = createMemoryTier({ maxBytes: 64 * 1024, maxObjectBytes: 1000, slabBytes: 4096 })
    expect(tier.allocate(1001)).toBeUndefined()
    // Over an eighth of a slab: not from a slab (set() gives it memory of its own).
    expect(tier.allocate(513)).toBeUndefined()
    tier.set('big', { buffer: bodyOf(900), integrity: 'x' })
    expect(tier.get('big')!.buffer.buffer.byteLength).toBe(900)
  })

  it('under churn, counts exactly the bytes it holds, serves the bytes stored, and holds no more memory than its budget', () => {
    const maxBytes = 64 * 1024
    const tier = createMemoryTier({ maxBytes, maxObjectBytes: 2000, slabBytes: 4096 })
    let mismatches = 0
    let miscounts = 0
    const expected = new Map<string, Buffer>()
    let x = 12345
    const random = (n: number) => (x = (x * 1103515245 + 12345) >>> 0) % n
    let maxHeld = 0
    const writing: Buffer[] = []
    for (let i = 0; i < 3000; i++) {
      const key = `k${random(300)}`
      const op = random(10)
      if (op < 5) {
        // Mostly slab-sized bodies (up to an eighth of a slab), some with memory of their own.
        const body = bodyOf(1 + (random(8) === 0 ? random(2000) : random(512)), i)
        // Half the bodies come through allocate(), as a buffered write does.
        const room = random(2) === 0 ? tier.allocate(body.length) : undefined
        room?.set(body)
        expect(tier.set(key, { buffer: room ?? body, integrity: String(i) })).toBe(true)
        expected.set(key, body)
        // Its disk write settles it a little later, as the writer's queue moves.
        if (room) writing.push(room)
        while (writing.length > random(8)) tier.settle(writing.shift()!)
      } else if (op < 9) {
        const held = tier.get(key)
        if (held && !held.buffer.equals(expected.get(key)!)) mismatches++
      } else {
        tier.delete(key)
      }
      for (const k of expected.keys()) if (!tier.has(k)) expected.delete(k)
      let sum = 0
      for (const body of expected.values()) sum += body.length
      if (tier.bytes !== sum || tier.size !== expected.size) miscounts++
      maxHeld = Math.max(maxHeld, tier.heldBytes)
    }
    for (const [k, body] of expected) if (!tier.get(k)!.buffer.equals(body)) mismatches++
    expect(mismatches).toBe(0)
    expect(miscounts).toBe(0)
    expect(tier.bytes).toBeLessThanOrEqual(tier.bodyBytes)
    // Dead space, the slab being filled and bodies with memory of their own included.
    expect(maxHeld).toBeLessThanOrEqual(maxBytes)
    tier.clear()
    expect(tier.heldBytes).toBe(0)
  })
})
