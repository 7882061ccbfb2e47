// The memory tier: a least-recently-used set of bodies bounded in bytes, not
// in entries, because one 1 MiB body costs as much as a thousand 1 KiB ones.
// A Map finds a body by key; the items themselves form a list from least to
// most recently used, so a hit moves its item to the end with four pointer
// writes, when the item is in the older half of the list (use()). (Moving it with the Map's own insertion order, a delete and a set
// per hit, was the largest single item of the event loop's own work under a
// Zipf mix over 10,000 objects, where most hits are not on the newest item.)
// The bodies themselves are copied into the slabs of a SlabArena
// (slab-arena.ts), and the budget is the memory those slabs take, however
// bodies come and go: the bodies kept are a little less than the budget
// (bodyBytes), the rest is the slabs' room for dead space.

import { type Placement, type Slab, type SlabMaker, SlabArena } from './slab-arena.ts'

/** One body held in memory, tagged with the integrity it was stored under. */
export interface MemoryItem {
  buffer: Buffer
  /**
   * Integrity of the disk entry this body belongs to. The tiered store compares
   * it with the disk index on every hit, so a body that was replaced on disk
   * is never served from memory by mistake.
   */
  integrity: string
}

export interface MemoryTierOptions {
  /** Budget in bytes of memory (slabs, whole); 0 disables the tier. */
  maxBytes: number
  /** Largest body kept (default a quarter of the budget): one huge body must not flush the whole tier. */
  maxObjectBytes?: number
  /** Size of the arena's slabs (default: see SlabArenaOptions). */
  slabBytes?: number
}

export interface MemoryTier {
  /** The budget: memory held for bodies at most. */
  readonly maxBytes: number
  /** Body bytes kept at most: the budget less the slabs' room for dead space (SlabArena.bodyBytes). */
  readonly bodyBytes: number
  readonly maxObjectBytes: number
  /** Number of bodies held. */
  readonly size: number
  /** Bytes held (sum of body lengths). */
  readonly bytes: number
  /** Memory held for those bodies (slabs, whole): at most the budget. */
  readonly heldBytes: number
  /** Slabs allocated so far (see SlabArena.allocatedSlabs). */
  readonly allocatedSlabs: number
  /** Size of one slab. */
  readonly slabBytes: number
  /** Memory of dropped slabs not freed yet, on top of heldBytes (see SlabArena.droppedBytes). */
  readonly droppedBytes: number
  /** Part of droppedBytes: dropped slabs that bodies being written to disk still hold. */
  readonly droppedHeldBytes: number
  /**
   * Returns the item and marks it most recently used. Its buffer may be held for as long as
   * the caller likes (sent to a slow client, say): its memory is never used for another body.
   */
  get(key: string): MemoryItem | undefined
  /**
   * get() for a reader that says when it is done: the item's memory is not used for another body
   * until its loan is given back (once; more calls are ignored), after which the memory may be.
   * A loan never given back keeps that memory from being used again, as get() does.
   */
  lend(key: string): MemoryLoan | undefined
  /**
   * lend() of the item a loan came from (MemoryLoan.item), without looking its key up: undefined
   * once that item has left the tier, or when it is not the one under `key`.
   */
  lendItem(item: MemoryItemRef, key: string): MemoryLoan | undefined
  has(key: string): boolean
  /**
   * Memory for a body of `length` bytes that is about to be set(): a buffer to fill, which
   * set() then keeps where it is instead of copying it. Undefined when a body of that size
   * would not be kept, or would get memory of its own. Its memory is not used for anything
   * else until settle(buffer).
   */
  allocate(length: number): Buffer | undefined
  /** A buffer from allocate() is no longer read or written by whoever asked for it (see SlabArena.settle). */
  settle(buffer: Buffer): void
  /** `buffer`, a body held here (or a view of one), goes to a reader: see get(). */
  expose(buffer: Buffer): void
  /**
   * expose() for a reader that says when it is done (see lend()); `integrity` is only passed on.
   * Undefined when `buffer` is not in the tier's memory (nothing to give back).
   */
  lendView(buffer: Buffer, integrity: string): MemoryLoan | undefined
  /**
   * Stores the item's body, evicting the least recently used ones to fit: a buffer from
   * allocate() stays where it is, any other is copied in (get() returns the copy). Returns
   * false when the item is not kept.
   */
  set(key: string, item: MemoryItem): boolean
  delete(key: string): boolean
  /** The body held under `key`, if tagged `from`, is tagged `to` (its entry's integrity became known), its recency unchanged. */
  retag(key: string, from: string, to: string): void
  /**
   * Calls `listener` with each item set() evicts to make room, once it is gone (not for
   * delete() or clear()): the tiered store drops an entry whose only copy that was. Returns the
   * unsubscribe function.
   */
  onEvict(listener: (key: string, item: MemoryItem) => void): () => void
  /** New slabs are made ready by `maker`, off this thread (see SlabArena.makeSlabsWith). */
  makeSlabsWith(maker: SlabMaker): void
  clear(): void
}

