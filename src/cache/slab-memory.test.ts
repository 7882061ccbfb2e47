import { describe, expect, it } from 'vitest'
import { createSlabMemory } from './slab-memory.ts'

const KiB = 1024

describe('slab memory', () => {
  it('hands out zeroed memory of the size asked for, mapped ahead once the thread is done', async () => {
    const memory = createSlabMemory()
    const first = memory.take(64 * KiB)
    expect(first.byteLength).toBe(64 * KiB)
    expect(memory.readyTaken).toBe(0)
    await memory.settled()
    const second = memory.take(64 * KiB)
    expect(memory.readyTaken).toBe(1)
    expect(second).not.toBe(first)
    expect(second.byteLength).toBe(64 * KiB)
    expect(new Uint8Array(second).every((b) => b === 0)).toBe(true)
  })

  // The thread writes to every page of a slab it maps: a slab handed out before it is done would
  // have bodies copied in under those writes.
  it('never hands out a slab the thread is still mapping', async () => {
    const memory = createSlabMemory()
    const taken = [memory.take(64 * KiB), memory.take(64 * KiB), memory.take(64 * KiB)]
    for (const slab of taken) new Uint8Array(slab).fill(0xab)
    await memory.settled()
    for (const slab of taken) expect(new Uint8Array(slab).every((b) => b === 0xab)).toBe(true)
  })

  it('prepares slabs of the new size when the size changes', async () => {
    const memory = createSlabMemory()
    memory.take(64 * KiB)
    await memory.settled()
    const other = memory.take(128 * KiB)
    expect(other.byteLength).toBe(128 * KiB)
    await memory.settled()
    expect(memory.take(128 * KiB).byteLength).toBe(128 * KiB)
    expect(memory.readyTaken).toBe(1)
  })
})
