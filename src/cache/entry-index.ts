// The disk tier's in-memory index: every stored variant with its metadata and
// content file, in two orders (least recently read first for eviction, oldest
// commit first for listings), and found by key and variant.
// It is pure bookkeeping: no I/O, so the hit path and admin listings never
// touch cacache's on-disk index, and tests can fill it with 100,000 records
// without writing a file.
//
// It is sized for a million entries: one JS object per entry costs more than
// the entry is worth (hidden classes, boxed numbers, a Map entry per order).
// Each variant is a slot: its numbers live in typed arrays, both orders are
// doubly linked lists through slot numbers, lookups go through a hash table of
// slot chains, and the metadata is one packed string (packed-meta.ts), kept as
// bytes outside V8's heap (packed-arena.ts) and decoded when asked for. The most recently asked-for metadata stays decoded, so a hit
// on a hot entry decodes nothing and gets the same object every time.
// Callers hold a Handle: a slot number with the slot's generation, so a handle
// kept across an await is known to be stale once its variant was removed,
// even when the slot is reused.

import { type EntryMeta, type ListOptions, type NewEntry, type PurgeFields, isMemoryOnlyIntegrity } from './types.ts'
import { packMeta, unpackMeta, unpackPurgeFields } from './packed-meta.ts'
import { PackedArena } from './packed-arena.ts'

/** The id of one variant: cacache's index key. NUL cannot occur in a URL-derived key. */
export function entryId(key: string, variant: string): string {
  return `${key}\u0000${variant}`
}

/** The key and variant an entryId() joined. */
export function splitEntryId(id: string): { key: string; variant: string } {
  const split = id.indexOf('\u0000')
  return { key: id.slice(0, split), variant: id.slice(split + 1) }
}

/** A content file, shared by every variant whose body has the same digest. */
export interface ContentRecord {
  integrity: string
  readonly path: string
  size: number
  /** Variants (and commits in flight) that use this file. The file is removed when it drops to 0. */
  refs: number
  /** Identity of the file when it was last known good; see content-file.ts. */
  verified?: FileSignature
  /** The body, while the disk writer has not put it on disk yet: reads are answered from it. */
  pending?: Buffer
  /**
   * The memory tier's copy of the body as a hit last found it (MemoryLoan.item): the next hit
   * lends it without looking it up by key in the tier's map of thousands. Checked on use.
   */
  memory?: object
}

/** What identifies one version of a file on disk: a change to any of these means "hash it again". */
export interface FileSignature {
  ino: number
  size: number
  mtimeMs: number
  ctimeMs: number
}

/** Where content files are: a path is worked out from the digest when asked for, and the latest few are kept. */
export class ContentPaths {
  readonly #recent = new Map<string, string>()
  constructor(
    readonly pathOf: (integrity: string) => string,
    readonly keep = 4096,
  ) {}

  get(integrity: string): string {
    let p = this.#recent.get(integrity)
    if (p === undefined) {
      p = this.pathOf(integrity)
      this.#recent.set(integrity, p)
      if (this.#recent.size > this.keep) {
        for (const oldest of this.#recent.keys()) {
          this.#recent.delete(oldest)
          break
        }
      }
    }
    return p
  }
}

/**
 * A content file as the disk store keeps it, one per digest: no path string (about 200
 * characters, worked out on demand) and the file signature as plain fields rather than
 * an object of its own.
 */
export class StoredContent implements ContentRecord {
  refs = 0
  pending: Buffer | undefined = undefined
  memory: object | undefined = undefined
  #ino = -1
  #sigSize = 0
  #mtimeMs = 0
  #ctimeMs = 0

  constructor(
    readonly paths: ContentPaths,
    public integrity: string,
    public size: number,
  ) {}

  get path(): string {
    return this.paths.get(this.integrity)
  }

  get verified(): FileSignature | undefined {
    return this.#ino < 0 ? undefined : { ino: this.#ino, size: this.#sigSize, mtimeMs: this.#mtimeMs, ctimeMs: this.#ctimeMs }
  }

  set verified(signature: FileSignature | undefined) {
    if (!signature) {
      this.#ino = -1
      return
    }
    this.#ino = signature.ino
    this.#sigSize = signature.size
    this.#mtimeMs = signature.mtimeMs
    this.#ctimeMs = signature.ctimeMs
  }
}

/** One variant in the index: valid until that variant is removed (see live()). */
export type Handle = number

/** What remains of a removed variant: enough to announce it and release its file. */
export interface RemovedEntry {
  id: string
  key: string
  variant: string
  content: ContentRecord
}

export interface NewRecord {
  /** The metadata (size and integrity are the content's). Kept decoded as the hottest entry. */
  meta: EntryMeta | NewEntry
  content: ContentRecord
  /** Epoch ms of the commit; orders listings and survives updateMeta and restarts. */
  committedAt: number
  /** Lines in this entry's cacache bucket; updates append, so the bucket is compacted now and then. */
  indexLines: number
  /** Keep `meta` decoded as the hottest (default true; false for entries loaded at start). */
  hot?: boolean
}