export function createMemoryTier(opts: MemoryTierOptions): MemoryTier {
  const maxBytes = opts.maxBytes
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`memory tier maxBytes must be a non-negative integer, got ${maxBytes}`)
  }
  const arena = new SlabArena({ budgetBytes: maxBytes, slabBytes: opts.slabBytes })
  const bodyBytes = arena.bodyBytes
  const maxObjectBytes = Math.min(opts.maxObjectBytes ?? Math.floor(maxBytes / 4), bodyBytes)
  const items = new Map<string, Held>()
  /** Buffers handed out by allocate() and not set() yet; one never set is dead room in its slab. */
  const reserved = new WeakMap<Buffer, Placement>()
  /** The ends of the recency list: the next to evict, and the last one used. */
  let oldest: Held | undefined
  let newest: Held | undefined
  let bytes = 0
  /** Items appended to the newest end so far (Held.appended). */
  let appends = 0
  const evictListeners = new Set<(key: string, item: MemoryItem) => void>()

  function unlink(item: Held): void {
    if (item.older) item.older.newer = item.newer
    else oldest = item.newer
    if (item.newer) item.newer.older = item.older
    else newest = item.older
    item.older = undefined
    item.newer = undefined
  }

  function append(item: Held): void {
    item.appended = ++appends
    item.older = newest
    if (newest) newest.newer = item
    else oldest = item
    newest = item
  }

  function forget(key: string, item: Held): void {
    unlink(item)
    items.delete(key)
    bytes -= item.buffer.length
    arena.release(item)
    item.kept = false
  }

  /**
   * An item gone from the tier keeps no body: a reference to it kept elsewhere (MemoryLoan.item)
   * must not hold its slab's memory.
   */
  function emptied(item: Held): void {
    item.buffer = EMPTY
  }

  /**
   * The item under `key`, made one of the most recently used: moved to the most-recently-used
   * end unless it is in the newer half of the list already, where it is not among the next to
   * be evicted. (Varnish moves an object in its LRU list at most once per lru_interval for the
   * same reason.) A move writes to both neighbours, two objects no other part of the hit
   * touches, and under a Zipf mix over thousands of objects each is a cache miss of its own.
   */
  function use(key: string): Held | undefined {
    const item = items.get(key)
    return item && used(item)
  }

  /** use() of an item at hand. */
  function used(item: Held): Held {
    // At most `appends - item.appended` items are newer than it (some may have left since).
    if (appends - item.appended >= items.size >>> 1) {
      unlink(item)
      append(item)
    }
    return item
  }

  function remove(key: string): boolean {
    const item = items.get(key)
    if (!item) return false
    forget(key, item)
    emptied(item)
    return true
  }

  return {
    maxBytes,
    bodyBytes,
    maxObjectBytes,
    get size() {
      return items.size
    },
    get bytes() {
      return bytes
    },
    get heldBytes() {
      return arena.heldBytes
    },
    get allocatedSlabs() {
      return arena.allocatedSlabs
    },
    slabBytes: arena.slabBytes,
    get droppedBytes() {
      return arena.droppedBytes
    },
    get droppedHeldBytes() {
      return arena.droppedHeldBytes
    },
    get(key) {
      const item = use(key)
      // Handed out: this slab's memory is never used again (slab-arena.ts).
      if (item?.slab) item.slab.exposed = true
      return item
    },
    lend(key) {
      const item = use(key)
      return item && new Loan(item, arena)
    },
    lendItem(ref, key) {
      const item = ref as Held
      return item.kept && item.key === key ? new Loan(used(item), arena) : undefined
    },
    lendView(buffer, integrity) {
      const slab = arena.slabOf(buffer)
      return slab && new Loan(undefined, arena, buffer, integrity, slab)
    },
    has(key) {
      return items.has(key)
    },
    allocate(length) {
      if (bodyBytes === 0 || length > maxObjectBytes) return undefined
      const placement = arena.reserve(length)
      if (!placement) return undefined
      reserved.set(placement.buffer, placement)
      return placement.buffer
    },
    settle: (buffer) => arena.settle(buffer),
    makeSlabsWith: (maker) => arena.makeSlabsWith(maker),
    expose: (buffer) => arena.expose(buffer),
    set(key, item) {
      remove(key)
      const length = item.buffer.length
      if (bodyBytes === 0 || length > maxObjectBytes) return false
      // The least recently used go first. Evicted before the copy is placed, so the arena can
      // reuse their slabs' room.
      while (oldest && bytes + length > bodyBytes) {
        const old = oldest
        forget(old.key, old)
        for (const listener of evictListeners) listener(old.key, old)
        emptied(old)
      }
      const held: Held = { buffer: item.buffer, slab: undefined, integrity: item.integrity, key, older: undefined, newer: undefined, appended: 0, kept: true }
      const room = reserved.get(item.buffer)
      if (room) {
        reserved.delete(item.buffer)
        // Settled already: its slab may hold another body by now, so these bytes are not kept.
        if (!arena.holds(item.buffer)) return false
      }
      if (!room || !arena.adopt(held, room)) arena.place(held, item.buffer)
      items.set(key, held)
      append(held)
      bytes += length
      return true
    },
    delete: remove,
    retag(key, from, to) {
      const item = items.get(key)
      if (item && item.integrity === from) item.integrity = to
    },
    onEvict(listener) {
      evictListeners.add(listener)
      return () => {
        evictListeners.delete(listener)
      }
    },
    clear() {
      for (const item of items.values()) {
        item.kept = false
        emptied(item)
      }
      items.clear()
      arena.clear()
      oldest = undefined
      newest = undefined
      bytes = 0
    },
  }
}

