import { describe, expect, it } from 'vitest'
import { PackedArena } from './packed-arena.ts'

/** Strings stored in an arena, with where each is: what the index keeps per slot. */
class Owner {
  readonly at = new Map<string, number>()
  constructor(readonly arena: PackedArena) {}

  add(s: string): void {
    this.at.set(s, this.arena.write(s, PackedArena.lengthOf(s)))
  }

  remove(s: string): void {
    this.arena.free(this.at.get(s)!, PackedArena.lengthOf(s))
    this.at.delete(s)
    if (this.arena.wantsCompaction) {
      this.arena.compact((move) => {
        for (const [t, at] of this.at) this.at.set(t, move(at, PackedArena.lengthOf(t)))
      })
    }
  }

  read(s: string): string {
    return this.arena.read(this.at.get(s)!, PackedArena.lengthOf(s))
  }
}

describe('packed arena', () => {
  it('gives back one-byte and two-byte strings, their slices, characters and prefixes', () => {
    const arena = new PackedArena()
    const narrow = 'https://a.test/é?q=1\u0000\u0000A\u00ff'
    const wide = 'https://a.test/日本\u0000accept-language=\u20ac\u0000J{}'
    expect(PackedArena.lengthOf(narrow)).toBe(narrow.length)
    expect(PackedArena.lengthOf(wide)).toBe(-wide.length)
    for (const s of [narrow, wide]) {
      const length = PackedArena.lengthOf(s)
      const at = arena.write(s, length)
      expect(arena.read(at, length)).toBe(s)
      expect(arena.slice(at, length, 8, 17)).toBe(s.slice(8, 17))
      for (let i = 0; i < s.length; i++) expect(arena.charCodeAt(at, length, i)).toBe(s.charCodeAt(i))
      expect(arena.charCodeAt(at, length, s.length)).toBeNaN()
      expect(arena.startsWith(at, length, s.slice(0, 16))).toBe(true)
      expect(arena.startsWith(at, length, s.slice(3, 12), 3)).toBe(true)
      expect(arena.startsWith(at, length, 'https://b.test/')).toBe(false)
      expect(arena.startsWith(at, length, `${s}x`)).toBe(false)
    }
    expect(arena.liveBytes).toBe(narrow.length + 2 * wide.length)
  })

  it('frees a chunk once every string in it is gone, and gives a longer string a chunk of its own', () => {
    const arena = new PackedArena({ chunkBytes: 100 })
    const owner = new Owner(arena)
    for (let i = 0; i < 10; i++) owner.add(`entry ${i}`.padEnd(40, '.'))
    // Two to a chunk: five chunks, the last one still filling.
    expect(arena.heldBytes).toBe(500)
    owner.remove(`entry 0`.padEnd(40, '.'))
    owner.remove(`entry 1`.padEnd(40, '.'))
    expect(arena.heldBytes).toBe(400)
    const long = 'x'.repeat(250)
    owner.add(long)
    expect(arena.heldBytes).toBe(650)
    expect(owner.read(long)).toBe(long)
    owner.remove(long)
    expect(arena.heldBytes).toBe(400)
  })

  it('copies the strings of its emptiest chunks out and frees them when holes reach an eighth of what it stores', () => {
    const arena = new PackedArena({ chunkBytes: 1000 })
    const owner = new Owner(arena)
    const all = Array.from({ length: 2000 }, (_, i) => (i % 7 === 0 ? `wide ${i} \u20ac` : `narrow ${i}`).padEnd(50, '-'))
    for (const s of all) owner.add(s)
    const held = arena.heldBytes
    // Most of every chunk goes, so no chunk empties by itself: only compaction gives memory back.
    const kept = all.filter((_, i) => i % 5 === 0)
    for (const s of all) if (!kept.includes(s)) owner.remove(s)
    expect(arena.liveBytes).toBe(kept.reduce((n, s) => n + (PackedArena.lengthOf(s) < 0 ? 2 : 1) * s.length, 0))
    expect(arena.heldBytes).toBeLessThan(held / 2)
    expect(arena.heldBytes).toBeLessThanOrEqual(Math.max(4 * arena.chunkBytes, arena.liveBytes * 1.125) + arena.chunkBytes)
    for (const s of kept) expect(owner.read(s)).toBe(s)
  })

  it('compacts once holes are a sixth of what it stores, spread over every chunk', () => {
    const arena = new PackedArena({ chunkBytes: 1000 })
    const owner = new Owner(arena)
    const all = Array.from({ length: 3000 }, (_, i) => `entry ${i}`.padEnd(50, '-'))
    for (const s of all) owner.add(s)
    const held = arena.heldBytes
    // One in seven goes: holes of a sixth of what stays, in every chunk (none empties by itself).
    for (let i = 0; i < all.length; i += 7) owner.remove(all[i]!)
    expect(arena.heldBytes).toBeLessThan(held)
    expect(arena.heldBytes).toBeLessThanOrEqual(arena.liveBytes * 1.125 + 2 * arena.chunkBytes)
  })
})
