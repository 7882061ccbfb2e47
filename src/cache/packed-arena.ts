// Where the disk tier's in-memory index keeps each variant's packed metadata
// (packed-meta.ts): as bytes in large buffers outside V8's heap, not as one
// string per entry on it.
//
// A string per entry is about 190 bytes that live as long as the entry, each
// promoted into V8's old space among the short-lived objects of the request
// that stored it. Under a miss storm that is a steady trickle of long-lived
// strings into pages that are otherwise garbage: the old space's pages never
// empty, so V8 keeps them (a 20 s storm at 50 connections left the event
// loop's old space at 98 MB committed for 62 MB used), and every full
// collection marks the whole index again. Here the bytes sit in chunks of
// 2 MiB that V8 never scans, and what the index's strings took on the heap
// is plain memory, held once.
//
// A packed string is stored as one byte per character when every character is
// below 256 (the norm: URLs, header values as Node gives them, the packed
// numbers), else as UTF-16 code units; the index keeps where it is and its
// length in characters (negative for the two-byte form), so an entry costs
// its bytes and two numbers. Removing an entry leaves a hole; a chunk whose
// entries are all gone is freed at once, and when holes add up to an eighth of
// what is stored, the emptiest chunks are copied out (compact) and freed.

/** Where an entry's bytes are: chunk × LOCATION_SPAN + offset. */
export type Location = number

const LOCATION_SPAN = 2 ** 32

/**
 * 24 bytes less than 2 MiB: glibc serves it with a mapping of exactly 2 MiB, which Linux places
 * on a 2 MiB boundary and can back with one transparent huge page (see slab-arena.ts).
 */
export const DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024 - 24

/** Any character at or above 256: the string needs the two-byte form. */
const WIDE = /[^\u0000-\u00ff]/

export interface PackedArenaOptions {
  /** Size of one chunk (default DEFAULT_CHUNK_BYTES); a longer entry gets a chunk of its own. */
  chunkBytes?: number
}

export class PackedArena {
  readonly chunkBytes: number
  readonly #chunks: (Buffer | undefined)[] = []
  /** Bytes of live entries per chunk. */
  readonly #live: number[] = []
  /** Chunk numbers free for reuse. */
  readonly #spare: number[] = []
  /** The chunk new entries go to, and how much of it is taken. */
  #current = -1
  #used = 0
  #liveBytes = 0
  #heldBytes = 0
  /** Room in chunks other than the current one that no live entry takes. */
  #holes = 0

  constructor(options: PackedArenaOptions = {}) {
    this.chunkBytes = Math.max(64, Math.floor(options.chunkBytes ?? DEFAULT_CHUNK_BYTES))
  }

  /** Bytes of the entries stored. */
  get liveBytes(): number {
    return this.#liveBytes
  }

  /** Memory the chunks take. */
  get heldBytes(): number {
    return this.#heldBytes
  }

  /** The length code of `s` as the index keeps it: its length, negative for the two-byte form. */
  static lengthOf(s: string): number {
    return WIDE.test(s) ? -s.length : s.length
  }

  /** Stores `s` with the length code lengthOf(s) gave; returns where it is. */
  write(s: string, length: number): Location {
    const bytes = byteLength(length)
    const at = this.#reserve(bytes)
    const chunk = this.#chunks[Math.floor(at / LOCATION_SPAN)]!
    const offset = at % LOCATION_SPAN
    chunk.write(s, offset, bytes, length >= 0 ? 'latin1' : 'utf16le')
    return at
  }

  /** The string stored at `at`. */
  read(at: Location, length: number): string {
    return this.slice(at, length, 0, Math.abs(length))
  }

  /** Characters `start` to `end` (exclusive) of the string stored at `at`. */
  slice(at: Location, length: number, start: number, end: number): string {
    const chunk = this.#chunks[Math.floor(at / LOCATION_SPAN)]!
    const offset = at % LOCATION_SPAN
    return length >= 0 ? chunk.toString('latin1', offset + start, offset + end) : chunk.toString('utf16le', offset + 2 * start, offset + 2 * end)
  }

  /** Character `i` of the string stored at `at` (NaN past its end, as String#charCodeAt). */
  charCodeAt(at: Location, length: number, i: number): number {
    if (i < 0 || i >= Math.abs(length)) return NaN
    const chunk = this.#chunks[Math.floor(at / LOCATION_SPAN)]!
    const offset = at % LOCATION_SPAN
    return length >= 0 ? chunk[offset + i]! : chunk[offset + 2 * i]! | (chunk[offset + 2 * i + 1]! << 8)
  }

  /** Whether the string stored at `at` has `s` at character `from`, as String#startsWith(s, from). */
  startsWith(at: Location, length: number, s: string, from = 0): boolean {
    const n = s.length
    if (from < 0 || from + n > Math.abs(length)) return false
    const chunk = this.#chunks[Math.floor(at / LOCATION_SPAN)]!
    const offset = at % LOCATION_SPAN
    if (length >= 0) {
      for (let i = 0, p = offset + from; i < n; i++, p++) if (chunk[p] !== s.charCodeAt(i)) return false
      return true
    }
    for (let i = 0, p = offset + 2 * from; i < n; i++, p += 2) if ((chunk[p]! | (chunk[p + 1]! << 8)) !== s.charCodeAt(i)) return false
    return true
  }

