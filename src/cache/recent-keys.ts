// The keys asked for recently, for the disk tier's second-request admission
// (disk-store.ts DiskAdmission): a key is written to disk when it is asked for
// again while caje still remembers the first time.
//
// A long tail of URLs asked for once (a crawler, cache-busting query strings)
// would otherwise cost every one of them a disk write, a manifest row and its
// place in the disk budget. Akamai's "cache on second hit" rule does the same
// for its disk caches (Maggs and Sitaraman, "Algorithmic Nuggets in Content
// Delivery", 2015); nginx offers it as proxy_cache_min_uses.
//
// A key's first request leaves its body in the memory tier only. Asked for
// again while the tier holds it, the body goes to disk from there; asked for
// again after the tier let it go, this table still knows the key, so the new
// fill goes to disk. The table is a fixed array of 32-bit key hashes, one slot
// per hash: no JS object per key and a bounded size (4 MiB for 2^20 slots). A
// key whose slot another key took since is forgotten, which costs it one more
// request kept in memory only, never a wrong answer.

import { hashKey } from './entry-index.ts'

/** Slots of the table: the keys remembered at most (fewer when hashes share a slot). */
export const RECENT_KEY_SLOTS = 2 ** 20

export class RecentKeys {
  readonly #slots: Uint32Array
  readonly #mask: number

  /** `slots` must be a power of two. */
  constructor(slots = RECENT_KEY_SLOTS) {
    if (!Number.isInteger(Math.log2(slots))) throw new RangeError(`RecentKeys needs a power of two of slots, not ${slots}`)
    this.#slots = new Uint32Array(slots)
    this.#mask = slots - 1
  }

  /** Whether `key` was noted and its slot has not been taken by another key since. */
  has(key: string): boolean {
    const h = stored(hashKey(key))
    return this.#slots[h & this.#mask] === h
  }

  /** Remembers `key`; whether it was remembered already. */
  note(key: string): boolean {
    const h = stored(hashKey(key))
    const at = h & this.#mask
    if (this.#slots[at] === h) return true
    this.#slots[at] = h
    return false
  }
}

/** A hash as the table holds it: 0 marks an empty slot, so a hash of 0 is taken for 1 (has() and note() alike). */
function stored(h: number): number {
  return h === 0 ? 1 : h
}
