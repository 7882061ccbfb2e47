// The memory tier: a least-recently-used set of bodies bounded in bytes, not
// in entries, because one 1 MiB body costs as much as a thousand 1 KiB ones.
// A Map keeps insertion order, so "move to the end on use" plus "evict from
// the front" gives O(1) get/set/delete without a hand-written linked list.

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
  /** Budget in bytes; 0 disables the tier. */
  maxBytes: number
  /** Largest body kept (default maxBytes / 4): one huge body must not flush the whole tier. */
  maxObjectBytes?: number
}

export interface MemoryTier {
  readonly maxBytes: number
  readonly maxObjectBytes: number
  /** Number of bodies held. */
  readonly size: number
  /** Bytes held (sum of body lengths). */
  readonly bytes: number
  /** Returns the item and marks it most recently used. */
  get(key: string): MemoryItem | undefined
  has(key: string): boolean
  /** Stores an item, evicting the least recently used ones to fit. Returns false when the item is not kept. */
  set(key: string, item: MemoryItem): boolean
  delete(key: string): boolean
  clear(): void
}

export function createMemoryTier(opts: MemoryTierOptions): MemoryTier {
  const maxBytes = opts.maxBytes
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`memory tier maxBytes must be a non-negative integer, got ${maxBytes}`)
  }
  const maxObjectBytes = Math.min(opts.maxObjectBytes ?? Math.floor(maxBytes / 4), maxBytes)
  const items = new Map<string, MemoryItem>()
  /** The item at the most-recently-used end, when known. */
  let newest: MemoryItem | undefined
  let bytes = 0

  function remove(key: string): boolean {
    const item = items.get(key)
    if (!item) return false
    if (item === newest) newest = undefined
    items.delete(key)
    bytes -= item.buffer.length
    return true
  }

  return {
    maxBytes,
    maxObjectBytes,
    get size() {
      return items.size
    },
    get bytes() {
      return bytes
    },
    get(key) {
      const item = items.get(key)
      if (!item) return undefined
      // Re-inserting moves the key to the most-recently-used end (skipped when it is there already).
      if (item !== newest) {
        items.delete(key)
        items.set(key, item)
        newest = item
      }
      return item
    },
    has(key) {
      return items.has(key)
    },
    set(key, item) {
      remove(key)
      const length = item.buffer.length
      if (maxBytes === 0 || length > maxObjectBytes) return false
      // The Map iterates oldest first: those are the least recently used.
      for (const [oldKey, old] of items) {
        if (bytes + length <= maxBytes) break
        if (old === newest) newest = undefined
        items.delete(oldKey)
        bytes -= old.buffer.length
      }
      items.set(key, item)
      newest = item
      bytes += length
      return true
    },
    delete: remove,
    clear() {
      items.clear()
      newest = undefined
      bytes = 0
    },
  }
}
