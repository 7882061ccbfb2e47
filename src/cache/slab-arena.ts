// Memory for the bodies the memory tier keeps: a few large slabs that bodies
// are copied into, one after the other, instead of one allocation per body.
//
// Why: tens of thousands of small long-lived bodies, each its own malloc'd
// buffer, sit among the short-lived buffers of every request. When the tier
// evicts, the holes they leave are scattered through the process heap, which
// glibc cannot hand back to the system: under a storm of misses the heap kept
// about 1.5 times the tier's budget. A slab is one large block; a slab whose
// bodies are all gone is dropped whole, and one left sparse by evictions is
// compacted (its remaining bodies copied into the newest slab), so a tier of N
// bytes holds about N bytes of memory.
//
// Memory is never written twice: a body is copied to fresh space, never over
// space another body used, because a body handed out earlier (a response still
// being written to a slow client) may still be reading it. A dropped slab is
// freed by the garbage collector once nothing refers to it any more.
//
// Slabs are SharedArrayBuffers, as the bodies were before: the disk writer's
// thread and the memory tier can refer to the same bytes without a copy.

/** Where one body lives: the arena moves it (and updates both fields) when it compacts. */
export interface Placement {
  buffer: Buffer
  /** The slab holding the body; undefined for a body with memory of its own (or none). */
  slab: Slab | undefined
}

export class Slab {
  readonly memory: SharedArrayBuffer
  readonly bytes: Uint8Array
  /** Bytes handed out so far (the next body goes here). */
  used = 0
  /** Bytes of the bodies still placed here. */
  live = 0
  readonly placements = new Set<Placement>()
  /** No longer part of the arena: nothing more is placed here. */
  dropped = false

  constructor(size: number) {
    this.memory = new SharedArrayBuffer(size)
    this.bytes = new Uint8Array(this.memory)
  }
}

export interface SlabArenaOptions {
  /** The most body bytes held at once (the memory tier's budget): sets the slab size and the room for dead space. */
  budgetBytes: number
  /** Size of one slab (default: a 64th of the budget, a power of two between 64 KiB and 4 MiB; 24 bytes less from 2 MiB, see defaultSlabBytes). */
  slabBytes?: number
}

const MIN_SLAB_BYTES = 64 * 1024
const MAX_SLAB_BYTES = 4 * 1024 * 1024

export class SlabArena {
  readonly slabBytes: number
  /** Bodies larger than this get memory of their own: in a slab, one would leave a hole as large when it goes. */
  readonly ownBufferFrom: number
  /** Slab memory held at most before sparse slabs are compacted: the budget and some room for dead space. */
  readonly limitBytes: number
  #slabs: Slab[] = []
  #open: Slab | undefined
  /** Bytes of bodies with memory of their own. */
  #ownBytes = 0
  #liveBytes = 0
  #compactedBytes = 0

  constructor(opts: SlabArenaOptions) {
    const { budgetBytes } = opts
    if (!Number.isSafeInteger(budgetBytes) || budgetBytes < 0) throw new RangeError(`slab arena budget must be a non-negative integer, got ${budgetBytes}`)
    this.slabBytes = opts.slabBytes ?? defaultSlabBytes(budgetBytes)
    if (!Number.isSafeInteger(this.slabBytes) || this.slabBytes < 1) throw new RangeError(`slab size must be a positive integer, got ${this.slabBytes}`)
    this.ownBufferFrom = Math.floor(this.slabBytes / 8)
    // Dead space allowed before compacting: a sixteenth of the budget, and never under two
    // slabs (the one being filled, and one to compact into). More room means less copying.
    this.limitBytes = budgetBytes + Math.max(2 * this.slabBytes, Math.floor(budgetBytes / 16))
  }

  /** Body bytes placed and not released. */
  get liveBytes(): number {
    return this.#liveBytes
  }

  /** Memory the arena holds for bodies: its slabs, whole, and the bodies with memory of their own. */
  get heldBytes(): number {
    return this.#slabs.length * this.slabBytes + this.#ownBytes
  }

  get slabCount(): number {
    return this.#slabs.length
  }

  /** Body bytes copied by compaction so far. */
  get compactedBytes(): number {
    return this.#compactedBytes
  }

  /** Copies `body` into the arena and records where in `placement` (buffer and slab). */
  place<P extends Placement>(placement: P, body: Uint8Array): P {
    const length = body.byteLength
    if (length === 0 || length > this.ownBufferFrom) {
      const buffer = Buffer.from(new SharedArrayBuffer(length))
      buffer.set(body)
      placement.buffer = buffer
      placement.slab = undefined
      this.#ownBytes += length
      // Room of its own comes on top of the slabs: compact them if that goes over the limit.
      if (this.heldBytes > this.limitBytes + this.slabBytes) this.#openSlab()
    } else {
      this.#put(placement, body, this.#roomFor(length))
    }
    this.#liveBytes += length
    return placement
  }

