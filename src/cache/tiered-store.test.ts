import { writeFile } from 'node:fs/promises'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { contentPath } from './content-file.ts'
import { createDiskStore, entryId } from './disk-store.ts'
import { createMemoryTier } from './memory-tier.ts'
import { type CacheStoreOptions, createCacheStore, createTieredStore, tierBodies } from './tiered-store.ts'
import { bodyOf, bytesOf, newEntry, put, recordEvents, tempDir } from './test-support.ts'
import type { CacheStore } from './types.ts'

const MiB = 1024 * 1024

let dir: string
let cleanup: () => Promise<void>
const open: CacheStore[] = []

beforeEach(async () => {
  ;({ dir, cleanup } = await tempDir())
})

afterEach(async () => {
  for (const store of open.splice(0)) await store.close()
  await cleanup()
})

async function openStore(overrides: Partial<CacheStoreOptions> = {}): Promise<CacheStore> {
  const store = await createCacheStore({ dir, maxBytes: 100 * MiB, memoryBytes: 8 * MiB, maxObjectBytes: 10 * MiB, log: () => {}, ...overrides })
  open.push(store)
  return store
}

async function reopen(store: CacheStore, overrides: Partial<CacheStoreOptions> = {}): Promise<CacheStore> {
  await store.close()
  open.splice(open.indexOf(store), 1)
  return openStore(overrides)
}

