import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { type Placement, SlabArena } from './slab-arena.ts'
import { bodyOf } from './test-support.ts'

const KiB = 1024
const here = path.dirname(fileURLToPath(import.meta.url))
const spot = (): Placement => ({ buffer: Buffer.alloc(0), slab: undefined })

describe('slab arena', () => {
  it('copies bodies one after another into one slab', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    const a = arena.place(spot(), bodyOf(100, 1))
    const b = arena.place(spot(), bodyOf(200, 2))
    expect(a.buffer).toEqual(bodyOf(100, 1))
    expect(b.buffer).toEqual(bodyOf(200, 2))
    expect(a.buffer.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(b.buffer.buffer).toBe(a.buffer.buffer)
    expect(b.buffer.byteOffset).toBe(100)
    expect(a.slab).toBe(b.slab)
    expect(arena.liveBytes).toBe(300)
    expect(arena.heldBytes).toBe(4 * KiB)
    expect(arena.slabCount).toBe(1)
  })

  it('opens a new slab when a body does not fit, and drops a slab once all its bodies are released', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    const first = [arena.place(spot(), bodyOf(400)), arena.place(spot(), bodyOf(400))]
    const filler = Array.from({ length: 9 }, (_, i) => arena.place(spot(), bodyOf(400, i)))
    expect(arena.slabCount).toBe(2)
    expect(filler.at(-1)!.slab).not.toBe(first[0]!.slab)
    const firstSlab = first[0]!.slab!
    for (const p of [...first, ...filler]) if (p.slab === firstSlab) arena.release(p)
    expect(arena.slabCount).toBe(1)
    expect(firstSlab.dropped).toBe(true)
    // The dropped slab is kept to be used again (nothing read it).
    expect(arena.heldBytes).toBe(8 * KiB)
    expect(arena.liveBytes).toBe(400 * filler.filter((p) => p.slab && !p.slab.dropped).length)
  })

  it('never writes over memory it handed out, even once that body is released', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    const kept = arena.place(spot(), bodyOf(1000, 9))
    const handedOut = kept.buffer
    arena.expose(handedOut)
    arena.release(kept)
    // Churn well past the budget: slabs come and go, the released body's bytes stay as they were.
    for (let i = 0; i < 200; i++) {
      const p = arena.place(spot(), Buffer.alloc(1000, i))
      arena.release(p)
    }
    expect(handedOut).toEqual(bodyOf(1000, 9))
    expect(arena.liveBytes).toBe(0)
    // Dropped slabs nobody read are used again: one free beside the one being filled.
    expect(arena.heldBytes).toBeLessThanOrEqual(8 * KiB)
  })

  it('uses a dropped slab again instead of allocating one, when nothing can read it', () => {
    const arena = new SlabArena({ budgetBytes: 32 * KiB, slabBytes: 4 * KiB })
    expect(arena.bodyBytes).toBe(20 * KiB)
    const live: Placement[] = []
    // Ten times the bodies' room through the arena, never more than that live (oldest released first).
    for (let i = 0; i < 200; i++) {
      live.push(arena.place(spot(), bodyOf(1000, i)))
      if (live.length > 20) arena.release(live.shift()!)
    }
    live.forEach((p, i) => expect(p.buffer).toEqual(bodyOf(1000, 200 - live.length + i)))
    // The budget is eight slabs: no more were ever allocated, though fifty were filled.
    expect(arena.allocatedSlabs).toBeLessThanOrEqual(8)
    expect(arena.heldBytes).toBeLessThanOrEqual(arena.budgetBytes)
  })

  it('does not use a slab again while a reserved body in it is not settled, and does once it is', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    // Ten bodies of 400 bytes fill a slab.
    const fill = (seed: number): Placement[] => Array.from({ length: 10 }, (_, i) => arena.place(spot(), Buffer.alloc(400, seed + i)))
    const room = arena.reserve(400)!
    room.buffer.set(bodyOf(400, 5))
    const kept = spot()
    expect(arena.adopt(kept, room)).toBe(true)
    const rest = Array.from({ length: 9 }, (_, i) => arena.place(spot(), Buffer.alloc(400, i)))
    expect(rest.every((p) => p.slab === room.slab)).toBe(true)
    const second = fill(20)
    // The tier lets every body of the first slab go while the reserved one's disk write still reads it.
    for (const p of [kept, ...rest]) arena.release(p)
    expect(room.slab!.dropped).toBe(true)
    expect(arena.allocatedSlabs).toBe(2)
    fill(40)
    expect(arena.allocatedSlabs).toBe(3)
    for (const p of second) arena.release(p)
    fill(60)
    expect(room.buffer).toEqual(bodyOf(400, 5))
    arena.settle(room.buffer)
    arena.settle(room.buffer) // a second settle changes nothing
    expect(room.slab!.holds).toBe(0)
    // Now its memory is used again, from its first byte, instead of a new slab.
    fill(80)
    expect(arena.allocatedSlabs).toBe(3)
    expect(room.buffer).toEqual(Buffer.alloc(400, 80))
  })

  it('does not use a slab again while a body lent out of it is not given back, and does once it is', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    const fill = (seed: number): Placement[] => Array.from({ length: 10 }, (_, i) => arena.place(spot(), Buffer.alloc(400, seed + i)))
    const first = fill(0)
    const second = fill(20)
    // Readers (responses to slow clients) still hold views of the first slab's first body.
    const read = first[0]!.buffer
    const slab = first[0]!.slab!
    arena.lend(slab)
    arena.lend(slab)
    for (const p of first) arena.release(p)
    expect(slab.dropped).toBe(true)
    fill(40)
    expect(arena.allocatedSlabs).toBe(3)
    // The second slab, which nobody reads, is used again; the first is not.
    for (const p of second) arena.release(p)
    fill(60)
    expect(arena.allocatedSlabs).toBe(3)
    expect(read).toEqual(Buffer.alloc(400, 0))
    arena.giveBack(slab)
    expect(arena.droppedBytes).toBe(4 * KiB)
    expect(arena.heldBytes).toBe(8 * KiB)
    // The last reader is done: its memory is used again, from its first byte, instead of a new slab.
    arena.giveBack(slab)
    expect(arena.droppedBytes).toBe(0)
    expect(arena.heldBytes).toBe(12 * KiB)
    fill(80)
    expect(arena.allocatedSlabs).toBe(3)
    expect(read).toEqual(Buffer.alloc(400, 80))
  })

  it('counts the memory of dropped slabs it no longer holds: held by reserved bodies, or exposed to readers', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    const fill = (seed: number): Placement[] => Array.from({ length: 10 }, (_, i) => arena.place(spot(), Buffer.alloc(400, seed + i)))
    const room = arena.reserve(400)!
    const first = Array.from({ length: 9 }, (_, i) => arena.place(spot(), Buffer.alloc(400, i)))
    const second = fill(20)
    expect(arena.droppedBytes).toBe(0)
    // Its bodies go while the reserved one's disk write still reads it: dropped, not free.
    for (const p of first) arena.release(p)
    expect(room.slab!.dropped).toBe(true)
    expect(arena.droppedHeldBytes).toBe(4 * KiB)
    expect(arena.droppedBytes).toBe(4 * KiB)
    expect(arena.heldBytes).toBe(4 * KiB)
    // Settled: free to use again, counted in heldBytes.
    arena.settle(room.buffer)
    expect(arena.droppedHeldBytes).toBe(0)
    expect(arena.droppedBytes).toBe(0)
    expect(arena.heldBytes).toBe(8 * KiB)
    // A slab a reader was handed a view of is dropped for the garbage collector to free.
    arena.expose(second[0]!.buffer)
    fill(40)
    for (const p of second) arena.release(p)
    expect(second[0]!.buffer.byteLength).toBe(400) // still referred to: not collected
    expect(arena.droppedHeldBytes).toBe(0)
    expect(arena.droppedBytes).toBe(4 * KiB)
  })

  it('a reserved body settled before it is adopted is not adopted: its slab may hold another body by then', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    const room = arena.reserve(400)!
    expect(arena.holds(room.buffer)).toBe(true)
    arena.settle(room.buffer)
    expect(arena.holds(room.buffer)).toBe(false)
    expect(arena.adopt(spot(), room)).toBe(false)
  })

  it('compacts sparse slabs: their bodies move, byte for byte, and the memory held stays within the limit', () => {
    const arena = new SlabArena({ budgetBytes: 48 * KiB, slabBytes: 4 * KiB })
    // Compacting starts a slab below the budget, as opening one can add a slab.
    expect(arena.limitBytes).toBe(44 * KiB)
    expect(arena.bodyBytes).toBe(36 * KiB)
    const live = new Map<Placement, Buffer>()
    let seed = 1
    const add = () => {
      const body = bodyOf(500, seed++)
      live.set(arena.place(spot(), body), body)
    }
    for (let i = 0; i < 60; i++) add()
    // Every other body goes: each slab is left half full, with no slab empty to drop.
    let drop = false
    for (const p of [...live.keys()]) {
      if ((drop = !drop)) {
        arena.release(p)
        live.delete(p)
      }
    }
    const before = new Map([...live.keys()].map((p) => [p, p.buffer]))
    // Readers hold views of every body still there (responses to slow clients, say).
    const read = new Set([...live.keys()].map((p) => p.slab!))
    for (const slab of read) arena.lend(slab)
    for (let i = 0; i < 40; i++) add()
    expect(arena.compactedBytes).toBeGreaterThan(0)
    expect(arena.heldBytes).toBeLessThanOrEqual(arena.budgetBytes)
    const moved = [...before].filter(([p, buffer]) => p.buffer !== buffer)
    expect(moved.length).toBeGreaterThan(0)
    for (const [p, body] of live) expect(p.buffer).toEqual(body)
    // A moved body's old bytes are left as they were while a reader holds them.
    for (const [p, old] of moved) expect(old).toEqual(live.get(p))
    expect(arena.liveBytes).toBe(500 * live.size)
  })

  it('uses the slabs it compacted again, so bodies evicted out of order never make it allocate more than its budget', () => {
    const arena = new SlabArena({ budgetBytes: 32 * KiB, slabBytes: 4 * KiB })
    const live: Array<[Placement, number]> = []
    // A hit makes its body the most recently used: evictions leave holes all over the slabs.
    for (let i = 0; i < 2000; i++) {
      while (arena.liveBytes + 400 > arena.bodyBytes) arena.release(live.splice((i * 7) % Math.ceil(live.length / 2), 1)[0]![0])
      live.push([arena.place(spot(), bodyOf(400, i)), i])
    }
    expect(arena.compactedBytes).toBeGreaterThan(100 * KiB)
    // Every slab it allocated is held (in use, or free to use): none left for the garbage collector.
    expect(arena.allocatedSlabs).toBe(8)
    expect(arena.heldBytes).toBe(arena.budgetBytes)
    expect(arena.droppedBytes).toBe(0)
    for (const [p, seed] of live) expect(p.buffer).toEqual(bodyOf(400, seed))
  })

  it('leaves slabs that queued writes still hold out of compacting, so none goes to the garbage collector when they settle', () => {
    const arena = new SlabArena({ budgetBytes: 32 * KiB, slabBytes: 4 * KiB })
    const live: Array<[Placement, number]> = []
    // Bodies written into reserved room wait in the disk writer's queue (more than a slab of
    // them) before they are kept and settled; meanwhile the slabs they are in look nearly empty.
    const queued: Array<[Placement, number]> = []
    let copied = 0
    for (let i = 0; i < 2000; i++) {
      while (arena.liveBytes + 400 > arena.bodyBytes - 12 * 400) arena.release(live.splice((i * 7) % Math.ceil(live.length / 2), 1)[0]![0])
      const room = arena.reserve(400)!
      room.buffer.set(bodyOf(400, i))
      queued.push([room, i])
      if (queued.length <= 12) continue
      const [written, seed] = queued.shift()!
      const kept = spot()
      if (!arena.adopt(kept, written)) {
        arena.place(kept, written.buffer)
        copied++
      }
      arena.settle(written.buffer)
      live.push([kept, seed])
    }
    for (const [written] of queued) arena.settle(written.buffer)
    expect(arena.compactedBytes).toBeGreaterThan(100 * KiB)
    // Every body was kept where it was written, and every slab allocated is held: none was dropped while written.
    expect(copied).toBe(0)
    expect(arena.allocatedSlabs).toBe(8)
    expect(arena.droppedBytes).toBe(0)
    for (const [p, seed] of live) expect(p.buffer).toEqual(bodyOf(400, seed))
  })

  it('keeps a filled slab whose bodies are still being written, and drops it once they settle without being kept', () => {
    const arena = new SlabArena({ budgetBytes: 32 * KiB, slabBytes: 4 * KiB })
    const first = Array.from({ length: 10 }, (_, i) => arena.reserve(400 + i)!)
    const next = arena.reserve(400)!
    expect(next.slab).not.toBe(first[0]!.slab)
    // Still written: the body may yet be kept where it is.
    expect(first[0]!.slab!.dropped).toBe(false)
    for (const room of first) arena.settle(room.buffer)
    // None kept: nothing is placed in it any more, and it is used again for the next slab.
    expect(first[0]!.slab!.dropped).toBe(true)
    expect(arena.slabCount).toBe(1)
    for (let i = 0; i < 10; i++) arena.reserve(400)
    expect(arena.allocatedSlabs).toBe(2)
  })

  it('gives bodies over an eighth of a slab (and empty ones) memory of their own', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    expect(arena.ownBufferFrom).toBe(512)
    const big = arena.place(spot(), bodyOf(513))
    expect(big.slab).toBeUndefined()
    expect(big.buffer.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(big.buffer.buffer.byteLength).toBe(513)
    expect(big.buffer).toEqual(bodyOf(513))
    const empty = arena.place(spot(), Buffer.alloc(0))
    expect(empty.buffer.length).toBe(0)
    expect(arena.slabCount).toBe(0)
    expect(arena.heldBytes).toBe(513)
    expect(arena.liveBytes).toBe(513)
    arena.release(big)
    arena.release(empty)
    expect(arena.heldBytes).toBe(0)
    expect(arena.liveBytes).toBe(0)
  })

  it('reserves room that adopt() keeps where it is, and refuses room whose slab was dropped', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    const room = arena.reserve(300)!
    room.buffer.set(bodyOf(300, 3))
    expect(arena.liveBytes).toBe(0)
    const kept = spot()
    expect(arena.adopt(kept, room)).toBe(true)
    expect(kept.buffer).toBe(room.buffer)
    expect(arena.liveBytes).toBe(300)
    expect(arena.reserve(513)).toBeUndefined()

    // Room in a slab that was dropped: its only body released once the slab is full (of room
    // reserved and never adopted, dead space).
    const late = arena.reserve(300)!
    for (let i = 0; i < 20; i++) arena.reserve(300)
    arena.release(kept)
    expect(late.slab!.dropped).toBe(true)
    expect(arena.adopt(spot(), late)).toBe(false)
  })

  it('returns from place() when a caller places more than bodyBytes: it goes over its limit instead of moving bodies round forever', async () => {
    // Compacting only ends while the live bodies stay under bodyBytes; past it, bodies were moved
    // from slab to slab in an endless loop. A loop blocks the test's own process, so the arena
    // runs in a child, and a child still busy long after its work would take is killed and fails.
    const script = `
      import { SlabArena } from ${JSON.stringify(path.join(here, 'slab-arena.ts'))}
      import { bodyOf } from ${JSON.stringify(path.join(here, 'test-support.ts'))}
      const arena = new SlabArena({ budgetBytes: 1024 * 1024, slabBytes: 64 * 1024 })
      const kept = []
      for (let i = 0; i < 400; i++) {
        kept.push([i, arena.place({ buffer: Buffer.alloc(0), slab: undefined }, bodyOf(5000 + (i % 7) * 300, i))])
        // Releases leave slabs sparse, so every new slab compacts.
        if (i % 3 === 0) arena.release(kept.splice(Math.floor(kept.length / 2), 1)[0][1])
      }
      const intact = kept.every(([i, p]) => p.buffer.equals(bodyOf(5000 + (i % 7) * 300, i)))
      process.stdout.write(JSON.stringify({ intact, live: arena.liveBytes, bodyBytes: arena.bodyBytes, slabs: arena.slabCount }))
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 25_000)
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])))
    clearTimeout(watchdog)
    expect(signal, 'the arena never returned from place()').toBeNull()
    expect(code).toBe(0)
    const result = JSON.parse(out) as { intact: boolean; live: number; bodyBytes: number; slabs: number }
    expect(result.live).toBeGreaterThan(result.bodyBytes)
    expect(result.intact).toBe(true)
  })

  it('clear() forgets everything', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    const p = arena.place(spot(), bodyOf(100))
    arena.place(spot(), bodyOf(1000))
    arena.clear()
    expect(arena.liveBytes).toBe(0)
    expect(arena.heldBytes).toBe(0)
    expect(p.buffer).toEqual(bodyOf(100))
  })

  it('sizes slabs from the budget: a 64th, a power of two between 64 KiB and 4 MiB (less what malloc adds, from 2 MiB)', () => {
    // glibc maps 4 MiB - 24 bytes as exactly 4 MiB: two whole huge pages.
    expect(new SlabArena({ budgetBytes: 256 * 1024 * KiB }).slabBytes).toBe(4 * 1024 * KiB - 24)
    expect(new SlabArena({ budgetBytes: 128 * 1024 * KiB }).slabBytes).toBe(2 * 1024 * KiB - 24)
    expect(new SlabArena({ budgetBytes: 64 * 1024 * KiB }).slabBytes).toBe(1024 * KiB)
    expect(new SlabArena({ budgetBytes: 100 }).slabBytes).toBe(64 * KiB)
    expect(() => new SlabArena({ budgetBytes: -1 })).toThrow(RangeError)
  })

  it('opens slabs a maker made ready ahead, keeps two of them while under its limit, and allocates one itself when none is ready', () => {
    const arena = new SlabArena({ budgetBytes: 16 * KiB, slabBytes: 4 * KiB })
    const asked: Array<{ count: number; ready: (made: SharedArrayBuffer[]) => void }> = []
    arena.makeSlabsWith((bytes, count, ready) => {
      expect(bytes).toBe(4 * KiB)
      asked.push({ count, ready })
    })
    expect(asked.map((a) => a.count)).toEqual([2])
    const made = [new SharedArrayBuffer(4 * KiB), new SharedArrayBuffer(4 * KiB)]
    asked.shift()!.ready(made)
    // Ready slabs are held memory, like free ones.
    expect(arena.heldBytes).toBe(8 * KiB)
    const first = arena.place(spot(), bodyOf(100, 1))
    expect(made).toContain(first.slab!.memory)
    expect(first.buffer).toEqual(bodyOf(100, 1))
    // The one taken is asked for again.
    expect(asked.map((a) => a.count)).toEqual([1])
    // Not answered yet: the next slab is the other ready one, then one of the arena's own.
    for (let i = 0; i < 7; i++) arena.place(spot(), bodyOf(512))
    const second = arena.place(spot(), bodyOf(512, 2))
    expect(made).toContain(second.slab!.memory)
    expect(second.slab).not.toBe(first.slab)
    for (let i = 0; i < 7; i++) arena.place(spot(), bodyOf(512))
    const third = arena.place(spot(), bodyOf(512, 3))
    expect(made).not.toContain(third.slab!.memory)
    expect(third.slab).not.toBe(second.slab)
    expect(arena.allocatedSlabs).toBe(3)
    // Only as far as the limit (the budget less a slab) has room: with two slabs placing bodies, none more was asked for.
    expect(asked.map((a) => a.count)).toEqual([1])
    // What comes is kept within the budget.
    asked.shift()!.ready([new SharedArrayBuffer(4 * KiB)])
    expect(arena.heldBytes).toBe(16 * KiB)
  })

  it('makes no slab ahead only to let it go: at its limit a slab compacting empties is used again first', () => {
    const arena = new SlabArena({ budgetBytes: 64 * KiB, slabBytes: 4 * KiB })
    let made = 0
    // A maker that answers at once.
    arena.makeSlabsWith((bytes, count, ready) => {
      made += count
      ready(Array.from({ length: count }, () => new SharedArrayBuffer(bytes)))
    })
    // Bodies evicted oldest first, as the memory tier does, keeping the live bytes under bodyBytes.
    const live: Placement[] = []
    let liveBytes = 0
    for (let i = 0; i < 2000; i++) {
      const size = 200 + ((i * 37) % 300)
      while (liveBytes + size > arena.bodyBytes) {
        const gone = live.shift()!
        liveBytes -= gone.buffer.byteLength
        arena.release(gone)
      }
      live.push(arena.place(spot(), bodyOf(size, i)))
      liveBytes += size
      expect(arena.heldBytes).toBeLessThanOrEqual(64 * KiB)
    }
    // Every slab made was taken in (allocatedSlabs counts those too), and slabs were used again.
    expect(made).toBe(arena.allocatedSlabs)
    expect(arena.allocatedSlabs).toBeLessThan(64 / 4 + 4)
  })
})