export interface IndexPage {
  total: number
  records: Handle[]
}

export interface EntryIndexOptions {
  /** Decoded metadata kept for the most recently used entries (default 8192). */
  hotEntries?: number
  /** Size of the chunks the packed metadata is kept in (default: see PackedArena). */
  arenaChunkBytes?: number
}

const SLOT_SPAN = 2 ** 26
const MIN_CAPACITY = 1024
const NONE = -1
/**
 * Under a Zipf(1) mix of 10,000 URLs, 4,096 decoded entries left 13% of lookups decoding
 * (simulated) and 8,192 leave 4%, for about 3.4 MB more heap.
 */
const DEFAULT_HOT = 8192

/** Slots the per-slot arrays first reserve address space for (#reserve): a million, 85 MB of it, none resident until used. */
const RESERVE_SLOTS = 2 ** 20
/** A reservation outgrown is made again this many times the capacity. */
const RESERVE_FACTOR = 4

type SlotArray = Float64Array | Int32Array | Uint32Array | Uint8Array
type SlotArrayType<T extends SlotArray> = { new (buffer: ArrayBufferLike): T; readonly BYTES_PER_ELEMENT: number }
/** ES2024's resizable ArrayBuffer (V8 11, Node 20), which the ES2023 lib this project builds against does not describe. */
type ResizableArrayBuffer = ArrayBuffer & { resize(byteLength: number): void; readonly maxByteLength: number }
const ResizableArrayBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer

/**
 * A per-slot array with address space for `reserve` slots: a length-tracking view of a
 * resizable ArrayBuffer, as long as `from` (whose first `keep` slots it copies), or empty.
 * V8 11 (Node 20) reads such a view more slowly than a plain typed array: a hit's pass through
 * the index (varyOf, touch, meta over 10,000 entries, in process) took 605-631 ns against
 * 541-548, four alternated runs; views of fixed length, made again at each growth, 639-662.
 * That is under a microsecond of a request's 50-60 µs on the event loop.
 */
function slotArray<T extends SlotArray>(type: SlotArrayType<T>, reserve: number, from?: T, keep = 0): T {
  const bytes = type.BYTES_PER_ELEMENT
  const array = new type(new ResizableArrayBuffer((from?.length ?? 0) * bytes, { maxByteLength: reserve * bytes }))
  if (from && keep > 0) array.set(from.subarray(0, keep) as never)
  return array
}

function resizeSlots(array: SlotArray, slots: number): void {
  ;(array.buffer as ResizableArrayBuffer).resize(slots * array.BYTES_PER_ELEMENT)
}

/** Metadata decoded for one of the hottest entries, whether it was asked for since the clock hand last passed it, and its place on the clock. */
interface Decoded {
  meta: EntryMeta
  used: boolean
  at: number
}
const NO_VARY: readonly string[] = Object.freeze([])
/** Distinct Vary values remembered per slot as a number; a rarer one is read from the metadata. */
const MAX_VARY_VALUES = 4096

/**
 * Each character below 256 lower-cased, as String#toLowerCase does it (every one of them stays
 * below 256): a url kept in one byte per character is matched on its bytes.
 */
const LATIN1_LOWER = Uint16Array.from({ length: 256 }, (_, c) => String.fromCharCode(c).toLowerCase().charCodeAt(0))

/** The use orders an entry can be in (EntryIndex #lruHeads). */
const ON_DISK = 0
const MEMORY_ONLY = 1

function lruOf(content: ContentRecord): number {
  return isMemoryOnlyIntegrity(content.integrity) ? MEMORY_ONLY : ON_DISK
}

/** FNV-1a over UTF-16 code units: a key's bucket. */
export function hashKey(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return h >>> 0
}

