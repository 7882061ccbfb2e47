// Bodies the disk writer has no room for, kept in the memory tier only: served
// from memory, seen by lookups and purges, gone with their memory copy, never
// on disk and never announced as held.

import cacache from 'cacache'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { opForStoreEvent } from '../manifest/recorder.ts'
import { createDiskStore, entryId } from './disk-store.ts'
import { createMemoryTier } from './memory-tier.ts'
import { type CacheStoreOptions, createCacheStore, createTieredStore, tierBodies } from './tiered-store.ts'
import { bodyOf, bytesOf, newEntry, put, recordEvents, tempDir } from './test-support.ts'
import type { CacheStore, EntryMeta, StoreEvent } from './types.ts'

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

/** A store whose disk writer queues one job at most: one commit fills it until the writer's thread answers. */
async function openStore(overrides: Partial<CacheStoreOptions> = {}): Promise<CacheStore> {
  const store = await createCacheStore({ dir, maxBytes: 100 * MiB, memoryBytes: 8 * MiB, maxObjectBytes: 10 * MiB, writeQueueJobs: 1, log: () => {}, ...overrides })
  open.push(store)
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
    const store = await openStore()
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
    await store.close()
    open.splice(open.indexOf(store), 1)
    const again = await openStore()
    expect(again.variant('https://a.test/kept', '')).toBeUndefined()
    expect(again.variant('https://a.test/first', '')).toBeDefined()
  })

  it('a purge by prefix or by URL removes a memory-only entry and its memory copy, announcing nothing', async () => {
    const store = await openStore()
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
    const store = await openStore({ memoryBytes: 256 * KiB })
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
    expect(memory.delete(entryId('https://a.test/lost', ''))).toBe(true)
    expect(store.read('https://a.test/lost', '')).toBeUndefined()
    expect(store.variant('https://a.test/lost', '')).toBeUndefined()
  })

  it('a memory-only body replacing one on disk takes the disk copy and its holding back', async () => {
    const store = await openStore()
    const before = await put(store, newEntry('https://a.test/r'), bodyOf(3000, 1))
    expect(before?.integrity).toMatch(/^sha512-/)
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
    const store = await openStore()
    await whileQueueFull(store, [['https://a.test/mine', bodyOf(3000, 1)]])
    await put(store, newEntry('https://a.test/held'), bodyOf(3000, 2))
    const [mine, held] = await store.readMany!([
      { key: 'https://a.test/mine', variant: '' },
      { key: 'https://a.test/held', variant: '' },
    ])
    expect(mine).toBeUndefined()
    expect(held).toBeDefined()
    // Still there for this node's own clients.
    expect(store.read('https://a.test/mine', '')).toMatchObject({ tier: 'memory' })
  })

  it('a revalidation updates a memory-only entry in memory, writing nothing and announcing nothing', async () => {
    const store = await openStore()
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
    const store = await openStore({ maxBytes: 8 * KiB })
    await whileQueueFull(store, [['https://a.test/in-memory', bodyOf(3000, 1)]])
    for (let i = 0; i < 4; i++) await put(store, newEntry(`https://a.test/disk/${i}`), bodyOf(3000, 10 + i))
    // The least recently used entry, yet still there: the disk evicted its own.
    expect(store.variant('https://a.test/in-memory', '')).toBeDefined()
    expect(store.stats().bytes).toBeLessThanOrEqual(8 * KiB)
  })

  it('does not store a body too large for the memory tier while the queue is full', async () => {
    // A 256 KiB tier keeps bodies of 64 KiB at most.
    const store = await openStore({ memoryBytes: 256 * KiB })
    const filler = store.put(newEntry('https://a.test/filler'), bodyOf(100, 1))
    expect(store.admits('https://a.test/large', 100 * KiB)).toBe(false)
    const large = store.put(newEntry('https://a.test/large'), bodyOf(100 * KiB, 2))
    await filler
    expect(await large).toBeUndefined()
    expect(store.variant('https://a.test/large', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ writesSkipped: 2, writesMemoryOnly: 0 })
  })
})
