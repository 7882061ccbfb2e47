import { writeFile } from 'node:fs/promises'
import cacache from 'cacache'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { contentPath } from './content-file.ts'
import { createDiskStore, entryId } from './disk-store.ts'
import { createMemoryTier } from './memory-tier.ts'
import { type CacheStoreOptions, createCacheStore, createTieredStore, memoryId, tierBodies } from './tiered-store.ts'
import { opForStoreEvent } from '../manifest/recorder.ts'
import { bodyOf, bytesOf, newEntry, put, recordEvents, tempDir } from './test-support.ts'
import type { CacheStore, EntryMeta, StoreEvent } from './types.ts'
import { WAIT_GUARD_MS } from '../test-support/wait-guard.ts'

const KiB = 1024
const MiB = 1024 * KiB

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

/** A tiered store over a disk store and a memory tier of its own, both at hand to reach past the tiered store. */
async function openTiers() {
  const disk = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: MiB, log: () => {} })
  const memory = createMemoryTier({ maxBytes: MiB })
  const store = createTieredStore(disk, memory)
  open.push(store)
  return { disk, memory, store }
}

async function reopen(store: CacheStore, overrides: Partial<CacheStoreOptions> = {}): Promise<CacheStore> {
  await store.close()
  open.splice(open.indexOf(store), 1)
  return openStore(overrides)
}