/** An item as the tier keeps it: its body's copy and where the copy lives. */
interface Held extends MemoryItem, Placement {
  key: string
  /** Neighbours in the recency list (undefined at its ends, and once the item has left it). */
  older: Held | undefined
  newer: Held | undefined
  /** The count of appends when it was last appended to the newest end. */
  appended: number
  /** Still in the tier (false once evicted, deleted or replaced). */
  kept: boolean
}

const EMPTY = Buffer.alloc(0)

/** An item of the tier as a loan names it, for MemoryTier.lendItem(); nothing to read. */
export type MemoryItemRef = object

/** A body lent by MemoryTier.lend(): the item as it was when lent, and the way to give it back. */
export interface MemoryLoan extends MemoryItem {
  /** Nothing reads `buffer` (or views of it) any more. */
  giveBack(): void
  /** The item lent, to lend it again without its key (MemoryTier.lendItem); undefined for a view (lendView). */
  readonly item: MemoryItemRef | undefined
}

class Loan implements MemoryLoan {
  readonly buffer: Buffer
  readonly integrity: string
  readonly item: Held | undefined
  #slab: Slab | undefined
  readonly #arena: SlabArena

  constructor(item: Held | undefined, arena: SlabArena, buffer = item!.buffer, integrity = item!.integrity, slab = item!.slab) {
    this.item = item
    this.buffer = buffer
    this.integrity = integrity
    this.#arena = arena
    this.#slab = slab
    if (slab) arena.lend(slab)
  }

  giveBack(): void {
    const slab = this.#slab
    if (!slab) return
    this.#slab = undefined
    this.#arena.giveBack(slab)
  }
}
