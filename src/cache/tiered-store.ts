// The CacheStore the proxy uses: the disk tier is the record of what is
// stored; the memory tier only holds copies of small bodies. A memory copy is
// served only while the disk index still has that variant with the same
// integrity, so deletes, purges, evictions and replacements on disk can never
// leave a stale body served from memory.
// One exception: a body stored while the disk writer's queue is full is kept
// by the memory tier alone (a memory-only entry, see disk-store.ts
// MemoryOnlyBodies). The disk index still records it, so the same rules hold;
// when the tier evicts that body the entry leaves the index with it, and it is
// never handed to a peer.

import { type CommittedBody, type DiskAdmission, type DiskStore, type DiskStoreOptions, type EntryBody, type LogFn, SMALL_BODY_BYTES, createDiskStore, entryId, safeLog } from './disk-store.ts'
import { describeError } from '../vocabulary.ts'
import { splitEntryId } from './entry-index.ts'
import { type MemoryTier, createMemoryTier } from './memory-tier.ts'
import { type BodyLookup, type ByteRange, type CacheStore, type EntryMeta, type EntryWriter, type ExpectedBody, type ListOptions, type ListedEntry, type NewEntry, type StoreEvent, type StoreStats, type StoredBody, isMemoryOnlyIntegrity } from './types.ts'

export interface CacheStoreOptions {
  /** cacache directory of this node. */
  dir: string
  /** Disk budget for bodies, in bytes. */
  maxBytes: number
  /** Most entries on disk (see DiskStoreOptions; default no limit). */
  maxEntries?: number
  /** Memory tier budget in bytes; 0 disables it. */
  memoryBytes: number
  /** Per-object limit: larger bodies are not stored. */
  maxObjectBytes: number
  /** Body bytes waiting for the disk writer at most (see DiskStoreOptions). */
  writeQueueBytes?: number
  /** Jobs waiting for the disk writer at most (see DiskStoreOptions). */
  writeQueueJobs?: number
  /** Variants kept under one key at most (see DiskStoreOptions). */
  maxVariants?: number
  /** When a body the memory tier can hold is written to disk (see disk-store.ts DiskAdmission). */
  diskAdmission?: DiskAdmission
  log?: LogFn
}

export async function createCacheStore(opts: CacheStoreOptions): Promise<CacheStore> {
  // Only bodies the disk tier hands over as buffers go to memory, and a quarter
  // of the budget at most, so one object cannot flush the rest.
  const memory = createMemoryTier({
    maxBytes: opts.memoryBytes,
    maxObjectBytes: Math.min(Math.floor(opts.memoryBytes / 4), SMALL_BODY_BYTES),
  })
  // A body being written is buffered in the memory tier's slabs: the tier then keeps it where
  // it is, and the disk writer's thread reads the same bytes.
  const disk = await createDiskStore({
    dir: opts.dir,
    maxBytes: opts.maxBytes,
    maxEntries: opts.maxEntries,
    maxObjectBytes: opts.maxObjectBytes,
    writeQueueBytes: opts.writeQueueBytes,
    writeQueueJobs: opts.writeQueueJobs,
    maxVariants: opts.maxVariants,
    ...tierBodies(memory),
    admission: opts.diskAdmission,
    log: opts.log,
  })
  // Fresh slabs are made by the disk writer's thread, ahead of need.
  memory.makeSlabsWith(disk.makeSlabs)
  return createTieredStore(disk, memory, opts.log)
}

/**
 * The disk store's memory for bodies being written, from the memory tier's slabs: the tier then
 * keeps a body where it was written, and the slab is used again once its bodies are gone and
 * their writes done (slab-arena.ts).
 */
export function tierBodies(memory: MemoryTier): Pick<DiskStoreOptions, 'allocateBody' | 'releaseBody' | 'memoryOnly'> {
  return {
    allocateBody: (length) => memory.allocate(length),
    releaseBody: (body) => memory.settle(body),
    // While the disk writer is behind, a body it has no room for stays in the tier only.
    memoryOnly: { maxObjectBytes: memory.maxObjectBytes, keep: (id, body, integrity) => memory.set(memoryIdOf(id), { buffer: body, integrity }) },
  }
}