export class EntryIndex {
  #capacity = 0
  /** Slots the per-slot arrays' memory is reserved for (#grow): they grow in place up to it. */
  #reserved = 0
  #slotCopies = 0
  /** Slots below this have been used (the free list holds those removed); the rest never were. */
  #fresh = 0
  #size = 0
  #uses = 0
  // Per slot, each a view of its own resizable ArrayBuffer (slotArray). Slots on the free list chain through #hashNext.
  /** The packed metadata: where it is in #arena, and its length code (PackedArena.lengthOf; 0: no entry). */
  #packedAt = slotArray(Float64Array, 0)
  #packedLength = slotArray(Int32Array, 0)
  readonly #arena: PackedArena
  #content: (ContentRecord | undefined)[] = []
  #committedAt = slotArray(Float64Array, 0)
  #lastAccess = slotArray(Float64Array, 0)
  /** Order of use (set on every add and touch): unlike lastAccess, never a tie. */
  #recency = slotArray(Float64Array, 0)
  #deleteAt = slotArray(Float64Array, 0)
  #lruPrev = slotArray(Int32Array, 0)
  #lruNext = slotArray(Int32Array, 0)
  /** Which use order the slot is in: ON_DISK, or MEMORY_ONLY (see #lruHeads). */
  #lru = slotArray(Uint8Array, 0)
  #commitPrev = slotArray(Int32Array, 0)
  #commitNext = slotArray(Int32Array, 0)
  #hashNext = slotArray(Int32Array, 0)
  #hash = slotArray(Uint32Array, 0)
  #keyLength = slotArray(Int32Array, 0)
  #gen = slotArray(Int32Array, 0)
  #vary = slotArray(Int32Array, 0)
  #indexLines = slotArray(Int32Array, 0)
  /** Chains of slots by hash: a power of two of them, at least one per slot. */
  #buckets = new Int32Array(0)
  #bucketMask = 0
  #free = NONE
  /**
   * Least recently read first, one order per kind of entry: those on disk (the disk's eviction
   * order) and those kept in the memory tier only (isMemoryOnlyIntegrity), which take nothing
   * of the disk's budget: an eviction pass over a full disk never walks past them.
   */
  readonly #lruHeads = new Int32Array([NONE, NONE])
  readonly #lruTails = new Int32Array([NONE, NONE])
  /** Variants in each use order (onDiskCount: what the store's entry limit counts). */
  readonly #lruCounts = new Int32Array([0, 0])
  /** Oldest commit first. */
  #commitHead = NONE
  #commitTail = NONE
  /**
   * Decoded metadata by slot (as long as the per-slot arrays, set for the hottest only). A hit
   * only marks its entry used (#placeDecoded): moving it to the end of a map on every hit, as a
   * strict LRU order did, was a delete and an insert in a map of thousands for nearly every
   * request of a mix of URLs. Indexed by slot rather than a Map by slot, a hit reads one element
   * instead of hashing into a table of thousands (whose lines a mix of URLs finds cold).
   */
  readonly #decoded: (Decoded | undefined)[] = []
  /** The decoded entries' slots, round which the clock hand goes (#placeDecoded). */
  readonly #clock: Int32Array
  #hand = 0
  /** Vary header values by number ('' is 0), and each as a one-element list for varyOf. */
  readonly #varyIds = new Map<string, number>([['', 0]])
  readonly #varyLists: (readonly string[])[] = [Object.freeze([''])]
  /** Scans in progress (listScan): each one's next variant, moved on when that variant is removed. */
  readonly #cursors = new Set<ScanCursor>()

  constructor(options: EntryIndexOptions = {}) {
    this.#clock = new Int32Array(Math.max(1, options.hotEntries ?? DEFAULT_HOT)).fill(NONE)
    this.#arena = new PackedArena({ chunkBytes: options.arenaChunkBytes })
  }

  /** Memory the packed metadata takes outside V8's heap, and how much of it is live (for measures). */
  get packedBytes(): { held: number; live: number } {
    return { held: this.#arena.heldBytes, live: this.#arena.liveBytes }
  }

  /** The whole packed metadata of a slot, as a string (decoded from the arena). */
  #packed(slot: number): string {
    return this.#arena.read(this.#packedAt[slot]!, this.#packedLength[slot]!)
  }