describe('tiered store', () => {
  it("has its memory tier's first slabs made by the disk writer's thread, before any body needs one", async () => {
    const store = await openStore()
    // 8 MiB of memory tier: slabs of 128 KiB, two of them made ready ahead.
    // Made on the thread as it starts, which nothing announces: polled, with the guard of every poll (not vi.waitFor's 1 s).
    await vi.waitFor(() => expect(store.stats()).toMatchObject({ memoryHeldBytes: 256 * 1024, writeThreadSharedBytes: 256 * 1024 }), { timeout: WAIT_GUARD_MS })
    expect(store.stats().memorySlabsAllocatedBytes).toBe(256 * 1024)
    const body = bodyOf(6000, 5)
    await store.put(newEntry('https://a.test/first'), body)
    const hit = await store.read('https://a.test/first', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(Buffer.compare((hit as { buffer: Buffer }).buffer, body)).toBe(0)
  })

  it('keeps serving a body from memory once the disk writer has hashed it and its integrity is known', async () => {
    const store = await openStore()
    await store.drain() // past the start-up sweep, during which bodies are hashed on the main thread
    const body = bodyOf(6000, 3)
    const committed = await store.put(newEntry('https://a.test/hashed'), body)
    expect(committed?.integrity).toMatch(/^pending-/)
    await store.drain()
    expect(store.variant('https://a.test/hashed', '')?.integrity).toMatch(/^sha256-/)
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

  it('names a variant without Vary by its key alone in the memory tier, and one with Vary by its entry id: each is served from memory and dropped with its entry', async () => {
    const memory = createMemoryTier({ maxBytes: MiB, maxObjectBytes: 64 * 1024 })
    const disk = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: 10 * MiB, ...tierBodies(memory), log: () => {} })
    const store = createTieredStore(disk, memory)
    open.push(store)
    const asked: string[] = []
    const lend = memory.lend.bind(memory)
    memory.lend = (id) => {
      asked.push(id)
      return lend(id)
    }
    await put(store, newEntry('https://a.test/plain'), bodyOf(3000, 1))
    await put(store, newEntry('https://a.test/varied', { variant: 'gzip', headers: { 'content-type': 'text/plain', vary: 'accept-encoding' } }), bodyOf(3000, 2))
    expect(store.read('https://a.test/plain', '')).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(store.read('https://a.test/varied', 'gzip')).toMatchObject({ kind: 'buffer', tier: 'memory' })
    // A hit asks the tier with the key the entry's metadata holds, not an id joined for it.
    expect(asked).toEqual(['https://a.test/plain', entryId('https://a.test/varied', 'gzip')])
    expect(memory.has('https://a.test/plain')).toBe(true)
    await store.delete('https://a.test/plain')
    await store.delete('https://a.test/varied')
    expect(memory.size).toBe(0)
    expect(store.read('https://a.test/plain', '')).toBeUndefined()
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
    const { disk, memory, store } = await openTiers()
    const meta = await put(store, newEntry('https://a.test/i'), bodyOf(100, 1))
    memory.set(`https://a.test/i`, { buffer: bodyOf(100, 9), integrity: 'sha512-stale' })
    const read = await store.read('https://a.test/i', '')
    expect(read?.tier).toBe('disk')
    expect(await bytesOf(read!)).toEqual(bodyOf(100, 1))
    expect(memory.get(`https://a.test/i`)?.integrity).toBe(meta!.integrity)
  })

  it("lends a hit the memory copy its content record names, only while that copy is still the variant's own in the tier", async () => {
    const { disk, memory, store } = await openTiers()
    const meta = await put(store, newEntry('https://a.test/a'), bodyOf(100, 1))
    const first = await store.read('https://a.test/a', '')
    expect(first?.tier).toBe('memory')
    first!.kind === 'buffer' && first!.loan?.giveBack()
    // The tier's copy replaced (same integrity, other bytes, to tell them apart): the next hit gets the new one.
    memory.set('https://a.test/a', { buffer: bodyOf(100, 9), integrity: meta!.integrity })
    const second = await store.read('https://a.test/a', '')
    expect(second?.tier).toBe('memory')
    expect(await bytesOf(second!)).toEqual(bodyOf(100, 9))
    // Two keys with the same body share one content record: each is lent its own copy only.
    await put(store, newEntry('https://a.test/b'), bodyOf(100, 5))
    await put(store, newEntry('https://a.test/c'), bodyOf(100, 5))
    await store.drain()
    expect(disk.touchContent('https://a.test/b', '')).toBe(disk.touchContent('https://a.test/c', ''))
    expect((await store.read('https://a.test/c', ''))?.tier).toBe('memory')
    expect((await store.read('https://a.test/b', ''))?.tier).toBe('memory')
    memory.delete('https://a.test/b')
    const b = await store.read('https://a.test/b', '')
    expect(b?.tier).toBe('disk')
    expect(await bytesOf(b!)).toEqual(bodyOf(100, 5))
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
      expect(memory.has(memoryId('https://a.test/slow', ''))).toBe(false)
      expect(await bytesOf((await store.read('https://a.test/slow', ''))!)).toEqual(body)
    })

    it('a body served before its disk write is done keeps its bytes after the write and the eviction', async () => {
      const { store, memory } = await openWithTier()
      const body = bodyOf(4000, 43)
      const writer = store.writer(newEntry('https://a.test/early'))
      expect(writer.write(body)).toBe(true)
      await writer.commit()
      // Not in the tier any more, not on disk yet: read from the memory the disk writer reads.
      memory.delete(memoryId('https://a.test/early', ''))
      const early = store.read('https://a.test/early', '')
      expect(early).toMatchObject({ kind: 'buffer', tier: 'memory' })
      const held = (early as { buffer: Buffer }).buffer
      expect(held.buffer).toBeInstanceOf(SharedArrayBuffer)
      await churn(store)
      expect(memory.allocatedSlabs).toBeLessThanOrEqual(20)
      expect(Buffer.compare(held, body)).toBe(0)
    })

    it('a body lent and given back once sent lets its slab be used again, from memory and before its disk write is done', async () => {
      const { store, memory } = await openWithTier()
      const body = bodyOf(4000, 44)
      await put(store, newEntry('https://a.test/done'), body)
      const writer = store.writer(newEntry('https://a.test/early'))
      expect(writer.write(body)).toBe(true)
      await writer.commit()
      memory.delete(memoryId('https://a.test/early', ''))
      const hits = [store.read('https://a.test/done', ''), store.read('https://a.test/early', '')] as Array<{ buffer: Buffer; loan?: { giveBack(): void } }>
      for (const hit of hits) {
        expect(hit.loan).toBeDefined()
        hit.loan!.giveBack()
      }
      await churn(store)
      expect(memory.allocatedSlabs).toBeLessThanOrEqual(20)
      // Their memory holds other bodies now.
      for (const hit of hits) expect(Buffer.compare(hit.buffer, body)).not.toBe(0)
      // Peers' reads are not lent (their slab is never used again): their reader never says when it is done.
      await put(store, newEntry('https://a.test/peer'), bodyOf(4000, 45))
      const [peer] = await store.readEntries!([{ key: 'https://a.test/peer', variant: '' }])
      expect(peer?.body).toMatchObject({ kind: 'buffer', tier: 'memory' })
      expect(peer?.body).not.toHaveProperty('loan')
    })
  })
})

// Bodies the disk writer has no room for, kept in the memory tier only: served from memory,
// seen by lookups and purges, gone with their memory copy, never on disk, never announced as held.