describe('tiered store', () => {
  it('keeps serving a body from memory once the disk writer has hashed it and its integrity is known', async () => {
    const store = await openStore()
    await store.drain() // past the start-up sweep, during which bodies are hashed on the main thread
    const body = bodyOf(6000, 3)
    const committed = await store.put(newEntry('https://a.test/hashed'), body)
    expect(committed?.integrity).toMatch(/^pending-/)
    await store.drain()
    expect(store.variant('https://a.test/hashed', '')?.integrity).toMatch(/^sha512-/)
    const hit = await store.read('https://a.test/hashed', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(Buffer.compare((hit as { buffer: Buffer }).buffer, body)).toBe(0)
  })

  it('keeps one copy of a small body: the memory tier holds the very bytes the disk writer thread wrote from', async () => {
    const store = await openStore()
    const small = bodyOf(5000)
    const other = bodyOf(3000, 7)
    // Written in two chunks, as an origin body arrives.
    const writer = store.writer(newEntry('https://a.test/shared'))
    expect(writer.write(small.subarray(0, 2000)) && writer.write(small.subarray(2000))).toBe(true)
    await writer.commit()
    await put(store, newEntry('https://a.test/other'), other)
    await store.drain()
    const hit = await store.read('https://a.test/shared', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    const held = (hit as { buffer: Buffer }).buffer
    const next = ((await store.read('https://a.test/other', '')) as { buffer: Buffer }).buffer
    // Shared memory, posted to the writer thread without a copy: both bodies were buffered
    // one after the other in one slab of the memory tier, which kept them where they were.
    expect(held.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(next.buffer).toBe(held.buffer)
    expect(next.byteOffset).toBe(held.byteOffset + small.length)
    expect(Buffer.compare(held, small)).toBe(0)
    expect(Buffer.compare(next, other)).toBe(0)
    // And the files on disk have the same bytes: reopened, the bodies come from disk.
    const reopened = await reopen(store, { memoryBytes: 0 })
    expect(await bytesOf((await reopened.read('https://a.test/shared', ''))!)).toEqual(small)
    expect(await bytesOf((await reopened.read('https://a.test/other', ''))!)).toEqual(other)
  })

  it('keeps a whole body stored in one put in memory, and answers with its metadata', async () => {
    const store = await openStore()
    const small = bodyOf(5000, 3)
    const meta = await store.put(newEntry('https://a.test/whole'), small)
    expect(meta).toMatchObject({ key: 'https://a.test/whole', size: 5000 })
    // Once on disk, too: the memory tier's copy, not the file.
    await store.drain()
    const hit = await store.read('https://a.test/whole', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(await bytesOf(hit!)).toEqual(small)
    expect(store.stats()).toMatchObject({ entries: 1, memoryEntries: 1, memoryBytes: 5000 })
  })

  it('serves a fresh commit from memory, and large bodies from disk', async () => {
    const store = await openStore()
    const small = bodyOf(5000)
    await put(store, newEntry('https://a.test/s'), small)
    const hit = await store.read('https://a.test/s', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(await bytesOf(hit!)).toEqual(small)

    await put(store, newEntry('https://a.test/l'), bodyOf(2 * MiB))
    const large = await store.read('https://a.test/l', '')
    expect(large).toMatchObject({ kind: 'stream', tier: 'disk' })
    expect((await bytesOf(large!)).equals(bodyOf(2 * MiB))).toBe(true)
    expect(store.stats()).toMatchObject({ entries: 2, memoryEntries: 1, memoryBytes: 5000 })
  })

  it('promotes a body into memory after a verified disk read', async () => {
    let store = await openStore()
    await put(store, newEntry('https://a.test/p'), bodyOf(3000))
    store = await reopen(store)
    expect((await store.read('https://a.test/p', ''))?.tier).toBe('disk')
    expect((await store.read('https://a.test/p', ''))?.tier).toBe('memory')
    expect((await store.list()).entries[0].inMemory).toBe(true)
  })

  it('answers ranges from memory, and keeps a small body whole when a range is read first', async () => {
    let store = await openStore()
    const body = bodyOf(10_000)
    await put(store, newEntry('https://a.test/r'), body)
    const fromMemory = await store.read('https://a.test/r', '', { start: 100, end: 199 })
    expect(fromMemory?.tier).toBe('memory')
    expect(await bytesOf(fromMemory!)).toEqual(body.subarray(100, 200))
    expect(() => store.read('https://a.test/r', '', { start: 10_000, end: 10_000 })).toThrow(RangeError)

    store = await reopen(store)
    const fromDisk = await store.read('https://a.test/r', '', { start: 9_000, end: 99_999 })
    expect(fromDisk?.tier).toBe('disk')
    expect(await bytesOf(fromDisk!)).toEqual(body.subarray(9_000))
    const whole = await store.read('https://a.test/r', '')
    expect(whole?.tier).toBe('memory')
    expect(await bytesOf(whole!)).toEqual(body)
  })

  it('never serves a memory copy of something deleted, purged or replaced on disk', async () => {
    const store = await openStore()
    await put(store, newEntry('https://a.test/d'), bodyOf(100, 1))
    expect(await store.delete('https://a.test/d')).toBe(1)
    expect(await store.read('https://a.test/d', '')).toBeUndefined()

    await put(store, newEntry('https://a.test/x', { tags: ['t'] }), bodyOf(100, 2))
    expect(await store.deleteWhere((m) => m.tags.includes('t'))).toBe(1)
    expect(await store.read('https://a.test/x', '')).toBeUndefined()

    await put(store, newEntry('https://a.test/v'), bodyOf(100, 3))
    await put(store, newEntry('https://a.test/v'), bodyOf(100, 4))
    const replaced = await store.read('https://a.test/v', '')
    expect(replaced?.tier).toBe('memory')
    expect(await bytesOf(replaced!)).toEqual(bodyOf(100, 4))

    expect(await store.clear()).toBe(1)
    expect(await store.read('https://a.test/v', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ entries: 0, memoryEntries: 0, memoryBytes: 0 })
  })

  it('does not trust a memory copy whose integrity no longer matches the disk index', async () => {
    // Two tiers sharing one disk store: a body can be in memory under an older integrity.
    const disk = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: MiB, log: () => {} })
    const memory = createMemoryTier({ maxBytes: MiB })
    const store = createTieredStore(disk, memory)
    open.push(store)
    const meta = await put(store, newEntry('https://a.test/i'), bodyOf(100, 1))
    memory.set(`https://a.test/i\u0000`, { buffer: bodyOf(100, 9), integrity: 'sha512-stale' })
    const read = await store.read('https://a.test/i', '')
    expect(read?.tier).toBe('disk')
    expect(await bytesOf(read!)).toEqual(bodyOf(100, 1))
    expect(memory.get(`https://a.test/i\u0000`)?.integrity).toBe(meta!.integrity)
  })

  it('keeps memory hits recent in the disk LRU, so hot bodies are not evicted first', async () => {
    const store = await openStore({ maxBytes: 10_000 })
    const events = recordEvents(store)
    for (let i = 1; i <= 3; i++) await put(store, newEntry(`https://a.test/${i}`), bodyOf(3000, i))
    expect((await store.read('https://a.test/1', ''))?.tier).toBe('memory')
    await put(store, newEntry('https://a.test/4'), bodyOf(3000, 4))
    expect(events.filter((e) => e.type === 'deleted')).toEqual([{ type: 'deleted', key: 'https://a.test/2', variant: '', reason: 'evicted' }])
    expect(await store.read('https://a.test/2', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ entries: 3, memoryEntries: 3, evictions: 1 })
  })

  it('drops a corrupt body on disk without putting it in memory', async () => {
    let store = await openStore()
    const meta = await put(store, newEntry('https://a.test/c'), bodyOf(2000))
    store = await reopen(store)
    const file = contentPath(dir, meta!.integrity) as string
    await writeFile(file, bodyOf(2000, 2))
    expect(await store.read('https://a.test/c', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ entries: 0, memoryEntries: 0, integrityFailures: 1 })
  })

  it('updateMeta keeps the memory copy of the body', async () => {
    const store = await openStore()
    const meta = await put(store, newEntry('https://a.test/u'), bodyOf(100))
    await store.updateMeta({ ...meta!, staleAt: meta!.staleAt + 1000 })
    expect((await store.variants('https://a.test/u'))[0].staleAt).toBe(meta!.staleAt + 1000)
    const read = await store.read('https://a.test/u', '')
    expect(read?.tier).toBe('memory')
    expect(await bytesOf(read!)).toEqual(bodyOf(100))
  })

  it('works with the memory tier disabled', async () => {
    const store = await openStore({ memoryBytes: 0 })
    await put(store, newEntry('https://a.test/n'), bodyOf(100))
    expect((await store.read('https://a.test/n', ''))?.tier).toBe('disk')
    expect((await store.read('https://a.test/n', '', { start: 0, end: 9 }))?.tier).toBe('disk')
    expect(store.stats()).toMatchObject({ entries: 1, memoryEntries: 0 })
  })

  it('forwards disk events to subscribers and stops after unsubscribe', async () => {
    const store = await openStore({ maxObjectBytes: 10 })
    const events = recordEvents(store)
    const late: string[] = []
    const unsubscribe = store.subscribe((e) => late.push(e.type))
    await put(store, newEntry('https://a.test/e'), bodyOf(10))
    unsubscribe()
    expect(await put(store, newEntry('https://a.test/too-big'), bodyOf(11))).toBeUndefined()
    await store.delete('https://a.test/e')
    expect(events.map((e) => e.type)).toEqual(['stored', 'deleted'])
    expect(late).toEqual(['stored'])
  })

  describe('memory of evicted bodies used again', () => {
    // A 1 MiB tier: slabs of 64 KiB, sixteen bodies of 4,000 bytes each.
    async function openWithTier() {
      const memory = createMemoryTier({ maxBytes: MiB, maxObjectBytes: 64 * 1024 })
      const disk = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: 10 * MiB, ...tierBodies(memory), log: () => {} })
      const store = createTieredStore(disk, memory)
      open.push(store)
      return { store, memory }
    }
    /** 3.2 MB of other bodies through the tier: fifty slabs filled, each written to disk, the oldest evicted. */
    async function churn(store: CacheStore): Promise<void> {
      for (let i = 0; i < 800; i++) await put(store, newEntry(`https://a.test/churn/${i}`), bodyOf(4000, 1000 + i))
    }

    it('a body served from memory (to a slow client, say) keeps its bytes while it is evicted and the tier reuses its slabs', async () => {
      const { store, memory } = await openWithTier()
      const body = bodyOf(4000, 42)
      await put(store, newEntry('https://a.test/slow'), body)
      const hit = store.read('https://a.test/slow', '')
      expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
      const held = (hit as { buffer: Buffer }).buffer
      await churn(store)
      // Slabs were used again (a new one for each of the fifty would be 3 MB)...
      expect(memory.allocatedSlabs).toBeLessThanOrEqual(20)
      // ...but never the one the response still reads from.
      expect(Buffer.compare(held, body)).toBe(0)
      expect(memory.has(entryId('https://a.test/slow', ''))).toBe(false)
      expect(await bytesOf((await store.read('https://a.test/slow', ''))!)).toEqual(body)
    })

    it('a body served before its disk write is done keeps its bytes after the write and the eviction', async () => {
      const { store, memory } = await openWithTier()
      const body = bodyOf(4000, 43)
      const writer = store.writer(newEntry('https://a.test/early'))
      expect(writer.write(body)).toBe(true)
      await writer.commit()
      // Not in the tier any more, not on disk yet: read from the memory the disk writer reads.
      memory.delete(entryId('https://a.test/early', ''))
      const early = store.read('https://a.test/early', '')
      expect(early).toMatchObject({ kind: 'buffer', tier: 'memory' })
      const held = (early as { buffer: Buffer }).buffer
      expect(held.buffer).toBeInstanceOf(SharedArrayBuffer)
      await churn(store)
      expect(memory.allocatedSlabs).toBeLessThanOrEqual(20)
      expect(Buffer.compare(held, body)).toBe(0)
    })
  })
})
