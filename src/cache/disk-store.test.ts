import { createHash } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import cacache from 'cacache'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { contentPath } from './content-file.ts'
import { type DiskStore, type DiskStoreOptions, createDiskStore, entryId } from './disk-store.ts'
import { sameHiddenClass } from '../test-support/hidden-class.ts'
import { decideStore } from '../proxy/policy.ts'
import type { EntryMeta, NewEntry } from './types.ts'
import { bodyOf, bytesOf, contentBytesOnDisk, filesUnder, newEntry, put, recordEvents, sri, tempDir } from './test-support.ts'

const MiB = 1024 * 1024

let dir: string
let cleanup: () => Promise<void>
const open: DiskStore[] = []
let logs: Record<string, unknown>[]

beforeEach(async () => {
  ;({ dir, cleanup } = await tempDir())
  logs = []
})

afterEach(async () => {
  for (const store of open.splice(0)) await store.close()
  await cleanup()
})

async function openStore(overrides: Partial<DiskStoreOptions> = {}): Promise<DiskStore> {
  const store = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: 10 * MiB, log: (obj) => logs.push(obj), ...overrides })
  open.push(store)
  return store
}

async function reopen(store: DiskStore, overrides: Partial<DiskStoreOptions> = {}): Promise<DiskStore> {
  await store.close()
  open.splice(open.indexOf(store), 1)
  return openStore(overrides)
}

async function readBody(store: DiskStore, url: string, variant = ''): Promise<Buffer | undefined> {
  const body = await store.read(url, variant)
  return body && bytesOf(body)
}

async function corruptContent(integrity: string, mutate: (bytes: Buffer) => Buffer): Promise<void> {
  const file = contentPath(dir, integrity) as string
  await writeFile(file, mutate(await readFile(file)))
}