  /**
   * Room for a body of `length` bytes that is not there yet: the caller fills `buffer`, then
   * either adopt()s it (no copy) or lets it go (its room is dead space). Undefined for a body
   * that would get memory of its own.
   */
  reserve(length: number): Placement | undefined {
    if (length === 0 || length > this.ownBufferFrom) return undefined
    const slab = this.#roomFor(length)
    const at = slab.used
    slab.used = at + length
    return { buffer: Buffer.from(slab.memory, at, length), slab }
  }

  /**
   * Keeps a reserved body where it is, recorded in `placement` (buffer and slab). False when
   * its slab was dropped meanwhile (it held nothing else): place() a copy then.
   */
  adopt(placement: Placement, reserved: Placement): boolean {
    const slab = reserved.slab
    if (!slab || slab.dropped) return false
    placement.buffer = reserved.buffer
    placement.slab = slab
    slab.live += reserved.buffer.byteLength
    slab.placements.add(placement)
    this.#liveBytes += reserved.buffer.byteLength
    return true
  }

  /** The body at `placement` is no longer kept; its space becomes dead and is reclaimed with its slab. */
  release(placement: Placement): void {
    const length = placement.buffer.byteLength
    this.#liveBytes -= length
    const slab = placement.slab
    if (!slab) {
      this.#ownBytes -= length
      return
    }
    placement.slab = undefined
    slab.placements.delete(placement)
    slab.live -= length
    if (slab.live === 0 && slab !== this.#open) this.#drop(slab)
  }

  /** Forgets every body (their buffers stay valid for whoever still holds them). */
  clear(): void {
    for (const slab of this.#slabs) {
      for (const placement of slab.placements) placement.slab = undefined
      slab.dropped = true
    }
    this.#slabs = []
    this.#open = undefined
    this.#ownBytes = 0
    this.#liveBytes = 0
  }

  #put(placement: Placement, body: Uint8Array, slab: Slab): void {
    const at = slab.used
    slab.bytes.set(body, at)
    slab.used = at + body.byteLength
    slab.live += body.byteLength
    slab.placements.add(placement)
    placement.buffer = Buffer.from(slab.memory, at, body.byteLength)
    placement.slab = slab
  }

  /** The slab to place `length` more bytes in: the open one, or a new one. */
  #roomFor(length: number): Slab {
    let slab = this.#open
    // A new slab can fill up with bodies moved out of sparse ones: then another comes.
    while (!slab || slab.used + length > this.slabBytes) slab = this.#openSlab()
    return slab
  }

  /**
   * A new slab to place bodies in. When it takes the arena over its limit, the live bodies of
   * the sparsest slabs move into it and those slabs are dropped. The first always fits (the new
   * slab is empty), so the memory held never grows past the limit by more than one slab; each
   * move leaves less dead space, so opening slabs comes to an end.
   */
  #openSlab(): Slab {
    const previous = this.#open
    if (previous && previous.live === 0) this.#drop(previous)
    const fresh = new Slab(this.slabBytes)
    this.#slabs.push(fresh)
    this.#open = fresh
    while (this.heldBytes > this.limitBytes) {
      const victim = this.#sparsest(fresh)
      // A slab with no dead space gains nothing (the tier never holds more than its budget, so
      // over the limit there is always a slab with some).
      if (!victim || victim.live > this.slabBytes - fresh.used || victim.live === this.slabBytes) break
      this.#compactedBytes += victim.live
      for (const placement of victim.placements) this.#put(placement, placement.buffer, fresh)
      victim.placements.clear()
      victim.live = 0
      this.#drop(victim)
    }
    return fresh
  }

  #sparsest(except: Slab): Slab | undefined {
    let best: Slab | undefined
    for (const slab of this.#slabs) if (slab !== except && (!best || slab.live < best.live)) best = slab
    return best
  }

  #drop(slab: Slab): void {
    slab.dropped = true
    const i = this.#slabs.indexOf(slab)
    if (i >= 0) this.#slabs.splice(i, 1)
    if (this.#open === slab) this.#open = undefined
  }
}

function defaultSlabBytes(budgetBytes: number): number {
  let size = MIN_SLAB_BYTES
  while (size < MAX_SLAB_BYTES && size * 2 <= budgetBytes / 64) size *= 2
  // A slab of 2 MiB or more is a mapping of its own (bin/caje holds glibc's mmap threshold
  // at 128 KiB), and glibc maps the request plus its 8-byte chunk header, rounded up to
  // whole pages. 24 bytes less than a multiple of 2 MiB makes that mapping exactly the
  // multiple, which Linux places on a 2 MiB boundary, so the transparent huge pages that
  // bin/caje asks glibc for (glibc.malloc.hugetlb=1) cover all of it: two page faults per
  // 4 MiB slab instead of 1,024. On the virtual machines caje is measured on, a 4 KiB fault
  // costs about 25 µs, three per 10 KB body copied into a fresh slab.
  return size >= HUGE_PAGE_BYTES ? size - MALLOC_MMAP_OVERHEAD : size
}

/** The transparent huge page size of x86-64 and arm64 (4 KiB base pages). */
const HUGE_PAGE_BYTES = 2 * 1024 * 1024
/** What glibc adds to a request it serves with a mapping of its own: a 16-byte aligned chunk with an 8-byte header. */
const MALLOC_MMAP_OVERHEAD = 24
