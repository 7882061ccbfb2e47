// The disk tier's in-memory index: every stored variant with its metadata and
// content file, in two orders (least recently read first for eviction, oldest
// commit first for listings), plus a key → variants map for lookups.
// It is pure bookkeeping: no I/O, so the hit path and admin listings never
// touch cacache's on-disk index, and tests can fill it with 100,000 records
// without writing a file.

import type { EntryMeta } from './types.ts'

/** The id of one variant: cacache's index key. NUL cannot occur in a URL-derived key. */
export function entryId(key: string, variant: string): string {
  return `${key}\u0000${variant}`
}

/** A content file, shared by every variant whose body has the same digest. */
export interface ContentRecord {
  integrity: string
  path: string
  size: number
  /** Variants (and commits in flight) that use this file. The file is removed when it drops to 0. */
  refs: number
  /** Identity of the file when it was last known good; see content-file.ts. */
  verified?: FileSignature
  /** The body, while the disk writer has not put it on disk yet: reads are answered from it. */
  pending?: Buffer
}

/** What identifies one version of a file on disk: a change to any of these means "hash it again". */
export interface FileSignature {
  ino: number
  size: number
  mtimeMs: number
  ctimeMs: number
}

export interface IndexRecord {
  id: string
  meta: EntryMeta
  content: ContentRecord
  /** Epoch ms of the commit; orders listings and survives updateMeta and restarts. */
  committedAt: number
  /** Epoch ms of the last read (commit time until the first one). */
  lastAccess: number
  /** Order of use (set by EntryIndex on every set and touch): unlike lastAccess, never a tie. */
  recency?: number
  /** Lower-cased url, computed once so filtering 100,000 entries does no string allocation. */
  urlLower: string
  /** Lines in this entry's cacache bucket; updates append, so the bucket is compacted now and then. */
  indexLines: number
}

interface KeyVariants {
  records: IndexRecord[]
  /** Variants per distinct stored Vary value. */
  varies: Map<string, number>
  /** varies' keys, built when asked and dropped on change. */
  varyList?: string[]
}

const NO_VARY: readonly string[] = Object.freeze([])

function addVary(variants: KeyVariants, meta: EntryMeta): void {
  const vary = meta.headers.vary ?? ''
  const n = variants.varies.get(vary)
  if (n === undefined) variants.varyList = undefined
  variants.varies.set(vary, (n ?? 0) + 1)
}

function removeVary(variants: KeyVariants, meta: EntryMeta): void {
  const vary = meta.headers.vary ?? ''
  const n = variants.varies.get(vary) ?? 0
  if (n > 1) variants.varies.set(vary, n - 1)
  else {
    variants.varies.delete(vary)
    variants.varyList = undefined
  }
}

export interface IndexPage {
  total: number
  records: IndexRecord[]
}

export class EntryIndex {
  /** Least recently read first. */
  readonly #lru = new Map<string, IndexRecord>()
  /** The record at the most-recent end of #lru, when known. */
  #newest: IndexRecord | undefined
  #uses = 0
  /** Oldest commit first. */
  readonly #byCommit = new Map<string, IndexRecord>()
  /** Variants per key: nearly always one or two, so an array beats a Map per key (100,000 of them). */
  readonly #byKey = new Map<string, KeyVariants>()

  get size(): number {
    return this.#lru.size
  }

  get(id: string): IndexRecord | undefined {
    return this.#lru.get(id)
  }

  /** Looks a record up and marks it most recently read. */
  touch(id: string, now: number): IndexRecord | undefined {
    const record = this.#lru.get(id)
    if (!record) return undefined
    record.lastAccess = now
    record.recency = ++this.#uses
    // Already the most recent: skip the Map re-insertion (the hot-key case).
    if (this.#newest === record) return record
    this.#lru.delete(id)
    this.#lru.set(id, record)
    this.#newest = record
    return record
  }

  variantsOf(key: string): IndexRecord[] {
    const variants = this.#byKey.get(key)
    return variants ? variants.records.slice() : []
  }

  variantCount(key: string): number {
    return this.#byKey.get(key)?.records.length ?? 0
  }

  /**
   * The distinct Vary header values (as stored, '' for none) of a key's variants: nearly
   * always one. A lookup works out the request's variant id once per value and finds the
   * variant by id, whatever the number of variants.
   */
  varyOf(key: string): readonly string[] {
    const variants = this.#byKey.get(key)
    if (!variants) return NO_VARY
    variants.varyList ??= [...variants.varies.keys()]
    return variants.varyList
  }

  /** Replaces a record's metadata (its Vary may change with a 304's headers). */
  updateMeta(record: IndexRecord, meta: EntryMeta): void {
    const variants = this.#byKey.get(record.meta.key)
    if (variants && this.#lru.get(record.id) === record) {
      removeVary(variants, record.meta)
      addVary(variants, meta)
    }
    record.meta = meta
    record.urlLower = meta.url.toLowerCase()
  }

  /**
   * Adds a record, replacing one with the same id. A replacement counts as a
   * fresh commit and a fresh use, so it moves to the newest end of both orders.
   * Returns the replaced record.
   */
  set(record: IndexRecord): IndexRecord | undefined {
    const previous = this.delete(record.id)
    record.recency = ++this.#uses
    this.#lru.set(record.id, record)
    this.#newest = record
    this.#byCommit.set(record.id, record)
    let variants = this.#byKey.get(record.meta.key)
    if (!variants) this.#byKey.set(record.meta.key, (variants = { records: [], varies: new Map() }))
    variants.records.push(record)
    addVary(variants, record.meta)
    return previous
  }

  delete(id: string): IndexRecord | undefined {
    const record = this.#lru.get(id)
    if (!record) return undefined
    if (this.#newest === record) this.#newest = undefined
    this.#lru.delete(id)
    this.#byCommit.delete(id)
    const variants = this.#byKey.get(record.meta.key)
    if (variants) {
      const at = variants.records.indexOf(record)
      if (at >= 0) {
        variants.records.splice(at, 1)
        removeVary(variants, record.meta)
      }
      if (variants.records.length === 0) this.#byKey.delete(record.meta.key)
    }
    return record
  }

  clear(): IndexRecord[] {
    const all = [...this.#lru.values()]
    this.#newest = undefined
    this.#lru.clear()
    this.#byCommit.clear()
    this.#byKey.clear()
    return all
  }

  /** Least recently read first: the eviction order. */
  leastRecentlyUsed(): IterableIterator<IndexRecord> {
    return this.#lru.values()
  }

  values(): IterableIterator<IndexRecord> {
    return this.#lru.values()
  }

  /**
   * One page of records, newest commit first, optionally filtered by a
   * case-insensitive substring of the url. One linear pass over the index:
   * at 100,000 records that is a few milliseconds, cheaper than keeping a
   * sorted structure up to date on every commit.
   */
  list(options: { filter?: string; offset?: number; limit?: number } = {}): IndexPage {
    const needle = options.filter ? options.filter.toLowerCase() : ''
    const offset = Math.max(0, Math.floor(options.offset ?? 0))
    const limit = Math.max(0, Math.floor(options.limit ?? 50))
    const oldestFirst = [...this.#byCommit.values()]
    const records: IndexRecord[] = []
    let total = 0
    for (let i = oldestFirst.length - 1; i >= 0; i--) {
      const record = oldestFirst[i]
      if (needle && !record.urlLower.includes(needle)) continue
      if (total >= offset && records.length < limit) records.push(record)
      total++
    }
    return { total, records }
  }
}