/**
 * A variant's name in the memory tier: its key alone when it has no Vary value (nearly every
 * entry), else its entryId(). A hit then asks the tier's map with the key string the entry's
 * metadata holds, flat and hashed once for as long as that metadata is kept, instead of a new id
 * joined for it, flattened and hashed on every hit. Keys never hold NUL and an entryId() always
 * does, so the two forms never name the same string.
 */
export function memoryId(key: string, variant: string): string {
  return variant === '' ? key : entryId(key, variant)
}

/** The memoryId() of the variant an entryId() names. */
function memoryIdOf(id: string): string {
  return id.endsWith('\u0000') ? id.slice(0, -1) : id
}

/** The key and variant a memoryId() names. */
function splitMemoryId(id: string): { key: string; variant: string } {
  return id.includes('\u0000') ? splitEntryId(id) : { key: id, variant: '' }
}

/** Combines an opened disk store with a memory tier (exported for tests that need their own tiers). */
export function createTieredStore(disk: DiskStore, memory: MemoryTier, log?: LogFn): CacheStore {
  const logSafely = log && safeLog(log)
  // Disk removals of any kind (including 'replaced') end the memory copy.
  const unsubscribe = disk.subscribe((event) => {
    if (event.type === 'deleted') memory.delete(memoryId(event.key, event.variant))
  })
  // A body committed before its digest was known keeps its memory copy once the digest is.
  const unsubscribeDigests = disk.onDigest((id, placeholder, integrity) => memory.retag(memoryIdOf(id), placeholder, integrity))
  // A body the tier evicts that was its entry's only copy takes the entry with it.
  const unsubscribeEvictions = memory.onEvict((id, item) => {
    if (!isMemoryOnlyIntegrity(item.integrity)) return
    const { key, variant } = splitMemoryId(id)
    disk.forgetMemoryOnly(key, variant, item.integrity)
  })

  function remember(meta: EntryMeta, buffer: Buffer): void {
    if (buffer.length === meta.size) memory.set(memoryId(meta.key, meta.variant), { buffer, integrity: meta.integrity })
  }

  /**
   * A variant's memoryId(): the key itself without a Vary value; else the last variant's id, as
   * hits on a hot key ask for the same one again and again, and the string kept here, hashed once
   * by the memory tier's map, is cheaper than a new one per read.
   */
  let lastKey = ''
  let lastVariant = ''
  let lastId = memoryId('', '')
  function idOf(key: string, variant: string): string {
    if (variant === '') return key
    if (key !== lastKey || variant !== lastVariant) {
      lastKey = key
      lastVariant = variant
      lastId = memoryId(key, variant)
    }
    return lastId
  }

  /**
   * The memory copy of a variant, if it is still the body the disk index has, lent (see
   * StoredBody.loan); a copy that is not is dropped. The variant is touched first, which also
   * keeps the disk LRU aware of memory hits (a body hot in memory must not be the first one
   * evicted from disk), and its content record names the copy a hit last found: lent from there,
   * a hit asks the tier's map of thousands of keys nothing (an item no longer there, or not this
   * variant's, is looked up by key as before).
   */
  function fromMemory(key: string, variant: string, range: ByteRange | undefined, now: number | undefined): StoredBody | undefined {
    const id = idOf(key, variant)
    const content = disk.touchContent(key, variant, now)
    if (content === undefined) {
      memory.delete(id)
      return undefined
    }
    const item = content.memory
    let loan = item === undefined ? undefined : memory.lendItem(item, id)
    if (loan === undefined) {
      loan = memory.lend(id)
      if (loan === undefined) return undefined
      content.memory = loan.item
    }
    if (loan.integrity !== content.integrity) {
      loan.giveBack()
      memory.delete(id)
      content.memory = undefined
      return undefined
    }
    if (isMemoryOnlyIntegrity(content.integrity)) promote(key, variant, loan.buffer)
    try {
      return { kind: 'buffer', buffer: range ? sliceRange(loan.buffer, range) : loan.buffer, tier: 'memory', loan }
    } catch (error) {
      loan.giveBack()
      throw error
    }
  }

  /**
   * A variant kept in memory only and asked for again, under 'second-request' admission: stored
   * again with the same metadata, so it goes to disk (DiskStore.promotion). `buffer`: the body a
   * hit was lent; without it (a HEAD or a 304 read none), the tier's copy, if it still has the one
   * the index names. put() copies the body before anything else, so bytes lent to an answer stay
   * as they are; the memory-only variant then gives way to one being written, whose body the tier
   * keeps as for any fill.
   */
  function promote(key: string, variant: string, buffer?: Buffer): void {
    const meta = disk.promotion(key, variant)
    if (meta === undefined) return
    // Lent for the copy only (get() would keep its memory from ever being used again).
    const loan = buffer === undefined ? memory.lend(idOf(key, variant)) : undefined
    try {
      if (buffer === undefined) {
        // Gone from the tier: its entry goes with it (forgetMemoryOnly).
        if (loan === undefined || loan.integrity !== meta.integrity) return
        buffer = loan.buffer
      }
      // put() has copied the body by the time it returns (the commit gathers it synchronously).
      void put(meta, buffer).catch((error: unknown) => logPromotionFailure(key, error))
    } catch (error) {
      // Never a request's failure: the body stays in memory only, and the next request tries again.
      logPromotionFailure(key, error)
    } finally {
      loan?.giveBack()
    }
  }

  function logPromotionFailure(key: string, error: unknown): void {
    logSafely?.({ level: 'error', msg: 'cache could not write a body kept in memory only to disk on its second request; it stays in memory', key, error: describeError(error) })
  }

  // A whole body (every miss whose body came with its head): the disk writer itself, without
  // the wrapper a streamed body needs, and one reaction on its commit.
  function put(entry: NewEntry, body: Uint8Array): Promise<EntryMeta | undefined> {
    const inner = disk.writer(entry)
    if (!inner.write(body)) {
      inner.abort()
      return Promise.resolve(undefined)
    }
    return inner.commitWithBody().then(kept)
  }

  /** The memory copy of a variant for a peer (not lent: its reader never says when it is done), unless it is its only copy. */
  function fromMemoryForPeer(key: string, variant: string): EntryBody | undefined {
    const id = idOf(key, variant)
    const held = memory.get(id)
    if (!held || isMemoryOnlyIntegrity(held.integrity)) return undefined
    const meta = disk.touch(key, variant)
    if (!meta || meta.integrity !== held.integrity) {
      memory.delete(id)
      return undefined
    }
    return { body: { kind: 'buffer', buffer: held.buffer, tier: 'memory' }, meta }
  }

  /**
   * A peer's populate: what memory holds, then the rest from disk in one batch, each body with its
   * metadata. Not kept in memory: a peer copying everything says nothing about what this node's
   * clients want. A body kept in memory only is not held by this node: a peer gets nothing for it.
   */
  async function readForPeer(items: ReadonlyArray<{ key: string; variant: string }>): Promise<Array<EntryBody | undefined>> {
    const entries: Array<EntryBody | undefined> = items.map((item) => fromMemoryForPeer(item.key, item.variant))
    const rest = items.filter((_, i) => entries[i] === undefined)
    if (rest.length === 0) return entries
    const read = await disk.readEntries(rest)
    let r = 0
    for (let i = 0; i < entries.length; i++) {
      if (entries[i] !== undefined) continue
      const found = read[r++]
      entries[i] = found && exposed(found)
    }
    return entries
  }

  /** A committed body's metadata, its buffered body kept in memory. */
  function kept(committed: CommittedBody | undefined): EntryMeta | undefined {
    if (!committed) return undefined
    if (committed.body) remember(committed.meta, committed.body)
    return committed.meta
  }

  /**
   * A body not on disk yet is read from the memory its writer buffered it in, which is the
   * memory tier's (createCacheStore): once handed out, its slab is never used again.
   */
  function exposed(found: EntryBody): EntryBody {
    if (found.body.kind === 'buffer') memory.expose(found.body.buffer)
    return found
  }

  /** exposed() for read(): the body is lent instead (see StoredBody.loan). */
  function lent(found: EntryBody): EntryBody {
    const { body, meta } = found
    if (body.kind !== 'buffer') return found
    const loan = memory.lendView(body.buffer, meta.integrity)
    return loan ? { meta, body: { kind: 'buffer', buffer: body.buffer, tier: body.tier, loan } } : found
  }

  /** A body read from disk, kept in memory when the tier takes it; the slice asked for when the whole was read for memory. */
  function keptRead(found: EntryBody, range: ByteRange | undefined, wholeForMemory: boolean): StoredBody {
    const { body, meta } = found
    if (body.kind !== 'buffer' || (range !== undefined && !wholeForMemory)) return body
    if (body.buffer.length <= memory.maxObjectBytes) remember(meta, body.buffer)
    return range ? { kind: 'buffer', buffer: sliceRange(body.buffer, range), tier: 'disk', loan: body.loan } : body
  }

  return {
    variants: (key) => disk.variants(key),
    varyOf: (key) => disk.varyOf(key),
    variant: (key, variant, now) => disk.variant(key, variant, now),

    read(key: string, variant: string, range?: ByteRange, now?: number): BodyLookup {
      const held = fromMemory(key, variant, range, now)
      if (held) return held
      // A range of a body small enough for memory: read it whole once, keep it, serve the slice.
      const current = range ? disk.touch(key, variant, now) : undefined
      const wholeForMemory = range !== undefined && current !== undefined && current.size <= memory.maxObjectBytes
      const found = disk.readEntry(key, variant, wholeForMemory ? undefined : range, now)
      if (found instanceof Promise) return found.then((f) => f && keptRead(lent(f), range, wholeForMemory))
      return found && keptRead(lent(found), range, wholeForMemory)
    },

    readEntries: readForPeer,

    bodySize: (key, variant) => disk.bodySize(key, variant),

    admits: (key, size) => disk.admits(key, size),
    askedAgain: (key, variant) => promote(key, variant),
    drain: () => disk.drain(),
    writeRoom: (size) => disk.writeRoom(size),
    full: () => disk.full(),

    put,

    writer(entry: NewEntry, expected?: ExpectedBody): EntryWriter {
      const inner = disk.writer(entry, expected)
      return {
        write: (chunk) => inner.write(chunk),
        abort: (reason) => inner.abort(reason),
        commit: () => inner.commitWithBody().then(kept),
      }
    },

    updateMeta: (meta) => disk.updateMeta(meta),
    delete: (key, variant) => disk.delete(key, variant),
    deleteWhere: (predicate, reason) => disk.deleteWhere(predicate, reason),
    // The memory tier keeps bodies only; the mark lives in the disk index's metadata.
    markStale: (purgedAt) => disk.markStale(purgedAt),

    async clear(): Promise<number> {
      const removed = await disk.clear()
      memory.clear()
      return removed
    },

    async list(options?: ListOptions): Promise<{ total: number; entries: ListedEntry[] }> {
      const page = await disk.list(options)
      for (const entry of page.entries) entry.inMemory = memory.has(memoryId(entry.key, entry.variant))
      return page
    },

    stats(): StoreStats {
      return { ...disk.stats(), memoryEntries: memory.size, memoryBytes: memory.bytes, memoryHeldBytes: memory.heldBytes, memoryDroppedBytes: memory.droppedBytes, memoryDroppedHeldBytes: memory.droppedHeldBytes, memorySlabsAllocatedBytes: memory.allocatedSlabs * memory.slabBytes }
    },

    subscribe: (listener: (event: StoreEvent) => void) => disk.subscribe(listener),

    async close(): Promise<void> {
      await disk.close()
      unsubscribe()
      unsubscribeDigests()
      unsubscribeEvictions()
      memory.clear()
    },
  }
}

/** The inclusive range of a whole body held in memory (same clamping and errors as the disk tier). */
function sliceRange(buffer: Buffer, range: ByteRange): Buffer {
  const { start, end } = range
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || start >= buffer.length) {
    throw new RangeError(`unsatisfiable range ${start}-${end} for a body of ${buffer.length} bytes`)
  }
  return buffer.subarray(start, Math.min(end, buffer.length - 1) + 1)
}