/** A store whose disk writer queues one job at most: one commit fills it until the writer's thread answers. */
async function openTiny(overrides: Partial<CacheStoreOptions> = {}): Promise<CacheStore> {
  const store = await openStore({ writeQueueJobs: 1, ...overrides })
  // Past the start-up sweep: the queue is empty.
  await store.drain()
  return store
}

let fillers = 0
/**
 * Commits each body while the write queue is full: a first commit fills the queue of one job,
 * and the others, committed in the same turn of the event loop, find it full (the writer's
 * thread answers in a later turn).
 */
async function whileQueueFull(store: CacheStore, bodies: Array<[url: string, body: Buffer]>): Promise<Array<EntryMeta | undefined>> {
  const filler = store.put(newEntry(`https://a.test/filler/${++fillers}`), bodyOf(100, fillers))
  const kept = bodies.map(([url, body]) => store.put(newEntry(url), body))
  await filler
  const metas = await Promise.all(kept)
  // The filler written: the queue has room again.
  await store.drain()
  return metas
}

/** The manifest ops this node's events become. */
function opsOf(events: StoreEvent[]) {
  return events.map((e) => opForStoreEvent(e, 'n1')).filter((op) => op !== undefined)
}

describe('memory-only entries', () => {
  it('keeps a body the disk writer has no room for in memory only: a memory hit, never written, never announced, gone after a restart', async () => {
    const store = await openTiny()
    const events = recordEvents(store)
    const body = bodyOf(5000, 3)
    const filler = store.put(newEntry('https://a.test/first'), bodyOf(100, 1))
    expect(store.admits('https://a.test/kept', body.length)).toBe('memory-only')
    const kept = store.put(newEntry('https://a.test/kept'), body)
    await filler
    const meta = await kept
    expect(meta?.integrity).toMatch(/^pending-memory-/)
    const hit = store.read('https://a.test/kept', '')
    expect(hit).toMatchObject({ kind: 'buffer', tier: 'memory' })
    expect(Buffer.compare(await bytesOf(hit as Exclude<typeof hit, undefined | Promise<unknown>>), body)).toBe(0)
    expect(store.stats()).toMatchObject({ entries: 2, writesMemoryOnly: 1, writesSkipped: 0 })
    expect(events.filter((e) => e.type === 'write-skipped')).toEqual([{ type: 'write-skipped', key: 'https://a.test/kept', reason: 'memory-only' }])
    await store.drain()
    // On disk and in the manifest: only the body that had room.
    expect(Object.keys(await cacache.ls(dir))).toEqual([entryId('https://a.test/first', '')])
    expect(opsOf(events).map((op) => op.type === 'stored' && op.entry.key)).toEqual(['https://a.test/first'])
    // Still memory-only once the queue has room again (written to disk never).
    expect(store.variant('https://a.test/kept', '')?.integrity).toMatch(/^pending-memory-/)
    const again = await reopen(store, { writeQueueJobs: 1 })
    expect(again.variant('https://a.test/kept', '')).toBeUndefined()
    expect(again.variant('https://a.test/first', '')).toBeDefined()
  })

  it('a purge by prefix or by URL removes a memory-only entry and its memory copy, announcing nothing', async () => {
    const store = await openTiny()
    await whileQueueFull(store, [
      ['https://a.test/p/one', bodyOf(3000, 1)],
      ['https://a.test/two', bodyOf(3000, 2)],
    ])
    const events = recordEvents(store)
    expect(store.variant('https://a.test/p/one', '')?.integrity).toMatch(/^pending-memory-/)
    expect(await store.deleteWhere((m) => m.url.startsWith('https://a.test/p/'))).toBe(1)
    expect(await store.delete('https://a.test/two')).toBe(1)
    await store.drain()
    for (const url of ['https://a.test/p/one', 'https://a.test/two']) {
      expect(store.variant(url, '')).toBeUndefined()
      expect(store.read(url, '')).toBeUndefined()
    }
    expect(store.stats()).toMatchObject({ entries: 1, memoryEntries: 1 })
    expect(events.filter((e) => e.type === 'deleted')).toEqual([
      { type: 'deleted', key: 'https://a.test/p/one', variant: '', reason: 'purged', memoryOnly: true },
      { type: 'deleted', key: 'https://a.test/two', variant: '', reason: 'purged', memoryOnly: true },
    ])
    expect(opsOf(events)).toEqual([])
  })

  it('evicting a memory-only body from the memory tier takes its entry out of the index: the next read is a miss, not an error', async () => {
    // A tier of 256 KiB: 20 KiB bodies stored on disk and kept in memory soon push the first out.
    const store = await openTiny({ memoryBytes: 256 * KiB })
    const [kept] = await whileQueueFull(store, [['https://a.test/evicted', bodyOf(20 * KiB, 1)]])
    expect(kept?.integrity).toMatch(/^pending-memory-/)
    const events = recordEvents(store)
    for (let i = 0; i < 30; i++) await put(store, newEntry(`https://a.test/other/${i}`), bodyOf(20 * KiB, 100 + i))
    expect(store.variant('https://a.test/evicted', '')).toBeUndefined()
    expect(store.varyOf('https://a.test/evicted')).toEqual([])
    expect(store.read('https://a.test/evicted', '')).toBeUndefined()
    expect(events).toContainEqual({ type: 'deleted', key: 'https://a.test/evicted', variant: '', reason: 'evicted', memoryOnly: true })
    expect(store.stats()).toMatchObject({ entries: 31, integrityFailures: 0, writeFailures: 0 })
    expect(opsOf(events).filter((op) => op.type === 'deleted')).toEqual([])
  })

  it('a memory-only entry whose memory copy is gone is never served: a read drops it', async () => {
    const memory = createMemoryTier({ maxBytes: 8 * MiB })
    const disk = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: 10 * MiB, writeQueueJobs: 1, ...tierBodies(memory), log: () => {} })
    const store = createTieredStore(disk, memory)
    open.push(store)
    await store.drain()
    await whileQueueFull(store, [['https://a.test/lost', bodyOf(3000, 5)]])
    // Let go of without telling the store (delete() is not an eviction).
    expect(memory.delete(memoryId('https://a.test/lost', ''))).toBe(true)
    expect(store.read('https://a.test/lost', '')).toBeUndefined()
    expect(store.variant('https://a.test/lost', '')).toBeUndefined()
  })

  it('a memory-only body replacing one on disk takes the disk copy and its holding back', async () => {
    const store = await openTiny()
    const before = await put(store, newEntry('https://a.test/r'), bodyOf(3000, 1))
    expect(before?.integrity).toMatch(/^sha256-/)
    const events = recordEvents(store)
    const [after] = await whileQueueFull(store, [['https://a.test/r', bodyOf(3000, 2)]])
    expect(after?.integrity).toMatch(/^pending-memory-/)
    expect(Buffer.compare(await bytesOf((await store.read('https://a.test/r', ''))!), bodyOf(3000, 2))).toBe(0)
    expect(events).toContainEqual({ type: 'deleted', key: 'https://a.test/r', variant: '', reason: 'memory-only' })
    expect(opsOf(events)).toContainEqual({ type: 'deleted', nodeId: 'n1', key: 'https://a.test/r', variant: '' })
    await store.drain()
    expect(await cacache.get.info(dir, entryId('https://a.test/r', ''))).toBeNull()
  })

  it('gives a peer nothing for a memory-only body', async () => {
    const store = await openTiny()
    await whileQueueFull(store, [['https://a.test/mine', bodyOf(3000, 1)]])
    await put(store, newEntry('https://a.test/held'), bodyOf(3000, 2))
    const [mine, held] = await store.readEntries!([
      { key: 'https://a.test/mine', variant: '' },
      { key: 'https://a.test/held', variant: '' },
    ])
    expect(mine).toBeUndefined()
    expect(held).toBeDefined()
    // Still there for this node's own clients.
    expect(store.read('https://a.test/mine', '')).toMatchObject({ tier: 'memory' })
  })

  it('gives a peer each body with the metadata it belongs to, and body sizes without the metadata', async () => {
    const store = await openTiny()
    const first = await put(store, newEntry('https://a.test/entry'), bodyOf(3000, 1))
    expect(store.bodySize!('https://a.test/entry', '')).toBe(3000)
    expect(store.bodySize!('https://a.test/none', '')).toBeUndefined()
    const [entry, none] = await store.readEntries!([
      { key: 'https://a.test/entry', variant: '' },
      { key: 'https://a.test/none', variant: '' },
    ])
    expect(none).toBeUndefined()
    expect(entry!.meta).toMatchObject({ key: 'https://a.test/entry', integrity: first!.integrity, size: 3000 })
    expect(entry!.body).toMatchObject({ kind: 'buffer', buffer: bodyOf(3000, 1) })
    expect(entry!.replaced).toBeFalsy()
    // Replaced: the new body with its own metadata.
    const second = await put(store, newEntry('https://a.test/entry'), bodyOf(2000, 2))
    const [again] = await store.readEntries!([{ key: 'https://a.test/entry', variant: '' }])
    expect(again!.meta).toMatchObject({ integrity: second!.integrity, size: 2000 })
    expect(again!.body).toMatchObject({ kind: 'buffer', buffer: bodyOf(2000, 2) })
  })

  it('a revalidation updates a memory-only entry in memory, writing nothing and announcing nothing', async () => {
    const store = await openTiny()
    const [meta] = await whileQueueFull(store, [['https://a.test/reval', bodyOf(3000, 1)]])
    await store.drain()
    const events = recordEvents(store)
    await store.updateMeta({ ...meta!, headers: { etag: '"2"' }, staleAt: meta!.staleAt + 1000 })
    await store.drain()
    expect(store.variant('https://a.test/reval', '')).toMatchObject({ headers: { etag: '"2"' }, integrity: meta!.integrity })
    expect(store.read('https://a.test/reval', '')).toMatchObject({ tier: 'memory' })
    expect(await cacache.get.info(dir, entryId('https://a.test/reval', ''))).toBeNull()
    expect(opsOf(events)).toEqual([])
  })

  it('takes nothing of the disk budget: evictions to fit the disk leave memory-only entries alone', async () => {
    const store = await openTiny({ maxBytes: 8 * KiB })
    await whileQueueFull(store, [['https://a.test/in-memory', bodyOf(3000, 1)]])
    for (let i = 0; i < 4; i++) await put(store, newEntry(`https://a.test/disk/${i}`), bodyOf(3000, 10 + i))
    // The least recently used entry, yet still there: the disk evicted its own.
    expect(store.variant('https://a.test/in-memory', '')).toBeDefined()
    expect(store.stats().bytes).toBeLessThanOrEqual(8 * KiB)
  })

  it('does not store a body too large for the memory tier while the queue is full', async () => {
    // A 256 KiB tier keeps bodies of 64 KiB at most.
    const store = await openTiny({ memoryBytes: 256 * KiB })
    const filler = store.put(newEntry('https://a.test/filler'), bodyOf(100, 1))
    expect(store.admits('https://a.test/large', 100 * KiB)).toBe(false)
    const large = store.put(newEntry('https://a.test/large'), bodyOf(100 * KiB, 2))
    await filler
    expect(await large).toBeUndefined()
    expect(store.variant('https://a.test/large', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ writesSkipped: 2, writesMemoryOnly: 0 })
  })

  it("judges expiry by the caller's clock reading when given one, for metadata and for a memory hit", async () => {
    const store = await openStore()
    const deleteAt = Date.now() + 3_600_000
    const body = bodyOf(100, 2)
    await store.put(newEntry('https://a.test/dated', { deleteAt }), body)
    expect(store.variant('https://a.test/dated', '', deleteAt - 1)).toBeDefined()
    const before = store.read('https://a.test/dated', '', undefined, deleteAt - 1)
    expect(before).toMatchObject({ kind: 'buffer', tier: 'memory' })
    ;(before as { loan?: { giveBack(): void } }).loan?.giveBack()
    // Past deleteAt by the caller's clock (an hour ahead of this one): gone, from memory as from the index.
    expect(store.read('https://a.test/dated', '', undefined, deleteAt)).toBeUndefined()
    expect(store.variant('https://a.test/dated', '')).toBeUndefined()
  })

  it("judges expiry of metadata by the caller's clock reading", async () => {
    const store = await openStore()
    const deleteAt = Date.now() + 3_600_000
    await store.put(newEntry('https://a.test/meta', { deleteAt }), bodyOf(100, 3))
    expect(store.variant('https://a.test/meta', '', deleteAt)).toBeUndefined()
    expect(store.variant('https://a.test/meta', '')).toBeUndefined()
  })
})

describe('second-request disk admission', () => {
  it("keeps a client's first fill in memory only and writes a populate's fill at once", async () => {
    const store = await openStore({ diskAdmission: 'second-request' })
    await put(store, newEntry('https://a.example/client'), bodyOf(100))
    await put(store, newEntry('https://a.example/warmed', { via: 'populate' }), bodyOf(100, 2))
    await store.drain()
    expect(store.stats()).toMatchObject({ entries: 2, writesMemoryOnly: 1 })
    const listed = Object.values(await cacache.ls(dir)).map((e) => e.key.split('\u0000')[0])
    expect(listed).toEqual(['https://a.example/warmed'])
  })
})