describe('disk store', () => {
  it('writes, commits and reads back small and large bodies', async () => {
    const store = await openStore()
    const small = bodyOf(1000)
    const large = bodyOf(3 * MiB, 2)
    const events = recordEvents(store)

    const meta = await put(store, newEntry('https://a.test/small'), small)
    expect(meta).toMatchObject({ key: 'https://a.test/small', size: 1000, integrity: sri(small) })
    const metaLarge = await put(store, newEntry('https://a.test/large'), large)
    expect(metaLarge?.size).toBe(large.length)
    expect(events.filter((e) => e.type === 'stored')).toHaveLength(2)

    const smallBody = await store.read('https://a.test/small', '')
    expect(smallBody?.kind).toBe('buffer')
    expect(smallBody?.tier).toBe('disk')
    expect(await bytesOf(smallBody!)).toEqual(small)

    const largeBody = await store.read('https://a.test/large', '')
    expect(largeBody?.kind).toBe('stream')
    expect((await bytesOf(largeBody!)).equals(large)).toBe(true)
    // Second read of a verified large body: a plain file stream.
    expect((await bytesOf((await store.read('https://a.test/large', ''))!)).equals(large)).toBe(true)

    expect(await store.variants('https://a.test/small')).toEqual([meta])
    expect(await store.read('https://a.test/none', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ entries: 2, bytes: 1000 + 3 * MiB })

    // The directory is a regular cacache: its own reader agrees with us.
    const viaCacache = await cacache.get(dir, entryId('https://a.test/small', ''))
    expect(viaCacache.data.equals(small)).toBe(true)
    expect(viaCacache.integrity).toBe(meta!.integrity)
  })

  it('a reader abandoning a large stream does not disturb other readers', async () => {
    const store = await openStore()
    const large = bodyOf(3 * MiB)
    const small = bodyOf(1000, 2)
    await put(store, newEntry('https://a.test/l'), large)
    await put(store, newEntry('https://a.test/s'), small)
    for (let i = 0; i < 5; i++) {
      const abandoned = await store.read('https://a.test/l', '')
      if (abandoned?.kind !== 'stream') throw new Error('expected a stream')
      await new Promise<void>((resolve) => abandoned.stream.once('data', () => resolve()))
      abandoned.stream.destroy()
      const [a, b] = await Promise.all([readBody(store, 'https://a.test/l'), readBody(store, 'https://a.test/s')])
      expect(a?.equals(large)).toBe(true)
      expect(b).toEqual(small)
    }
    expect(store.stats().integrityFailures).toBe(0)
  })

  it('keeps the metadata of every stored entry in one hidden class', async () => {
    // Each stored entry's metadata is frozen and kept (decoded for the hottest entries, and by
    // the disk writer's queue): one hidden class of its own each would cost more than its fields.
    const store = await openStore()
    const metas: EntryMeta[] = []
    for (let i = 0; i < 40; i++) {
      const meta = await put(store, newEntry(`https://a.test/${i}`, { headers: { 'content-type': 'text/plain', etag: `"${i}"` } }), bodyOf(100, i))
      metas.push(meta!)
    }
    const [a, b] = metas.slice(-2) as [EntryMeta, EntryMeta]
    expect(Object.isFrozen(b)).toBe(true)
    expect(sameHiddenClass(a, b)).toBe(true)
  })

  it('stores an empty body', async () => {
    const store = await openStore()
    const writer = store.writer(newEntry('https://a.test/empty'))
    const meta = await writer.commit()
    expect(meta?.size).toBe(0)
    expect(await readBody(store, 'https://a.test/empty')).toEqual(Buffer.alloc(0))
  })

  it('keeps several variants under one key', async () => {
    const store = await openStore()
    await put(store, newEntry('https://a.test/v', { variant: 'gzip' }), bodyOf(10, 1))
    await put(store, newEntry('https://a.test/v', { variant: 'br' }), bodyOf(10, 2))
    expect((await store.variants('https://a.test/v')).map((m) => m.variant).sort()).toEqual(['br', 'gzip'])
    expect(await readBody(store, 'https://a.test/v', 'br')).toEqual(bodyOf(10, 2))
  })

  it('abort leaves nothing behind, also after a restart', async () => {
    let store = await openStore()
    for (const size of [5000, 3 * MiB]) {
      const writer = store.writer(newEntry(`https://a.test/aborted-${size}`))
      const body = bodyOf(size)
      for (let offset = 0; offset < size; offset += 64 * 1024) expect(writer.write(body.subarray(offset, offset + 64 * 1024))).toBe(true)
      writer.abort(new Error('client went away'))
      writer.abort() // twice is fine
      expect(await writer.commit()).toBeUndefined()
      expect(writer.write(Buffer.from('more'))).toBe(false)
    }
    expect(await store.variants('https://a.test/aborted-5000')).toEqual([])
    expect((await store.list()).total).toBe(0)
    store = await reopen(store)
    expect((await store.list()).total).toBe(0)
    expect(await filesUnder(dir)).toEqual([])
    expect(store.stats().writeFailures).toBe(0)
  })

  it('stores nothing for a body over the per-object limit', async () => {
    const store = await openStore({ maxObjectBytes: 1000 })
    const writer = store.writer(newEntry('https://a.test/big'))
    expect(writer.write(bodyOf(600))).toBe(true)
    expect(writer.write(bodyOf(600))).toBe(false)
    expect(writer.write(bodyOf(1))).toBe(false)
    expect(await writer.commit()).toBeUndefined()
    expect(await store.variants('https://a.test/big')).toEqual([])
    await store.close()
    expect(await filesUnder(dir)).toEqual([])
    expect(store.stats()).toMatchObject({ entries: 0, bytes: 0, writeFailures: 0 })
    // Exactly at the limit is allowed.
    const again = await openStore({ maxObjectBytes: 1000 })
    expect(await put(again, newEntry('https://a.test/exact'), bodyOf(1000))).toBeDefined()
  })

  it('keeps entries, metadata and listing order across a restart', async () => {
    let clock = Date.now()
    let store = await openStore({ now: () => clock })
    const metas = []
    // After a restart the order comes from the index's commit times, in milliseconds: one commit per millisecond.
    for (let i = 0; i < 3; i++) {
      metas.push(await put(store, newEntry(`https://a.test/${i}`, { headers: { etag: `"${i}"` }, tags: [`t${i}`] }), bodyOf(100 + i, i)))
      clock += 1
    }
    await put(store, newEntry('https://a.test/large'), bodyOf(2 * MiB, 9))
    store = await reopen(store)
    expect(store.stats()).toMatchObject({ entries: 4, bytes: 303 + 2 * MiB })
    expect(await store.variants('https://a.test/1')).toEqual([metas[1]])
    expect(await readBody(store, 'https://a.test/2')).toEqual(bodyOf(102, 2))
    expect((await readBody(store, 'https://a.test/large'))?.equals(bodyOf(2 * MiB, 9))).toBe(true)
    expect((await store.list()).entries.map((e) => e.url)).toEqual(['https://a.test/large', 'https://a.test/2', 'https://a.test/1', 'https://a.test/0'])
  })

  it('drops expired entries on access and at start', async () => {
    let clock = Date.now()
    const now = () => clock
    let store = await openStore({ now })
    const events = recordEvents(store)
    await put(store, newEntry('https://a.test/old', { deleteAt: clock - 1 }), bodyOf(10))
    expect(await store.variants('https://a.test/old')).toEqual([])
    expect(events).toContainEqual({ type: 'deleted', key: 'https://a.test/old', variant: '', reason: 'expired' })

    const soonAt = clock + 150
    await put(store, newEntry('https://a.test/soon', { deleteAt: soonAt }), bodyOf(20))
    await put(store, newEntry('https://a.test/keep'), bodyOf(30))
    // Still there at its deleteAt's millisecond; reopened once the clock has passed it.
    clock = soonAt - 1
    store = await reopen(store, { now })
    expect(store.stats().entries).toBe(2)
    clock = soonAt
    store = await reopen(store, { now })
    expect(store.stats().entries).toBe(1)
    await store.close() // lets the start-up clean-up finish
    expect(await filesUnder(path.join(dir, 'content-v2'))).toHaveLength(1)
  })

  it('never serves a corrupt small body: drops it, counts it, and accepts a new write', async () => {
    const store = await openStore()
    const body = bodyOf(5000)
    const events = recordEvents(store)
    const meta = await put(store, newEntry('https://a.test/c'), body)
    await corruptContent(meta!.integrity, (bytes) => {
      bytes[100] ^= 0xff
      return bytes
    })
    expect(await store.read('https://a.test/c', '')).toBeUndefined()
    expect(await store.variants('https://a.test/c')).toEqual([])
    expect(store.stats()).toMatchObject({ integrityFailures: 1, entries: 0, bytes: 0 })
    expect(events).toContainEqual({ type: 'integrity-failure', key: 'https://a.test/c', variant: '' })
    expect(events).toContainEqual({ type: 'deleted', key: 'https://a.test/c', variant: '', reason: 'corrupt' })
    expect(logs.some((l) => l.msg === 'cache body failed its integrity check')).toBe(true)

    expect(await put(store, newEntry('https://a.test/c'), body)).toBeDefined()
    expect(await readBody(store, 'https://a.test/c')).toEqual(body)
  })

  it('notices corruption after a verified read (the file changed since)', async () => {
    const store = await openStore()
    const body = bodyOf(5000)
    const meta = await put(store, newEntry('https://a.test/c'), body)
    expect(await readBody(store, 'https://a.test/c')).toEqual(body)
    await corruptContent(meta!.integrity, (bytes) => {
      bytes[0] ^= 1
      return bytes
    })
    expect(await store.read('https://a.test/c', '')).toBeUndefined()
    expect(store.stats().integrityFailures).toBe(1)
  })

  it('errors a corrupt large stream at its end and drops the entry', async () => {
    let store = await openStore()
    const body = bodyOf(3 * MiB)
    const meta = await put(store, newEntry('https://a.test/big'), body)
    // Restart: the new process has not verified the file yet.
    store = await reopen(store)
    await corruptContent(meta!.integrity, (bytes) => {
      bytes[2 * MiB] ^= 0xff
      return bytes
    })
    const read = await store.read('https://a.test/big', '')
    expect(read?.kind).toBe('stream')
    await expect(bytesOf(read!)).rejects.toMatchObject({ code: 'EINTEGRITY' })
    expect(await store.variants('https://a.test/big')).toEqual([])
    expect(store.stats().integrityFailures).toBe(1)
    // A truncated file is caught before any byte is served.
    const again = await put(store, newEntry('https://a.test/big'), body)
    store = await reopen(store)
    await corruptContent(again!.integrity, (bytes) => bytes.subarray(0, 1000))
    expect(await store.read('https://a.test/big', '')).toBeUndefined()
  })

  it('treats a missing content file as corruption', async () => {
    const store = await openStore()
    const meta = await put(store, newEntry('https://a.test/m'), bodyOf(100))
    await rm(contentPath(dir, meta!.integrity) as string)
    expect(await store.read('https://a.test/m', '')).toBeUndefined()
    expect(await store.variants('https://a.test/m')).toEqual([])
    expect(store.stats()).toMatchObject({ entries: 0, integrityFailures: 1 })
  })

  it('notices a content file deleted or replaced after it was read (and kept open)', async () => {
    const store = await openStore()
    const meta = await put(store, newEntry('https://a.test/gone'), bodyOf(100))
    expect(await readBody(store, 'https://a.test/gone')).toEqual(bodyOf(100))
    await rm(contentPath(dir, meta!.integrity) as string)
    expect(await store.read('https://a.test/gone', '')).toBeUndefined()

    const body = bodyOf(300, 2)
    const replaced = await put(store, newEntry('https://a.test/swapped'), body)
    expect(await readBody(store, 'https://a.test/swapped')).toEqual(body)
    // Another file renamed over it: same size, same mtime window, new inode, wrong bytes.
    const file = contentPath(dir, replaced!.integrity) as string
    await writeFile(`${file}.new`, bodyOf(300, 3))
    await rename(`${file}.new`, file)
    expect(await store.read('https://a.test/swapped', '')).toBeUndefined()
    expect(store.stats().integrityFailures).toBe(2)
  })

  it('reads many small bodies on the reader thread: hashes those not seen intact, drops corrupt and missing ones', async () => {
    let store = await openStore()
    const urls = ['https://a.test/m0', 'https://a.test/m1', 'https://a.test/m2', 'https://a.test/m3']
    const metas: EntryMeta[] = []
    for (let i = 0; i < urls.length; i++) metas.push((await put(store, newEntry(urls[i]!), bodyOf(4000 + i, i + 1)))!)
    store = await reopen(store) // nothing verified in this process yet: every file is hashed
    // Same size, one byte changed: only the hash can tell.
    await corruptContent(metas[1]!.integrity, (bytes) => {
      bytes[7] ^= 0xff
      return bytes
    })
    await rm(contentPath(dir, metas[2]!.integrity) as string)
    const events = recordEvents(store)
    const items = [...urls, 'https://a.test/none'].map((key) => ({ key, variant: '' }))
    const bodies = (await store.readEntries(items)).map((e) => e?.body)
    expect(bodies.map((b) => (b?.kind === 'buffer' ? b.buffer : b))).toEqual([bodyOf(4000, 1), undefined, undefined, bodyOf(4003, 4), undefined])
    expect(store.stats()).toMatchObject({ integrityFailures: 2, entries: 2 })
    expect(events).toContainEqual({ type: 'deleted', key: urls[1], variant: '', reason: 'corrupt' })
    expect(events).toContainEqual({ type: 'deleted', key: urls[2], variant: '', reason: 'corrupt' })

    // Seen intact now; changed in place afterwards (a new mtime): hashed again, and refused.
    await corruptContent(metas[3]!.integrity, (bytes) => {
      bytes[0] ^= 1
      return bytes
    })
    expect((await store.readEntries([{ key: urls[0]!, variant: '' }, { key: urls[3]!, variant: '' }])).map((e) => e?.body.kind)).toEqual(['buffer', undefined])
    expect(store.stats().integrityFailures).toBe(3)
  })

  it('reads a small body at once only while its verified file is unchanged, opening it when needed', async () => {
    const store = await openStore()
    const body = bodyOf(5000)
    const meta = await put(store, newEntry('https://a.test/now'), body)
    // read() answers at once when it can, else with a promise: `later` marks the second case.
    const lookup = async (url: string, range?: { start: number; end: number }) => {
      const found = store.read(url, '', range)
      return found instanceof Promise ? { later: await found } : found
    }
    // Written by this process (so verified) but never opened: opened and read at once.
    expect(await lookup('https://a.test/now')).toMatchObject({ kind: 'buffer', tier: 'disk', buffer: body })
    expect(await lookup('https://a.test/now')).toMatchObject({ kind: 'buffer', tier: 'disk', buffer: body })
    expect(await lookup('https://a.test/now', { start: 10, end: 19 })).toMatchObject({ buffer: body.subarray(10, 20) })

    // Changed in place after it was verified: no answer at once, and the full read drops it.
    await corruptContent(meta!.integrity, (bytes) => {
      bytes[0] ^= 1
      return bytes
    })
    expect(await lookup('https://a.test/now')).toEqual({ later: undefined })
    expect(store.stats().integrityFailures).toBe(1)

    // Deleted while open: the descriptor still reads the old bytes, but nlink 0 says they are gone.
    const kept = await put(store, newEntry('https://a.test/rm'), bodyOf(700, 2))
    expect(await readBody(store, 'https://a.test/rm')).toEqual(bodyOf(700, 2))
    expect(await lookup('https://a.test/rm')).toMatchObject({ kind: 'buffer' })
    await rm(contentPath(dir, kept!.integrity) as string)
    expect(await lookup('https://a.test/rm')).toEqual({ later: undefined })

    // Large bodies always take the asynchronous path.
    await put(store, newEntry('https://a.test/large'), bodyOf(200 * 1024, 3))
    expect(await readBody(store, 'https://a.test/large')).toEqual(bodyOf(200 * 1024, 3))
    expect(await lookup('https://a.test/large')).toHaveProperty('later')

    // After a restart no file is vouched for: the first read hashes it (asynchronously), the next is at once.
    const other = await put(store, newEntry('https://a.test/restart'), bodyOf(900, 4))
    await store.close()
    const reopened = await openStore()
    const again = async (url: string) => {
      const found = reopened.read(url, '')
      return found instanceof Promise ? { later: await found } : found
    }
    expect(other).toBeDefined()
    expect(await again('https://a.test/restart')).toMatchObject({ later: { buffer: bodyOf(900, 4) } })
    expect(await again('https://a.test/restart')).toMatchObject({ kind: 'buffer', tier: 'disk', buffer: bodyOf(900, 4) })
  })

  it('evicts least recently read entries to stay under the disk budget', async () => {
    const store = await openStore({ maxBytes: 10_000 })
    const events = recordEvents(store)
    for (let i = 1; i <= 3; i++) await put(store, newEntry(`https://a.test/${i}`), bodyOf(3000, i))
    await readBody(store, 'https://a.test/1') // 2 is now the least recently read
    await put(store, newEntry('https://a.test/4'), bodyOf(3000, 4))
    expect(events.filter((e) => e.type === 'deleted')).toEqual([{ type: 'deleted', key: 'https://a.test/2', variant: '', reason: 'evicted' }])
    expect(store.stats()).toMatchObject({ entries: 3, bytes: 9000, evictions: 1 })
    // Evicted content files are removed in the background, by the disk writer: drain() waits for it.
    await store.drain()
    expect(await contentBytesOnDisk(dir)).toBe(9000)

    for (let i = 5; i <= 20; i++) {
      await put(store, newEntry(`https://a.test/${i}`), bodyOf(2500 + i, i))
      expect(store.stats().bytes).toBeLessThanOrEqual(10_000)
      await store.drain()
      expect(await contentBytesOnDisk(dir)).toBeLessThanOrEqual(10_000)
    }
    expect(await store.variants('https://a.test/20')).toHaveLength(1)
  })

  it('evicts least recently read entries to stay under the entry limit, whatever their size', async () => {
    // Every entry costs the in-memory index the same whatever its body: a cache of small bodies
    // meets the entry limit long before the byte budget.
    const store = await openStore({ maxEntries: 3 })
    const events = recordEvents(store)
    for (let i = 1; i <= 3; i++) await put(store, newEntry(`https://a.test/${i}`), bodyOf(10, i))
    expect(store.stats()).toMatchObject({ entries: 3, diskEntries: 3, maxEntries: 3, evictions: 0 })
    await readBody(store, 'https://a.test/1') // 2 is now the least recently read
    await put(store, newEntry('https://a.test/4'), bodyOf(10, 4))
    expect(events.filter((e) => e.type === 'deleted')).toEqual([{ type: 'deleted', key: 'https://a.test/2', variant: '', reason: 'evicted' }])
    expect(store.stats()).toMatchObject({ entries: 3, diskEntries: 3, bytes: 30, evictions: 1 })
    await store.drain()
    // What cacache's own reader finds: the three kept, not the evicted one.
    expect((Object.keys(await cacache.ls(dir))).sort()).toEqual([1, 3, 4].map((i) => entryId(`https://a.test/${i}`, '')))
    expect(await contentBytesOnDisk(dir)).toBe(30)

    for (let i = 5; i <= 12; i++) {
      await put(store, newEntry(`https://a.test/${i}`), bodyOf(10, i))
      expect(store.stats().diskEntries).toBeLessThanOrEqual(3)
    }
    await store.drain()
    expect(Object.keys(await cacache.ls(dir))).toHaveLength(3)
    expect(await readBody(store, 'https://a.test/12')).toEqual(bodyOf(10, 12))
    expect(await readBody(store, 'https://a.test/1')).toBeUndefined()
  })

  it('applies a lowered entry limit at start, keeping the most recently stored', async () => {
    let store = await openStore()
    for (let i = 0; i < 5; i++) await put(store, newEntry(`https://a.test/${i}`), bodyOf(100, i))
    expect(store.stats()).not.toHaveProperty('maxEntries')
    store = await reopen(store, { maxEntries: 2 })
    expect(store.stats()).toMatchObject({ entries: 2, diskEntries: 2, maxEntries: 2, evictions: 3 })
    const kept: number[] = []
    for (let i = 0; i < 5; i++) if (await readBody(store, `https://a.test/${i}`)) kept.push(i)
    expect(kept).toEqual([3, 4])
    await store.drain()
    expect(await contentBytesOnDisk(dir)).toBe(200)
  })

  it('says it is full within 5% of either budget, where a new entry evicts another', async () => {
    const byEntries = await openStore({ maxEntries: 3 })
    for (let i = 1; i <= 2; i++) await put(byEntries, newEntry(`https://a.test/${i}`), bodyOf(10, i))
    expect(byEntries.full()).toBe(false)
    await put(byEntries, newEntry('https://a.test/3'), bodyOf(10, 3))
    expect(byEntries.full()).toBe(true)
    await byEntries.delete('https://a.test/3')
    expect(byEntries.full()).toBe(false)
    await byEntries.close()
    open.splice(open.indexOf(byEntries), 1)

    const byBytes = await openStore({ maxBytes: 1000 })
    await put(byBytes, newEntry('https://a.test/big'), bodyOf(900, 1))
    expect(byBytes.full()).toBe(false)
    await put(byBytes, newEntry('https://a.test/more'), bodyOf(60, 2))
    expect(byBytes.full()).toBe(true)
  })

  it('refuses an entry limit that is not a positive whole number', async () => {
    for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
      await expect(createDiskStore({ dir, maxBytes: MiB, maxObjectBytes: MiB, maxEntries })).rejects.toThrow(/maxEntries must be a positive integer/)
    }
  })

  it('shares one content file between entries with the same body', async () => {
    const store = await openStore()
    const body = bodyOf(4000)
    await put(store, newEntry('https://a.test/x'), body)
    await put(store, newEntry('https://a.test/y'), body)
    expect(store.stats().bytes).toBe(4000)
    await store.delete('https://a.test/x')
    expect(await readBody(store, 'https://a.test/y')).toEqual(body)
    await store.delete('https://a.test/y')
    await store.close()
    expect(await filesUnder(path.join(dir, 'content-v2'))).toEqual([])
  })

  it('a body that must match an expected digest shows only once checked and written, and one that does not is never stored', async () => {
    const store = await openStore()
    const body = bodyOf(6000)
    const other = bodyOf(6000, 7)
    // The same size, another digest: refused, nothing on disk, nothing visible.
    const bad = store.writer(newEntry('https://a.test/bad'), { size: 6000, integrity: sri(body) })
    bad.write(other)
    await expect(bad.commit()).rejects.toMatchObject({ code: 'EINTEGRITY' })
    expect(store.variants('https://a.test/bad')).toEqual([])
    // The matching copy: not visible until its commit resolves, then on disk under its digest.
    const good = store.writer(newEntry('https://a.test/good'), { size: 6000, integrity: sri(body) })
    good.write(body)
    const committing = good.commit()
    expect(store.variants('https://a.test/good')).toEqual([])
    expect((await committing)?.integrity).toBe(sri(body))
    expect(await readFile(contentPath(dir, sri(body)) as string)).toEqual(body)
    expect(await filesUnder(path.join(dir, 'content-v2'))).toHaveLength(1)
    // A second entry with the same body shares its file; both survive a restart.
    const twin = store.writer(newEntry('https://a.test/twin'), { size: 6000, integrity: sri(body) })
    twin.write(body)
    await twin.commit()
    const reopened = await reopen(store)
    expect(await readBody(reopened, 'https://a.test/good')).toEqual(body)
    expect(await readBody(reopened, 'https://a.test/twin')).toEqual(body)
    expect(reopened.variants('https://a.test/bad')).toEqual([])
  })

  it('answers byte ranges from small and large bodies', async () => {
    let store = await openStore()
    const small = bodyOf(10_000)
    const large = bodyOf(3 * MiB, 3)
    await put(store, newEntry('https://a.test/s'), small)
    await put(store, newEntry('https://a.test/l'), large)
    store = await reopen(store) // nothing verified yet

    const s = await store.read('https://a.test/s', '', { start: 10, end: 19 })
    expect(s?.kind).toBe('buffer')
    expect(await bytesOf(s!)).toEqual(small.subarray(10, 20))
    // An end past the body is clamped, like RFC 9110 §14.1.2 asks.
    expect(await bytesOf((await store.read('https://a.test/s', '', { start: 9990, end: 20_000 }))!)).toEqual(small.subarray(9990))

    const firstLarge = await store.read('https://a.test/l', '', { start: MiB, end: MiB + 99 })
    expect(firstLarge?.kind).toBe('buffer')
    expect(await bytesOf(firstLarge!)).toEqual(large.subarray(MiB, MiB + 100))
    const wide = await store.read('https://a.test/l', '', { start: 100, end: 2 * MiB + 99 })
    expect(wide?.kind).toBe('stream')
    expect((await bytesOf(wide!)).equals(large.subarray(100, 2 * MiB + 100))).toBe(true)

    // An unsatisfiable range is the caller's mistake (the proxy answers 416 before reading): it throws at once.
    expect(() => store.read('https://a.test/s', '', { start: 10_000, end: 10_001 })).toThrow(RangeError)
    expect(() => store.read('https://a.test/s', '', { start: 5, end: 4 })).toThrow(RangeError)
  })

  it('refuses a range of a corrupt large body before serving any of it', async () => {
    let store = await openStore()
    const large = bodyOf(2 * MiB)
    const meta = await put(store, newEntry('https://a.test/l'), large)
    store = await reopen(store)
    await corruptContent(meta!.integrity, (bytes) => {
      bytes[bytes.length - 1] ^= 1
      return bytes
    })
    expect(await store.read('https://a.test/l', '', { start: 0, end: 9 })).toBeUndefined()
    expect(store.stats().integrityFailures).toBe(1)
  })

  it('updateMeta replaces metadata and keeps the body, across restarts', async () => {
    let store = await openStore()
    const body = bodyOf(2000)
    const meta = (await put(store, newEntry('https://a.test/u'), body))!
    const later = Date.now() + 999_000
    // size and integrity from the caller are ignored: the body did not change.
    await store.updateMeta({ ...meta, staleAt: later, headers: { etag: '"2"' }, size: 1, integrity: 'sha512-bogus' })
    const [updated] = await store.variants('https://a.test/u')
    expect(updated).toMatchObject({ staleAt: later, headers: { etag: '"2"' }, size: 2000, integrity: meta.integrity })
    expect(await readBody(store, 'https://a.test/u')).toEqual(body)
    // Many revalidations do not grow the on-disk index without bound.
    for (let i = 0; i < 30; i++) await store.updateMeta({ ...updated, staleAt: later + i })
    const buckets = await filesUnder(path.join(dir, 'index-v5'))
    expect(buckets).toHaveLength(1)
    const lines = (await readFile(path.join(dir, 'index-v5', buckets[0]), 'utf8')).split('\n').filter(Boolean)
    expect(lines.length).toBeLessThanOrEqual(9)

    store = await reopen(store)
    expect((await store.variants('https://a.test/u'))[0]).toMatchObject({ staleAt: later + 29, headers: { etag: '"2"' } })
    expect(await readBody(store, 'https://a.test/u')).toEqual(body)
    // Listing order stays the commit order, not the update order.
    await put(store, newEntry('https://a.test/second'), bodyOf(10))
    await store.updateMeta({ ...(await store.variants('https://a.test/u'))[0], staleAt: 1 })
    expect((await store.list()).entries.map((e) => e.url)).toEqual(['https://a.test/second', 'https://a.test/u'])
    // Updating something that is not stored is a no-op.
    await store.updateMeta({ ...meta, key: 'https://a.test/nope', url: 'https://a.test/nope' })
    expect(await store.variants('https://a.test/nope')).toEqual([])
  })

  it('returns frozen metadata so callers cannot change the index by accident', async () => {
    const store = await openStore()
    await put(store, newEntry('https://a.test/f'), bodyOf(1))
    const [meta] = await store.variants('https://a.test/f')
    expect(Object.isFrozen(meta)).toBe(true)
    expect(Object.isFrozen(meta.headers)).toBe(true)
  })

  it('deletes by key, by variant and by predicate; clear removes everything', async () => {
    let store = await openStore()
    const events = recordEvents(store)
    await put(store, newEntry('https://a.test/k', { variant: 'a' }), bodyOf(10, 1))
    await put(store, newEntry('https://a.test/k', { variant: 'b' }), bodyOf(10, 2))
    await put(store, newEntry('https://a.test/k', { variant: 'c' }), bodyOf(10, 3))
    expect(await store.delete('https://a.test/k', 'a')).toBe(1)
    expect(await store.delete('https://a.test/k', 'a')).toBe(0)
    expect(await store.delete('https://a.test/k')).toBe(2)
    expect(events.filter((e) => e.type === 'deleted').every((e) => e.type === 'deleted' && e.reason === 'purged')).toBe(true)

    for (let i = 0; i < 6; i++) await put(store, newEntry(`https://a.test/p/${i}`, { tags: i % 2 ? ['odd'] : [] }), bodyOf(10, i))
    expect(await store.deleteWhere((m) => m.tags.includes('odd'))).toBe(3)
    expect(await store.deleteWhere((m) => m.url.startsWith('https://a.test/p/4'))).toBe(1)
    expect((await store.list()).entries.map((e) => e.url)).toEqual(['https://a.test/p/2', 'https://a.test/p/0'])
    await expect(
      store.deleteWhere(() => {
        throw new Error('bad predicate')
      }),
    ).rejects.toThrow('bad predicate')
    expect(store.stats().entries).toBe(2)

    expect(await store.clear()).toBe(2)
    expect(events.filter((e) => e.type === 'deleted' && e.reason === 'cleared')).toHaveLength(2)
    expect(store.stats()).toMatchObject({ entries: 0, bytes: 0 })
    expect(await filesUnder(dir)).toEqual([])
    // Still usable after a clear, and the clear survives a restart.
    await put(store, newEntry('https://a.test/after'), bodyOf(10))
    store = await reopen(store)
    expect((await store.list()).entries.map((e) => e.url)).toEqual(['https://a.test/after'])
  })

  it('pages and filters the listing, newest first', async () => {
    const store = await openStore()
    for (let i = 0; i < 25; i++) await put(store, newEntry(`https://${i % 5 === 0 ? 'IMG' : 'www'}.a.test/${i}`), bodyOf(10, i))
    await readBody(store, 'https://www.a.test/1')
    const page = await store.list({ offset: 2, limit: 3 })
    expect(page.total).toBe(25)
    expect(page.entries.map((e) => e.url)).toEqual(['https://www.a.test/22', 'https://www.a.test/21', 'https://IMG.a.test/20'])
    const imgs = await store.list({ filter: 'img.A.TEST' })
    expect(imgs.total).toBe(5)
    expect(imgs.entries.map((e) => e.url)).toEqual([20, 15, 10, 5, 0].map((i) => `https://IMG.a.test/${i}`))
    const [one] = (await store.list({ filter: 'www.a.test/1', limit: 100 })).entries.filter((e) => e.url === 'https://www.a.test/1')
    expect(one.inMemory).toBe(false)
    expect(one.lastAccess).toBeGreaterThanOrEqual(one.storedAt)
  })

  it('makes a filtered list in steps, yielding to the event loop between them, and still counts every match', async () => {
    // A budget spent after every step: each step then waits for a turn of the event loop.
    let yields = 0
    let worked = false
    const store = await openStore({
      turnBudget: () => ({
        spent: () => {
          if (worked) return true
          worked = true
          return false
        },
        next: async () => {
          worked = false
          yields++
          await new Promise<void>((resolve) => setImmediate(resolve))
        },
      }),
    })
    const count = 700
    for (let i = 0; i < count; i++) await put(store, newEntry(`https://${i % 7 === 0 ? 'img' : 'www'}.a.test/${i}`), bodyOf(10, i))
    const listing = store.list({ filter: 'IMG.a', offset: 3, limit: 4 })
    // Removed while the list is being made, before the scan reaches it (the oldest): not counted.
    await store.delete('https://img.a.test/0')
    const page = await listing
    expect(page.total).toBe(count / 7 - 1)
    expect(page.entries.map((e) => e.url)).toEqual([672, 665, 658, 651].map((i) => `https://img.a.test/${i}`))
    // Hundreds of entries a step: the pass took more than one turn, and yielded between its steps.
    expect(yields).toBeGreaterThanOrEqual(Math.floor(count / 256))
  })

  it('recovers when the cache directory is removed under it', async () => {
    let store = await openStore()
    await put(store, newEntry('https://a.test/before'), bodyOf(100))
    await put(store, newEntry('https://a.test/read-before'), bodyOf(100, 5))
    expect(await readBody(store, 'https://a.test/read-before')).toEqual(bodyOf(100, 5))
    await rm(dir, { recursive: true, force: true })
    expect(await store.read('https://a.test/read-before', '')).toBeUndefined()
    expect(await store.read('https://a.test/before', '')).toBeUndefined()
    expect(store.stats().entries).toBe(0)
    // Both the buffered and the spilled write paths recreate what they need.
    expect(await put(store, newEntry('https://a.test/after'), bodyOf(100, 2))).toBeDefined()
    await rm(dir, { recursive: true, force: true })
    expect(await put(store, newEntry('https://a.test/large'), bodyOf(2 * MiB, 3))).toBeDefined()
    expect((await readBody(store, 'https://a.test/large'))?.equals(bodyOf(2 * MiB, 3))).toBe(true)
    expect(store.stats().writeFailures).toBe(0)
    store = await reopen(store)
    expect((await readBody(store, 'https://a.test/large'))?.equals(bodyOf(2 * MiB, 3))).toBe(true)
  })

  it('counts, logs and reports a failed write without rejecting commit()', async () => {
    const store = await openStore()
    const events = recordEvents(store)
    // Files where the temp and content directories should be: every write fails (even as root).
    await writeFile(path.join(dir, 'tmp'), 'in the way')
    await writeFile(path.join(dir, 'content-v2'), 'in the way')
    // A small body is written behind: served from memory until the writer fails, then dropped.
    expect(await put(store, newEntry('https://a.test/small'), bodyOf(100))).toBeDefined()
    expect(await store.read('https://a.test/small', '')).toBeUndefined()
    const large = store.writer(newEntry('https://a.test/large'))
    large.write(bodyOf(2 * MiB))
    expect(await large.commit()).toBeUndefined()
    expect(store.stats()).toMatchObject({ writeFailures: 2, entries: 0 })
    expect(events.filter((e) => e.type === 'write-failure').map((e) => e.type === 'write-failure' && e.key)).toEqual([
      'https://a.test/small',
      'https://a.test/large',
    ])
    expect(logs.filter((l) => l.msg === 'cache write failed')).toHaveLength(2)

    await rm(path.join(dir, 'tmp'))
    await rm(path.join(dir, 'content-v2'))
    expect(await put(store, newEntry('https://a.test/small'), bodyOf(100))).toBeDefined()
  })

  it('concurrent writes of one key: the last commit wins, with no corruption', async () => {
    let store = await openStore()
    const url = 'https://a.test/race'
    const slow = store.writer(newEntry(url, { headers: { n: 'slow' } }))
    const fast = store.writer(newEntry(url, { headers: { n: 'fast' } }))
    const slowBody = bodyOf(3 * MiB, 1)
    const fastBody = bodyOf(10, 2)
    for (let offset = 0; offset < slowBody.length; offset += 64 * 1024) slow.write(slowBody.subarray(offset, offset + 64 * 1024))
    fast.write(fastBody)
    // The large body is committed first and takes longer to finish; the small one is committed last
    // and wins: the large one, superseded before it was on disk, is never shown.
    const results = await Promise.all([slow.commit(), fast.commit()])
    expect(results.map((r) => r !== undefined)).toEqual([false, true])
    expect((await store.variants(url))[0].headers.n).toBe('fast')
    expect(await readBody(store, url)).toEqual(fastBody)

    const writers = Array.from({ length: 12 }, (_, i) => {
      const writer = store.writer(newEntry(url, { headers: { n: String(i) } }))
      writer.write(bodyOf(i % 3 === 0 ? 2 * MiB : 500, i + 10))
      return writer
    })
    await Promise.all(writers.map((w) => w.commit()))
    expect((await store.variants(url))[0].headers.n).toBe('11')
    expect(await readBody(store, url)).toEqual(bodyOf(500, 21))
    expect(store.stats()).toMatchObject({ entries: 1, bytes: 500, integrityFailures: 0 })
    store = await reopen(store)
    expect(await readBody(store, url)).toEqual(bodyOf(500, 21))
    await store.close()
    expect(await filesUnder(path.join(dir, 'content-v2'))).toHaveLength(1)
  })

  it('cleans up crash leftovers at start: temp files, foreign index entries, unreferenced content', async () => {
    let store = await openStore()
    const kept = bodyOf(100)
    await put(store, newEntry('https://a.test/kept'), kept)
    await store.close()
    expect(await put(store, newEntry('https://a.test/late'), bodyOf(10))).toBeUndefined() // a closed store takes no writes
    // An index entry without our metadata, and its content.
    const stray = bodyOf(50, 7)
    await cacache.put(dir, 'scratch', stray)
    // An orphaned content file, as left by a crash between rename and index insert.
    const orphan = bodyOf(60, 8)
    await cacache.put(dir, 'orphan', orphan)
    await cacache.rm.entry(dir, 'orphan')
    await mkdir(path.join(dir, 'tmp'), { recursive: true })
    await writeFile(path.join(dir, 'tmp', 'half-written'), 'x')
    store = await openStore()
    await store.close()
    const content = await filesUnder(path.join(dir, 'content-v2'))
    expect(content).toEqual([path.relative(path.join(dir, 'content-v2'), contentPath(dir, sri(kept)) as string)])
    expect(await filesUnder(path.join(dir, 'tmp'))).toEqual([])
    expect(store.stats().entries).toBe(1)
    store = await openStore()
    expect(await readBody(store, 'https://a.test/kept')).toEqual(kept)
  })

  it('names new bodies by sha256 and still reads, verifies and sweeps bodies an older version named by sha512', async () => {
    let store = await openStore()
    const fresh = bodyOf(3000, 1)
    const old = bodyOf(2000, 2)
    const tampered = bodyOf(2500, 3)
    const meta = await put(store, newEntry('https://a.test/new'), fresh)
    expect(meta?.integrity).toMatch(/^sha256-/)
    expect(contentPath(dir, meta!.integrity)).toContain(`${path.sep}content-v2${path.sep}sha256${path.sep}`)
    for (const [url, body] of [['https://a.test/old', old], ['https://a.test/tampered', tampered]] as const) await put(store, newEntry(url), body)
    await store.close()
    // What an older version wrote: the same entries, their bodies under sha512 (cacache's default).
    for (const [url, body] of [['https://a.test/old', old], ['https://a.test/tampered', tampered]] as const) {
      const id = entryId(url, '')
      const { metadata } = (await cacache.get.info(dir, id))!
      await cacache.put(dir, id, body, { metadata, algorithms: ['sha512'] })
    }
    const oldIntegrity = `sha512-${createHash('sha512').update(old).digest('base64')}`
    const tamperedIntegrity = `sha512-${createHash('sha512').update(tampered).digest('base64')}`
    await corruptContent(tamperedIntegrity, (bytes) => Buffer.from(bytes.map((b) => b ^ 1)))
    // Torn files no index line names, under both digests' trees.
    const torn = [contentPath(dir, `sha512-${'A'.repeat(86)}==`)!, contentPath(dir, `sha256-${'A'.repeat(43)}=`)!]
    for (const file of torn) {
      await mkdir(path.dirname(file), { recursive: true })
      await writeFile(file, 'torn')
    }

    store = await openStore()
    expect(store.variant('https://a.test/old', '')?.integrity).toBe(oldIntegrity)
    expect(await readBody(store, 'https://a.test/old')).toEqual(old)
    expect(await readBody(store, 'https://a.test/new')).toEqual(fresh)
    // A sha512 body is checked by sha512: one that changed on disk is never served.
    expect(await readBody(store, 'https://a.test/tampered')).toBeUndefined()
    expect(store.stats().integrityFailures).toBe(1)
    const another = bodyOf(1500, 4)
    const anotherMeta = await put(store, newEntry('https://a.test/another'), another)
    await store.close()
    const content = path.join(dir, 'content-v2')
    // The torn files are gone, and so are the sha256 bodies the sha512 lines replaced.
    expect((await filesUnder(content)).sort()).toEqual([meta!.integrity, oldIntegrity, anotherMeta!.integrity].map((i) => path.relative(content, contentPath(dir, i)!)).sort())
    // A mixed cache is still cacache's: its own reader takes both.
    for (const [url, body] of [['https://a.test/old', old], ['https://a.test/new', fresh], ['https://a.test/another', another]] as const) {
      expect((await cacache.get(dir, entryId(url, ''))).data.equals(body)).toBe(true)
    }
  })

  it('applies a lowered budget at start', async () => {
    let store = await openStore()
    for (let i = 0; i < 5; i++) await put(store, newEntry(`https://a.test/${i}`), bodyOf(1000, i))
    store = await reopen(store, { maxBytes: 2500 })
    await store.close()
    expect(store.stats()).toMatchObject({ entries: 2, bytes: 2000, evictions: 3 })
    // The files left are the bodies of the two entries kept, nothing else.
    const content = path.join(dir, 'content-v2')
    const files = (await filesUnder(content)).sort()
    store = await openStore({ maxBytes: 2500 })
    const kept: number[] = []
    for (let i = 0; i < 5; i++) if (await readBody(store, `https://a.test/${i}`)) kept.push(i)
    expect(kept).toHaveLength(2)
    expect(files).toEqual(kept.map((i) => path.relative(content, contentPath(dir, sri(bodyOf(1000, i))) as string)).sort())
    expect(await contentBytesOnDisk(dir)).toBe(2000)
  })
})