  /** Whether the slot's packed string has `s` at character `from`. */
  #packedHas(slot: number, s: string, from: number): boolean {
    return this.#arena.startsWith(this.#packedAt[slot]!, this.#packedLength[slot]!, s, from)
  }

  #setPacked(slot: number, packed: string): void {
    if (this.#packedLength[slot] !== 0) this.#arena.free(this.#packedAt[slot]!, this.#packedLength[slot]!)
    const length = PackedArena.lengthOf(packed)
    this.#packedAt[slot] = this.#arena.write(packed, length)
    this.#packedLength[slot] = length
  }

  #freePacked(slot: number): void {
    this.#arena.free(this.#packedAt[slot]!, this.#packedLength[slot]!)
    this.#packedLength[slot] = 0
    if (this.#arena.wantsCompaction) {
      this.#arena.compact((move) => {
        for (let s = 0; s < this.#capacity; s++) {
          if (this.#packedLength[s] !== 0) this.#packedAt[s] = move(this.#packedAt[s]!, this.#packedLength[s]!)
        }
      })
    }
  }

  get size(): number {
    return this.#size
  }

  /** Variants whose body is on disk (or being written): every one but those kept in memory only. */
  get onDiskCount(): number {
    return this.#lruCounts[ON_DISK]!
  }

  /** Slots the per-slot arrays are long (for measures): grows by an eighth, in place, when they are all in use (#grow). */
  get capacity(): number {
    return this.#capacity
  }

  // ---- handles --------------------------------------------------------------

  #handle(slot: number): Handle {
    return this.#gen[slot]! * SLOT_SPAN + slot
  }

  /** The slot of a handle still in the index, else NONE. */
  #slot(handle: Handle): number {
    const slot = handle % SLOT_SPAN
    if (slot >= this.#capacity || this.#packedLength[slot] === 0 || this.#gen[slot] !== (handle - slot) / SLOT_SPAN) return NONE
    return slot
  }

  /** Whether the variant a handle names is still in the index (not removed, not replaced). */
  live(handle: Handle): boolean {
    return this.#slot(handle) !== NONE
  }

  #checked(handle: Handle): number {
    const slot = this.#slot(handle)
    if (slot === NONE) throw new Error('entry index: the variant is no longer in the index')
    return slot
  }

  // ---- lookups --------------------------------------------------------------

  /**
   * The last key hashed and the last variant found: a hit asks about one key several times in
   * a row (varyOf, variant, touch), and comparing a string is cheaper than hashing it again.
   */
  #lastKey = ''
  #lastHash = hashKey('')
  #lastVariant = ''
  #lastFound: Handle = NONE

  #hashOf(key: string): number {
    if (key !== this.#lastKey) {
      this.#lastKey = key
      this.#lastHash = hashKey(key)
      this.#lastFound = NONE
    }
    return this.#lastHash
  }

  #find(key: string, variant: string): number {
    if (this.#capacity === 0) return NONE
    const h = this.#hashOf(key)
    if (this.#lastFound !== NONE && variant === this.#lastVariant) {
      // The same variant again, still in the index (a removal changes the slot's generation).
      const slot = this.#slot(this.#lastFound)
      if (slot !== NONE) return slot
    }
    const slot = this.#search(key, variant, h)
    this.#lastVariant = variant
    this.#lastFound = slot === NONE ? NONE : this.#handle(slot)
    return slot
  }

  #search(key: string, variant: string, h: number): number {
    for (let s = this.#buckets[h & this.#bucketMask]!; s !== NONE; s = this.#hashNext[s]!) {
      if (this.#hash[s] !== h || this.#keyLength[s] !== key.length) continue
      const at = key.length + 1
      if (this.#arena.charCodeAt(this.#packedAt[s]!, this.#packedLength[s]!, at + variant.length) !== 0) continue
      if (this.#packedHas(s, key, 0) && this.#packedHas(s, variant, at)) return s
    }
    return NONE
  }

  /** The variant's handle, or undefined. */
  find(key: string, variant: string): Handle | undefined {
    const slot = this.#find(key, variant)
    return slot === NONE ? undefined : this.#handle(slot)
  }

  /** Looks a variant up and marks it most recently read. */
  touch(key: string, variant: string, now: number): Handle | undefined {
    const slot = this.#find(key, variant)
    if (slot === NONE) return undefined
    this.#lastAccess[slot] = now
    this.#recency[slot] = ++this.#uses
    // Already the most recent: nothing to move (the hot-key case).
    if (this.#lruTails[this.#lru[slot]!] !== slot) {
      this.#unlinkLru(slot)
      this.#linkLru(slot)
    }
    return this.#handle(slot)
  }

  #slotsOf(key: string): number[] {
    const slots: number[] = []
    if (this.#capacity === 0) return slots
    const h = this.#hashOf(key)
    for (let s = this.#buckets[h & this.#bucketMask]!; s !== NONE; s = this.#hashNext[s]!) {
      if (this.#hash[s] === h && this.#keyLength[s] === key.length && this.#packedHas(s, key, 0)) slots.push(s)
    }
    return slots
  }

  variantsOf(key: string): Handle[] {
    return this.#slotsOf(key).map((s) => this.#handle(s))
  }

  variantCount(key: string): number {
    return this.#slotsOf(key).length
  }

  /**
   * The distinct Vary header values (as stored, '' for none) of a key's variants: nearly
   * always one. A lookup works out the request's variant id once per value and finds the
   * variant by id, whatever the number of variants.
   */
  varyOf(key: string): readonly string[] {
    if (this.#capacity === 0) return NO_VARY
    // The common case, one Vary value known by number, answers without allocating.
    const h = this.#hashOf(key)
    let first = NONE
    let mixed = false
    for (let s = this.#buckets[h & this.#bucketMask]!; s !== NONE; s = this.#hashNext[s]!) {
      if (this.#hash[s] !== h || this.#keyLength[s] !== key.length || !this.#packedHas(s, key, 0)) continue
      const vary = this.#vary[s]!
      if (first === NONE) first = vary
      if (vary === NONE || vary !== first) mixed = true
    }
    if (first === NONE && !mixed) return NO_VARY
    if (!mixed) return this.#varyLists[first]!
    return [...new Set(this.#slotsOf(key).map((s) => this.#varyValue(s)))]
  }

  #varyValue(slot: number): string {
    const id = this.#vary[slot]!
    return id !== NONE ? this.#varyLists[id]![0]! : (this.#meta(slot).headers.vary ?? '')
  }

  #varyId(meta: EntryMeta | NewEntry): number {
    const vary = meta.headers.vary ?? ''
    let id = this.#varyIds.get(vary)
    if (id === undefined) {
      if (this.#varyLists.length >= MAX_VARY_VALUES) return NONE
      id = this.#varyLists.length
      this.#varyIds.set(vary, id)
      this.#varyLists.push(Object.freeze([vary]))
    }
    return id
  }

  // ---- fields ---------------------------------------------------------------

  /** The variant's metadata, decoded once while it stays among the hottest. Frozen. */
  meta(handle: Handle): EntryMeta {
    return this.#meta(this.#checked(handle))
  }

  #meta(slot: number): EntryMeta {
    const hot = this.#decoded[slot]
    if (hot !== undefined) {
      hot.used = true
      return hot.meta
    }
    const content = this.#content[slot]!
    const meta = freezeMeta(unpackMeta(this.#packed(slot), content.size, content.integrity))
    this.#remember(slot, meta)
    return meta
  }

  /**
   * The fields a purge matches on: from the decoded metadata when it is among
   * the hottest, else read from the packed string, decoding nothing else and
   * leaving the hottest as they were (a purge's pass visits every entry).
   */
  purgeFields(handle: Handle): PurgeFields {
    const slot = this.#checked(handle)
    return this.#decoded[slot]?.meta ?? unpackPurgeFields(this.#packed(slot))
  }

  #remember(slot: number, meta: EntryMeta): void {
    const hot = this.#decoded[slot]
    if (hot !== undefined) {
      hot.meta = meta
      hot.used = true
      return
    }
    const at = this.#placeDecoded()
    this.#clock[at] = slot
    this.#decoded[slot] = { meta, used: false, at }
  }

  /**
   * A place on the clock for one more decoded entry, by second chance (CLOCK): the hand passes
   * each entry used since it last passed it, unmarking it, and stops at a free place (its entry
   * was dropped from the index) or at the first entry not used, which is dropped. An entry asked
   * for again stays decoded about as long as under a strict LRU order.
   */
  #placeDecoded(): number {
    for (;;) {
      const at = this.#hand
      this.#hand = at + 1 === this.#clock.length ? 0 : at + 1
      const slot = this.#clock[at]!
      const hot = slot === NONE ? undefined : this.#decoded[slot]
      // Free: never taken, or its entry left the index (and may be decoded again elsewhere).
      if (hot === undefined || hot.at !== at) return at
      if (!hot.used) {
        this.#decoded[slot] = undefined
        return at
      }
      hot.used = false
    }
  }

  /** Where the variant part of a slot's packed string ends (at the NUL after it). */
  #variantEnd(slot: number): number {
    const at = this.#packedAt[slot]!
    const length = this.#packedLength[slot]!
    const end = Math.abs(length)
    let i = this.#keyLength[slot]! + 1
    while (i < end && this.#arena.charCodeAt(at, length, i) !== 0) i++
    return i
  }

  content(handle: Handle): ContentRecord {
    return this.#content[this.#checked(handle)]!
  }

  /**
   * Gives the variant another content record, or tells it its record's integrity changed (a
   * body hashed after it was published): the metadata decoded for it had the old one.
   */
  setContent(handle: Handle, content: ContentRecord): void {
    const slot = this.#checked(handle)
    this.#content[slot] = content
    const lru = lruOf(content)
    if (lru !== this.#lru[slot]) {
      this.#unlinkLru(slot)
      this.#lru[slot] = lru
      this.#linkLru(slot)
    }
    // The decoded metadata stays, with the content's size and digest: a body written behind its
    // publication gets its digest here when the writer answers, and an entry hit before that
    // (decoded then) need not be decoded again (5% of the decodes in a cold Zipf run).
    const hot = this.#decoded[slot]
    if (hot !== undefined) hot.meta = Object.freeze({ ...hot.meta, size: content.size, integrity: content.integrity })
  }

  id(handle: Handle): string {
    const slot = this.#checked(handle)
    return this.#arena.slice(this.#packedAt[slot]!, this.#packedLength[slot]!, 0, this.#variantEnd(slot))
  }

  key(handle: Handle): string {
    const slot = this.#checked(handle)
    return this.#arena.slice(this.#packedAt[slot]!, this.#packedLength[slot]!, 0, this.#keyLength[slot]!)
  }

  committedAt(handle: Handle): number {
    return this.#committedAt[this.#checked(handle)]!
  }

  lastAccess(handle: Handle): number {
    return this.#lastAccess[this.#checked(handle)]!
  }

  recency(handle: Handle): number {
    return this.#recency[this.#checked(handle)]!
  }

  /** Epoch ms after which the variant is useless (the store drops it); NaN or Infinity: never. */
  deleteAt(handle: Handle): number {
    return this.#deleteAt[this.#checked(handle)]!
  }

  indexLines(handle: Handle): number {
    return this.#indexLines[this.#checked(handle)]!
  }

  setIndexLines(handle: Handle, lines: number): void {
    this.#indexLines[this.#checked(handle)] = lines
  }

  /**
   * Whether the url, lower-cased, contains `needle` (lower-cased), for filters: read from the
   * packed metadata, no object decoded, and for a url kept as the key in one byte per
   * character (nearly all), matched on those bytes without making a string.
   */
  #urlIncludes(slot: number, needle: string): boolean {
    const at = this.#packedAt[slot]!
    const length = this.#packedLength[slot]!
    const variantEnd = this.#variantEnd(slot)
    // Compact form, url equal to the key (packed-meta.ts writes a 0 length for it).
    if (this.#arena.charCodeAt(at, length, variantEnd + 1) === 0x41 && this.#arena.charCodeAt(at, length, variantEnd + 2) === 0) {
      const keyLength = this.#keyLength[slot]!
      return this.#arena.includesFolded(at, length, 0, keyLength, needle, LATIN1_LOWER) ?? this.#arena.slice(at, length, 0, keyLength).toLowerCase().includes(needle)
    }
    return this.#meta(slot).url.toLowerCase().includes(needle)
  }

  // ---- changes --------------------------------------------------------------

  /** Replaces a variant's metadata (its Vary and deleteAt may change with a 304's headers). */
  updateMeta(handle: Handle, meta: EntryMeta): void {
    const slot = this.#checked(handle)
    this.#setPacked(slot, packMeta(meta))
    this.#deleteAt[slot] = typeof meta.deleteAt === 'number' ? meta.deleteAt : NaN
    this.#vary[slot] = this.#varyId(meta)
    this.#remember(slot, freezeMeta(meta as EntryMeta))
  }

  /**
   * Adds a variant, replacing one with the same key and variant. A replacement counts as a
   * fresh commit and a fresh use, so it moves to the newest end of both orders.
   */
  add(record: NewRecord): { handle: Handle; replaced?: RemovedEntry } {
    const { meta } = record
    const existing = this.#find(meta.key, meta.variant)
    const replaced = existing === NONE ? undefined : this.#remove(existing)
    const slot = this.#allocate()
    this.#setPacked(slot, packMeta(meta))
    this.#content[slot] = record.content
    this.#committedAt[slot] = record.committedAt
    this.#lastAccess[slot] = record.committedAt
    this.#recency[slot] = ++this.#uses
    this.#deleteAt[slot] = typeof meta.deleteAt === 'number' ? meta.deleteAt : NaN
    this.#keyLength[slot] = meta.key.length
    this.#vary[slot] = this.#varyId(meta)
    this.#indexLines[slot] = record.indexLines
    const h = hashKey(meta.key)
    this.#hash[slot] = h
    const bucket = h & this.#bucketMask
    this.#hashNext[slot] = this.#buckets[bucket]!
    this.#buckets[bucket] = slot
    this.#lru[slot] = lruOf(record.content)
    this.#linkLru(slot)
    this.#commitPrev[slot] = this.#commitTail
    this.#commitNext[slot] = NONE
    if (this.#commitTail !== NONE) this.#commitNext[this.#commitTail] = slot
    else this.#commitHead = slot
    this.#commitTail = slot
    this.#size++
    if (record.hot !== false && 'size' in meta && 'integrity' in meta) this.#remember(slot, freezeMeta(meta))
    return { handle: this.#handle(slot), replaced }
  }

  /** Removes a variant; undefined when it is already gone. */
  remove(handle: Handle): RemovedEntry | undefined {
    const slot = this.#slot(handle)
    return slot === NONE ? undefined : this.#remove(slot)
  }

  #remove(slot: number): RemovedEntry {
    const packed = this.#packed(slot)
    const keyLength = this.#keyLength[slot]!
    const variantEnd = packed.indexOf('\u0000', keyLength + 1)
    const removed: RemovedEntry = {
      id: packed.slice(0, variantEnd),
      key: packed.slice(0, keyLength),
      variant: packed.slice(keyLength + 1, variantEnd),
      content: this.#content[slot]!,
    }
    // Out of its hash chain.
    const bucket = this.#hash[slot]! & this.#bucketMask
    if (this.#buckets[bucket] === slot) this.#buckets[bucket] = this.#hashNext[slot]!
    else {
      let s = this.#buckets[bucket]!
      while (this.#hashNext[s] !== slot) s = this.#hashNext[s]!
      this.#hashNext[s] = this.#hashNext[slot]!
    }
    this.#unlinkLru(slot)
    const prev = this.#commitPrev[slot]!
    const next = this.#commitNext[slot]!
    // A scan about to visit this variant goes on to the one it would have visited after it.
    for (const cursor of this.#cursors) if (cursor.next === slot) cursor.next = prev
    if (prev !== NONE) this.#commitNext[prev] = next
    else this.#commitHead = next
    if (next !== NONE) this.#commitPrev[next] = prev
    else this.#commitTail = prev
    this.#decoded[slot] = undefined
    this.#freePacked(slot)
    this.#content[slot] = undefined
    this.#gen[slot] = (this.#gen[slot]! + 1) % SLOT_SPAN
    this.#hashNext[slot] = this.#free
    this.#free = slot
    this.#size--
    return removed
  }

  clear(): RemovedEntry[] {
    const all: RemovedEntry[] = []
    for (let s = this.#commitHead; s !== NONE; ) {
      const next = this.#commitNext[s]!
      all.push(this.#remove(s))
      s = next
    }
    return all
  }

  /** Links `slot` at the most recent end of its use order (#lru). */
  #linkLru(slot: number): void {
    const lru = this.#lru[slot]!
    const tail = this.#lruTails[lru]!
    this.#lruPrev[slot] = tail
    this.#lruNext[slot] = NONE
    if (tail !== NONE) this.#lruNext[tail] = slot
    else this.#lruHeads[lru] = slot
    this.#lruTails[lru] = slot
    this.#lruCounts[lru]!++
  }

  #unlinkLru(slot: number): void {
    const lru = this.#lru[slot]!
    const prev = this.#lruPrev[slot]!
    const next = this.#lruNext[slot]!
    if (prev !== NONE) this.#lruNext[prev] = next
    else this.#lruHeads[lru] = next
    if (next !== NONE) this.#lruPrev[next] = prev
    else this.#lruTails[lru] = prev
    this.#lruCounts[lru]!--
  }

  #allocate(): number {
    if (this.#free !== NONE) {
      const slot = this.#free
      this.#free = this.#hashNext[slot]!
      return slot
    }
    if (this.#fresh === this.#capacity) this.#grow()
    return this.#fresh++
  }

  /**
   * Grows every per-slot array by an eighth, in place: each is a view of a resizable ArrayBuffer
   * whose address space is reserved ahead (#reserve), so growing copies nothing and commits
   * only the pages the new slots touch when they are first used (a fresh slot is handed out
   * from #fresh, not threaded onto the free list ahead of use).
   * Grown by copying, as they were (by half: a doubling would leave up to half of them unused),
   * the old arrays stayed in memory beside the new ones until V8's next full collection: under a
   * 20 s miss storm, with the index at 200,000 to 300,000 entries, each growth left 18-27 MB of
   * old arrays behind, the new ones' 85 bytes a slot were up to half unused, and all of it was
   * on transparent huge pages (glibc maps allocations over 128 KiB with them under bin/caje),
   * where a page touched is 2 MiB resident. The hash table grows to the power of two at or
   * above the new capacity, rebuilt only when its size changes.
   */
  #grow(): void {
    const old = this.#capacity
    if (old >= SLOT_SPAN) throw new RangeError(`entry index: more than ${SLOT_SPAN} entries`)
    const capacity = Math.min(SLOT_SPAN, Math.max(MIN_CAPACITY, old + (old >> 3)))
    if (capacity > this.#reserved) this.#reserve(Math.min(SLOT_SPAN, Math.max(RESERVE_SLOTS, capacity * RESERVE_FACTOR)))
    for (const array of this.#slotArrays()) resizeSlots(array, capacity)
    this.#content.length = capacity
    this.#decoded.length = capacity
    this.#capacity = capacity
    const buckets = 2 ** Math.ceil(Math.log2(capacity))
    if (buckets !== this.#buckets.length) {
      this.#buckets = new Int32Array(buckets).fill(NONE)
      this.#bucketMask = buckets - 1
      for (let s = 0; s < this.#fresh; s++) {
        if (this.#packedLength[s] === 0) continue
        const bucket = this.#hash[s]! & this.#bucketMask
        this.#hashNext[s] = this.#buckets[bucket]!
        this.#buckets[bucket] = s
      }
    }
  }

  #slotArrays(): SlotArray[] {
    return [
      this.#packedAt, this.#packedLength, this.#committedAt, this.#lastAccess, this.#recency, this.#deleteAt, this.#lruPrev, this.#lruNext,
      this.#lru, this.#commitPrev, this.#commitNext, this.#hashNext, this.#hash, this.#keyLength, this.#gen, this.#vary, this.#indexLines,
    ]
  }

  /**
   * Reserves address space for `slots` slots in every per-slot array: new arrays, the slots in use
   * copied over. A reservation costs no memory until its pages are touched; it is made for
   * RESERVE_SLOTS at first and RESERVE_FACTOR times the capacity after, so a copy (and old arrays
   * left for the garbage collector) happens at a million slots, at four million, and so on.
   */
  #reserve(slots: number): void {
    const keep = this.#capacity
    this.#packedAt = slotArray(Float64Array, slots, this.#packedAt, keep)
    this.#packedLength = slotArray(Int32Array, slots, this.#packedLength, keep)
    this.#committedAt = slotArray(Float64Array, slots, this.#committedAt, keep)
    this.#lastAccess = slotArray(Float64Array, slots, this.#lastAccess, keep)
    this.#recency = slotArray(Float64Array, slots, this.#recency, keep)
    this.#deleteAt = slotArray(Float64Array, slots, this.#deleteAt, keep)
    this.#lruPrev = slotArray(Int32Array, slots, this.#lruPrev, keep)
    this.#lruNext = slotArray(Int32Array, slots, this.#lruNext, keep)
    this.#lru = slotArray(Uint8Array, slots, this.#lru, keep)
    this.#commitPrev = slotArray(Int32Array, slots, this.#commitPrev, keep)
    this.#commitNext = slotArray(Int32Array, slots, this.#commitNext, keep)
    this.#hashNext = slotArray(Int32Array, slots, this.#hashNext, keep)
    this.#hash = slotArray(Uint32Array, slots, this.#hash, keep)
    this.#keyLength = slotArray(Int32Array, slots, this.#keyLength, keep)
    this.#gen = slotArray(Int32Array, slots, this.#gen, keep)
    this.#vary = slotArray(Int32Array, slots, this.#vary, keep)
    this.#indexLines = slotArray(Int32Array, slots, this.#indexLines, keep)
    this.#reserved = slots
    this.#slotCopies++
  }

  /** Memory the per-slot arrays hold (their current length, not their reservation), for measures and tests. */
  get slotBytes(): number {
    let bytes = 0
    for (const array of this.#slotArrays()) bytes += array.byteLength
    return bytes
  }

  /** Slots the per-slot arrays have address space reserved for (see #reserve). */
  get reservedSlots(): number {
    return this.#reserved
  }

  /** Times the per-slot arrays were made anew (#reserve), each a copy of the slots in use: growing in place makes none. */
  get slotCopies(): number {
    return this.#slotCopies
  }

  // ---- orders ---------------------------------------------------------------

  /**
   * Puts both orders in commit-time order (ties keep their order), and recency with them:
   * what a store that added its entries as it read them from disk wants (use is not
   * persisted, so after a restart recency starts from commit order).
   */
  orderByCommitTime(): void {
    // A scan's place in the order would mean nothing after it (the store orders once, as it loads).
    if (this.#cursors.size > 0) throw new Error('entry index: reordered while a list is being made')
    const slots: number[] = []
    for (let s = this.#commitHead; s !== NONE; s = this.#commitNext[s]!) slots.push(s)
    slots.sort((a, b) => this.#committedAt[a]! - this.#committedAt[b]!)
    this.#commitHead = this.#commitTail = NONE
    this.#lruHeads.fill(NONE)
    this.#lruTails.fill(NONE)
    this.#lruCounts.fill(0)
    for (const slot of slots) {
      this.#linkLru(slot)
      this.#recency[slot] = ++this.#uses
      this.#commitPrev[slot] = this.#commitTail
      this.#commitNext[slot] = NONE
      if (this.#commitTail !== NONE) this.#commitNext[this.#commitTail] = slot
      else this.#commitHead = slot
      this.#commitTail = slot
    }
  }

  /**
   * The variants on disk, least recently read first: the disk's eviction order (entries kept in
   * memory only are not in it). Removing the variant just visited is safe.
   */
  *leastRecentlyUsed(): IterableIterator<Handle> {
    for (let s = this.#lruHeads[ON_DISK]!; s !== NONE; ) {
      const next = this.#lruNext[s]!
      yield this.#handle(s)
      s = next
    }
  }

  /**
   * Every variant, as a list taken now (safe to keep across awaits): those on disk least
   * recently read first, then those kept in memory only, likewise.
   */
  handles(): Handle[] {
    const all: Handle[] = []
    for (const head of this.#lruHeads) for (let s = head; s !== NONE; s = this.#lruNext[s]!) all.push(this.#handle(s))
    return all
  }

  /**
   * One page of variants, newest commit first, optionally filtered by a
   * case-insensitive substring of the url. One linear pass over the index, in
   * one go: listScan() makes the same pass in steps.
   */
  list(options: ListOptions = {}): IndexPage {
    const scan = this.listScan(options)
    while (!scan.step(Infinity));
    return scan.page()
  }

  /**
   * The pass list() makes, in steps of a given number of variants, so a caller can let the
   * event loop turn between them: a filter over a million entries reads every url (about
   * 300 ms in one go on a 2-core machine). The index may change between steps: a variant removed before the scan
   * reached it is not counted, one added meanwhile is newer than the scan and not visited
   * (as a list taken when the scan started), and a variant already on the page that is
   * removed later stays on it (check live() before reading it).
   */
  listScan(options: ListOptions = {}): ListScan {
    const needle = options.filter ? options.filter.toLowerCase() : ''
    const offset = Math.max(0, Math.floor(options.offset ?? 0))
    const limit = Math.max(0, Math.floor(options.limit ?? 50))
    const records: Handle[] = []
    let total = 0
    const cursor: ScanCursor = { next: this.#commitTail }
    this.#cursors.add(cursor)
    return {
      step: (variants) => {
        let s = cursor.next
        for (let n = 0; s !== NONE && n < variants; n++, s = this.#commitPrev[s]!) {
          if (needle && !this.#urlIncludes(s, needle)) continue
          if (total >= offset && records.length < limit) records.push(this.#handle(s))
          total++
        }
        cursor.next = s
        if (s !== NONE) return false
        this.#cursors.delete(cursor)
        return true
      },
      page: () => ({ total, records: records.slice() }),
      close: () => {
        this.#cursors.delete(cursor)
      },
    }
  }
}

/** A list() made in steps (EntryIndex.listScan). */
export interface ListScan {
  /** Visits up to `variants` more variants; whether the pass is done. */
  step(variants: number): boolean
  /** The page so far: the whole page once step() answered true. */
  page(): IndexPage
  /** Ends the pass early (a pass that is done needs no close). */
  close(): void
}

/** Where a scan in progress goes next: moved on by #remove when that variant leaves the index. */
interface ScanCursor {
  next: number
}

/** Metadata is shared with every caller: freeze it so a caller cannot change the index by accident. */
export function freezeMeta(meta: EntryMeta): EntryMeta {
  Object.freeze(meta.headers)
  Object.freeze(meta.varyHeaders)
  Object.freeze(meta.tags)
  return Object.freeze(meta)
}