  /**
   * Whether characters `start` to `end` (exclusive) of the string stored at `at`, each mapped
   * through `fold` (a table of 256 character codes), contain `needle`, as
   * `fold(slice).includes(needle)` without making the slice: for the one-byte form only
   * (undefined for the two-byte form).
   */
  includesFolded(at: Location, length: number, start: number, end: number, needle: string, fold: Uint16Array): boolean | undefined {
    if (length < 0) return undefined
    const n = needle.length
    if (n === 0) return true
    const chunk = this.#chunks[Math.floor(at / LOCATION_SPAN)]!
    const offset = at % LOCATION_SPAN
    const first = needle.charCodeAt(0)
    for (let p = offset + start, last = offset + end - n; p <= last; p++) {
      if (fold[chunk[p]!] !== first) continue
      let i = 1
      while (i < n && fold[chunk[p + i]!] === needle.charCodeAt(i)) i++
      if (i === n) return true
    }
    return false
  }

  /** Lets go of the string stored at `at`: its room is a hole until its chunk is freed or compacted. */
  free(at: Location, length: number): void {
    const bytes = byteLength(length)
    const c = Math.floor(at / LOCATION_SPAN)
    this.#live[c]! -= bytes
    this.#liveBytes -= bytes
    if (c === this.#current) return
    if (this.#live[c] === 0) {
      // Its holes were all of it but these bytes: the chunk goes, and its holes with it.
      this.#holes -= this.#chunks[c]!.length - bytes
      this.#drop(c)
    } else this.#holes += bytes
  }

  /** Whether holes add up to enough that compact() is worth a pass over the index. */
  get wantsCompaction(): boolean {
    return this.#holes > this.#holesAllowed
  }

  /**
   * An eighth of what is stored (and never less than two chunks). At a quarter, as it was, the
   * holes of a disk index at 234,000 entries under a miss storm were 7 MB (36 MB live in 43 MB of
   * chunks): the memory tier's entries come and go in the middle of the others. A compaction is
   * one pass over the index's slots (a few ms at 300,000) and a copy of the strings it moves.
   */
  get #holesAllowed(): number {
    return Math.max(2 * this.chunkBytes, this.#liveBytes / 8)
  }

  /**
   * Compacts: `visit` is called with `move`, which the owner calls for each string it holds
   * (its location and length code) and which answers the string's location from now on. The
   * emptiest chunks, enough to bring the holes down to half of what wantsCompaction allows,
   * are copied out and freed.
   */
  compact(visit: (move: (at: Location, length: number) => Location) => void): void {
    const limit = this.#holesAllowed / 2
    const candidates: number[] = []
    for (let c = 0; c < this.#chunks.length; c++) if (this.#chunks[c] !== undefined && c !== this.#current) candidates.push(c)
    candidates.sort((a, b) => this.#live[a]! / this.#chunks[a]!.length - this.#live[b]! / this.#chunks[b]!.length)
    const evacuate = new Set<number>()
    let holes = this.#holes
    for (const c of candidates) {
      if (holes <= limit) break
      evacuate.add(c)
      holes -= this.#chunks[c]!.length - this.#live[c]!
    }
    if (evacuate.size === 0) return
    for (const c of evacuate) this.#holes -= this.#chunks[c]!.length - this.#live[c]!
    visit((at, length) => {
      const c = Math.floor(at / LOCATION_SPAN)
      if (!evacuate.has(c)) return at
      const bytes = byteLength(length)
      const from = this.#chunks[c]!
      const offset = at % LOCATION_SPAN
      const to = this.#reserve(bytes)
      from.copy(this.#chunks[Math.floor(to / LOCATION_SPAN)]!, to % LOCATION_SPAN, offset, offset + bytes)
      this.#live[c]! -= bytes
      this.#liveBytes -= bytes
      return to
    })
    for (const c of evacuate) {
      if (this.#live[c] !== 0) throw new Error('packed arena: an entry was not moved out of a chunk being compacted')
      this.#drop(c)
    }
  }

  #reserve(bytes: number): Location {
    if (this.#current === -1 || this.#used + bytes > this.#chunks[this.#current]!.length) {
      if (bytes > this.chunkBytes) {
        // An entry longer than a chunk gets one of its own, full from the start.
        const c = this.#newChunk(bytes)
        this.#live[c] = bytes
        this.#liveBytes += bytes
        return c * LOCATION_SPAN
      }
      const retired = this.#current
      if (retired !== -1) {
        if (this.#live[retired] === 0) this.#drop(retired)
        else this.#holes += this.#chunks[retired]!.length - this.#live[retired]!
      }
      this.#current = this.#newChunk(this.chunkBytes)
      this.#used = 0
    }
    const at = this.#current * LOCATION_SPAN + this.#used
    this.#used += bytes
    this.#live[this.#current]! += bytes
    this.#liveBytes += bytes
    return at
  }

  #newChunk(bytes: number): number {
    const c = this.#spare.pop() ?? this.#chunks.length
    // Never read before written: every byte handed out is written by write() or compact().
    this.#chunks[c] = Buffer.allocUnsafeSlow(bytes)
    this.#live[c] = 0
    this.#heldBytes += bytes
    return c
  }

  /** Frees a chunk (not the current one) with no live entry left in it. */
  #drop(c: number): void {
    this.#heldBytes -= this.#chunks[c]!.length
    this.#chunks[c] = undefined
    this.#live[c] = 0
    this.#spare.push(c)
  }
}

function byteLength(length: number): number {
  return length >= 0 ? length : -2 * length
}