describe('disk store index with metadata decoded on demand', () => {
  /** What a fill stores: a real freshness policy (the compact packed form), tags, a Vary'd variant. */
  function filled(url: string, overrides: Partial<NewEntry> = {}): NewEntry {
    const now = Date.now()
    const headers = { 'content-type': 'text/css', 'cache-control': 'public, max-age=600', etag: `"${url.length}"`, date: new Date(Math.floor(now / 1000) * 1000).toUTCString(), vary: 'Accept-Encoding' }
    const decision = decideStore({ method: 'GET', url, headers: {}, requestTime: now }, { status: 200, headers, hasSetCookie: false, responseTime: now }, { cacheSetCookie: false, heuristicFreshness: false })
    if (!decision.store) throw new Error('not storable')
    return newEntry(url, { headers, policy: decision.policy, staleAt: decision.staleAt, deleteAt: decision.deleteAt, ...overrides })
  }

  it('queues the files of a large purge no faster than the disk writer takes them, and removes them all', async () => {
    const store = await openStore({ writeQueueJobs: 16 })
    for (let i = 0; i < 200; i++) await put(store, newEntry(`https://a.test/q/${i}`), bodyOf(10, i))
    let most = 0
    let done = false
    const watching = (async () => {
      while (!done) {
        most = Math.max(most, store.writeQueue().jobs)
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
    })()
    expect(await store.deleteWhere((m) => m.url.startsWith('https://a.test/q/'))).toBe(200)
    await store.drain()
    done = true
    await watching
    // 400 removals (a content file and an index bucket each), never more than the writer's bound (and one entry's two) queued at once.
    expect(most).toBeGreaterThan(0)
    expect(most).toBeLessThanOrEqual(16 + 1)
    expect((await filesUnder(dir)).filter((f) => !f.endsWith('/') && !f.includes('tmp'))).toEqual([])
    expect(logs.filter((l) => l.level === 'error')).toEqual([])
  })

  it('keeps the index bucket of a variant stored again before the purge that removed it got round to its files', async () => {
    // The purge's removals wait (a budget spent until released) while the same URL is stored again.
    let budgets = 0
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let store = await openStore({
      turnBudget: () => {
        const n = ++budgets
        return {
          spent: () => n === 2 && budgets > 0,
          next: async () => {
            await released
            budgets = -1
          },
        }
      },
    })
    for (let i = 0; i < 3; i++) await put(store, newEntry(`https://a.test/again/${i}`), bodyOf(10, i))
    budgets = 0
    expect(await store.deleteWhere((m) => m.url.startsWith('https://a.test/again/'))).toBe(3)
    const writer = store.writer(newEntry('https://a.test/again/1'))
    writer.write(bodyOf(20, 7))
    await writer.commit()
    release()
    await store.drain()
    store = await reopen(store)
    expect(await readBody(store, 'https://a.test/again/1')).toEqual(bodyOf(20, 7))
    expect(store.variant('https://a.test/again/0', '')).toBeUndefined()
    expect(store.stats().entries).toBe(1)
  })

  it('treats what a running deleteWhere covers as gone from the call, before its pass reaches it', async () => {
    const store = await openStore()
    const events = recordEvents(store)
    for (let i = 0; i < 5; i++) await put(store, newEntry(`https://a.test/r/${i}`), bodyOf(10, i))
    await put(store, newEntry('https://a.test/keep'), bodyOf(10, 9))
    const missing: Record<string, boolean> = {}
    let looked = false
    const removed = await store.deleteWhere((m) => {
      if (!looked) {
        looked = true
        // The pass has just started and dropped nothing: lookups already miss what it covers, and only that.
        missing.last = store.variant('https://a.test/r/4', '') === undefined
        missing.variants = store.variants('https://a.test/r/3').length === 0
        missing.kept = store.variant('https://a.test/keep', '') === undefined
      }
      return m.url.startsWith('https://a.test/r/')
    })
    expect(missing).toEqual({ last: true, variants: true, kept: false })
    expect(removed).toBe(5)
    expect(events.filter((e) => e.type === 'deleted' && e.reason === 'purged')).toHaveLength(5)
    expect((await store.list()).entries.map((e) => e.url)).toEqual(['https://a.test/keep'])
  })

  it('finds every field, Vary variants, prefixes and tags when only one entry stays decoded, before and after a restart', async () => {
    let store = await openStore({ hotEntries: 1 })
    const stored: EntryMeta[] = []
    for (let i = 0; i < 20; i++) {
      const tags = i % 3 === 0 ? ['third', `item-${i}`] : [`item-${i}`]
      stored.push((await put(store, filled(`https://a.test/${i < 10 ? 'blog' : 'shop'}/${i}`, { tags }), bodyOf(10, i)))!)
      stored.push((await put(store, filled(`https://a.test/${i < 10 ? 'blog' : 'shop'}/${i}`, { variant: 'gzip', varyHeaders: { 'accept-encoding': 'gzip' }, tags }), bodyOf(11, i)))!)
    }
    for (let round = 0; round < 2; round++) {
      for (const meta of stored) {
        expect(store.variant(meta.key, meta.variant)).toEqual(meta)
        expect(store.varyOf(meta.key)).toEqual(['Accept-Encoding'])
      }
      expect(store.variants('https://a.test/blog/3').map((m) => m.variant).sort()).toEqual(['', 'gzip'])
      expect((await store.list({ filter: 'SHOP/1' })).total).toBe(2 * 10)
      if (round === 0) store = await reopen(store, { hotEntries: 1 })
    }
    expect(await store.deleteWhere((m) => m.url.startsWith('https://a.test/blog/'))).toBe(20)
    expect(await store.deleteWhere((m) => m.tags.includes('third'))).toBe(6)
    expect(store.stats().entries).toBe(14)
    expect(store.variant('https://a.test/shop/12', 'gzip')).toBeUndefined()
    expect(await readBody(store, 'https://a.test/shop/11', 'gzip')).toEqual(bodyOf(11, 11))
  })

  it('evicts the least recently read entries whatever is decoded', async () => {
    const store = await openStore({ hotEntries: 1, maxBytes: 40 })
    for (let i = 0; i < 4; i++) await put(store, filled(`https://a.test/e/${i}`), bodyOf(10, i))
    expect(store.variant('https://a.test/e/0', '')).toBeDefined()
    await readBody(store, 'https://a.test/e/0')
    await put(store, filled('https://a.test/e/4'), bodyOf(10, 4))
    expect(store.variant('https://a.test/e/1', '')).toBeUndefined()
    expect(['0', '2', '3', '4'].every((i) => store.variant(`https://a.test/e/${i}`, '') !== undefined)).toBe(true)
  })
})
