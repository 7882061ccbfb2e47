// Memory for the bodies the memory tier keeps: a few large slabs that bodies
// are copied into, one after the other, instead of one allocation per body.
//
// Why: tens of thousands of small long-lived bodies, each its own malloc'd
// buffer, sit among the short-lived buffers of every request. When the tier
// evicts, the holes they leave are scattered through the process heap, which
// glibc cannot hand back to the system: under a storm of misses the heap kept
// about 1.5 times the tier's budget. A slab is one large block; a slab whose
// bodies are all gone is dropped whole, and one left sparse by evictions is
// compacted (its remaining bodies copied into the newest slab).
//
// The budget is memory, not body bytes: the slabs, whole, never add up to more
// than it (the room they need for dead space and for the slab being filled
// comes out of it, see bodyBytes), so a tier of N bytes takes at most N bytes
// of the process's memory for its bodies.
//
// A dropped slab is used again, from its first byte, only when the arena knows
// that nothing can still read it:
// - every view of it handed out beyond the arena's own bookkeeping was counted:
//   a reserve()d body being written and then read by the disk writer's thread
//   holds its slab until settle() (and keeps it out of compacting, see
//   #sparsest); a body lent to a reader (a hit, which may be sent to a slow
//   client for minutes) holds its slab until the reader gives it back (lend(),
//   then giveBack() once the response is written out or its connection
//   closed); a body handed to a reader that never says when it is
//   done marks its slab exposed(), and an exposed slab is never used again: it
//   is freed by the garbage collector once nothing refers to it, as every
//   dropped slab was before.
// - Freed by the garbage collector means freed by every thread's: the disk
//   writer's thread receives the slabs its bodies live in, and keeps each one it
//   was handed until its own collector runs, which a thread that allocates
//   little rarely does. A slab used again costs nothing more, whoever holds it.
// - Under a storm of misses no body is read back from memory, and without reuse
//   the slabs the tier dropped waited for a full garbage collection (V8 starts
//   one only after about 64 MB more memory outside its heap), a quarter of the
//   tier's budget on top of it. Reused, they cost nothing more.
// Otherwise memory is never written twice: a body is copied to fresh space,
// never over space another body used.
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
  /** No longer part of the arena: nothing more is placed here (until it is used again, see #retire). */
  dropped = false
  /** Reserved bodies not settled yet: their writers (and the disk writer's thread) may still read or write them. */
  holds = 0
  /** Bodies lent to readers and not given back yet (lend()): not used again until they are. */
  readers = 0
  /** A view was handed to a reader the arena cannot follow: never used again. */
  exposed = false
  /** Given up for good (the arena was cleared): never used again. */
  discarded = false

  constructor(size: number, memory = new SharedArrayBuffer(size)) {
    this.memory = memory
    this.bytes = new Uint8Array(this.memory)
  }
}

/**
 * Makes memory for `count` new slabs of `bytes` ready on another thread: allocated, and every
 * page of it touched, so that the thread placing bodies never waits for the allocation or
 * the page faults of a fresh slab. Calls `ready` once, with what it made (fewer or none when
 * it could not).
 * On the virtual machines caje is measured on, a fresh 4 MiB slab cost the event loop 1 to
 * 30 ms (the kernel zeroing, and compacting memory for, its transparent huge pages), a tenth
 * of its time under a cold Zipf mix.
 */
export type SlabMaker = (bytes: number, count: number, ready: (made: SharedArrayBuffer[]) => void) => void

/** Slabs made ready ahead (SlabMaker) at most, counted in the arena's budget like any free slab, while it is under its limit. */
const READY_SLABS = 2

export interface SlabArenaOptions {
  /** The most memory held for bodies at once (the memory tier's budget): slabs, whole, and bodies with memory of their own. */
  budgetBytes: number
  /** Size of one slab (default: a 64th of the budget, a power of two between 64 KiB and 4 MiB; 24 bytes less from 2 MiB, see defaultSlabBytes). */
  slabBytes?: number
}

const MIN_SLAB_BYTES = 64 * 1024
const MAX_SLAB_BYTES = 4 * 1024 * 1024

export class SlabArena {
  readonly budgetBytes: number
  readonly slabBytes: number
  /** Bodies larger than this get memory of their own: in a slab, one would leave a hole as large when it goes. */
  readonly ownBufferFrom: number
  /** Memory held at most before sparse slabs are compacted: the budget less one slab, the most that opening a slab can add on top. */
  readonly limitBytes: number
  /**
   * The most body bytes to place (what the memory tier keeps at most): the limit less room for
   * dead space, so that compacting always finds some. Bodies do not fill slabs exactly (a slab's
   * tail too small for the next body stays empty), and evictions out of order leave holes.
   */
  readonly bodyBytes: number
  #slabs: Slab[] = []
  #open: Slab | undefined
  /** Bytes of bodies with memory of their own. */
  #ownBytes = 0
  #liveBytes = 0
  #compactedBytes = 0
  /** Dropped slabs nothing can read any more, to be used again before a new one is allocated. */
  #free: Slab[] = []
  /** Slabs allocated so far (reused ones not counted). */
  #allocated = 0
  /** Slabs allocated and not yet collected by the garbage collector (its finalizer counts them down). */
  #alive = 0
  /** Dropped slabs that reserved bodies still hold (see settle()). */
  #droppedHeld = 0
  readonly #collected = new FinalizationRegistry<undefined>(() => {
    this.#alive--
  })
  /** Buffers handed out by reserve() and not settled yet. */
  readonly #reserved = new WeakSet<Buffer>()
  /** The slab behind each slab's memory, for settle() and expose() given only a buffer. */
  readonly #slabOf = new WeakMap<ArrayBufferLike, Slab>()
  #maker: SlabMaker | undefined
  /** Slabs asked of the maker and not come yet. */
  #making = 0

  constructor(opts: SlabArenaOptions) {
    const { budgetBytes } = opts
    if (!Number.isSafeInteger(budgetBytes) || budgetBytes < 0) throw new RangeError(`slab arena budget must be a non-negative integer, got ${budgetBytes}`)
    this.budgetBytes = budgetBytes
    this.slabBytes = opts.slabBytes ?? defaultSlabBytes(budgetBytes)
    if (!Number.isSafeInteger(this.slabBytes) || this.slabBytes < 1) throw new RangeError(`slab size must be a positive integer, got ${this.slabBytes}`)
    this.ownBufferFrom = Math.floor(this.slabBytes / 8)
    this.limitBytes = Math.max(0, budgetBytes - this.slabBytes)
    // Dead space allowed: a sixteenth of the budget, and never under two slabs (the one being
    // filled, and one to compact into). More room means less copying.
    this.bodyBytes = Math.max(0, this.limitBytes - Math.max(2 * this.slabBytes, Math.floor(budgetBytes / 16)))
  }

  /** Body bytes placed and not released. */
  get liveBytes(): number {
    return this.#liveBytes
  }

  /** Memory the arena holds for bodies: its slabs, whole (free ones too), and the bodies with memory of their own. */
  get heldBytes(): number {
    return this.#placingBytes + this.#free.length * this.slabBytes
  }

  /** Slabs allocated so far; a slab used again is not allocated again. */
  get allocatedSlabs(): number {
    return this.#allocated
  }

  /**
   * Memory of slabs the arena no longer counts in heldBytes and the garbage collector has not
   * freed yet: dropped slabs that reserved bodies still hold (the disk writer's queue), ones
   * still lent to readers, exposed ones, and ones kept out of the free list because they would take the arena over its budget.
   */
  get droppedBytes(): number {
    return Math.max(0, this.#alive - this.#slabs.length - this.#free.length) * this.slabBytes
  }

  /** Memory of the dropped slabs that reserved bodies still hold (part of droppedBytes). */
  get droppedHeldBytes(): number {
    return this.#droppedHeld * this.slabBytes
  }

  /** Memory of the slabs bodies are placed in, and of the bodies with memory of their own: what the limit bounds. */
  get #placingBytes(): number {
    return this.#slabs.length * this.slabBytes + this.#ownBytes
  }

  get slabCount(): number {
    return this.#slabs.length
  }

  /** Body bytes copied by compaction so far. */
  get compactedBytes(): number {
    return this.#compactedBytes
  }

  /**
   * New slabs are made ready by `maker`, ahead of need: a few (READY_SLABS) wait in the free
   * list, within the budget, and each one taken from there asks for another. A slab needed
   * when none is ready is allocated here, as without a maker.
   */
  makeSlabsWith(maker: SlabMaker): void {
    this.#maker = maker
    this.#makeAhead()
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
      if (this.#placingBytes > this.limitBytes + this.slabBytes) this.#openSlab()
    } else {
      this.#put(placement, body, this.#roomFor(length))
    }
    this.#liveBytes += length
    return placement
  }

  /**
   * Room for a body of `length` bytes that is not there yet: the caller fills `buffer`, then
   * either adopt()s it (no copy) or lets it go (its room is dead space), and in both cases
   * settle()s it once nothing of its own reads it any more. Until then its slab is not used
   * again. Undefined for a body that would get memory of its own.
   */
  reserve(length: number): Placement | undefined {
    if (length === 0 || length > this.ownBufferFrom) return undefined
    const slab = this.#roomFor(length)
    const at = slab.used
    slab.used = at + length
    slab.holds++
    const buffer = Buffer.from(slab.memory, at, length)
    this.#reserved.add(buffer)
    return { buffer, slab }
  }

  /** Whether `buffer` came from reserve() and is not settled yet (its bytes are still the ones written there). */
  holds(buffer: Buffer): boolean {
    return this.#reserved.has(buffer)
  }

  /**
   * The reserved `buffer` is no longer read or written by whoever reserved it (its disk write
   * is done or given up). Anything else is ignored, so settling twice is harmless.
   */
  settle(buffer: Buffer): void {
    if (!this.#reserved.delete(buffer)) return
    const slab = this.#slabOf.get(buffer.buffer)
    if (!slab) return
    slab.holds--
    if (slab.holds !== 0) return
    if (slab.dropped) {
      if (!slab.discarded) this.#droppedHeld--
      this.#retire(slab)
    } else if (slab.live === 0 && slab !== this.#open) {
      // Filled with bodies none of which was kept (see #openSlab): nothing is placed here now.
      this.#drop(slab)
    }
  }

  /**
   * `buffer` (a view of a placed body) goes to a reader the arena cannot follow, such as a
   * response: its slab is never used again, whatever becomes of the body.
   */
  expose(buffer: Buffer): void {
    const slab = this.#slabOf.get(buffer.buffer)
    if (slab) slab.exposed = true
  }

  /** The slab `buffer` is a view of, if it is one of this arena's. */
  slabOf(buffer: Uint8Array): Slab | undefined {
    return this.#slabOf.get(buffer.buffer)
  }

  /**
   * A body placed in `slab` goes to a reader that gives it back (giveBack(slab), once) when it
   * no longer reads it: until then the slab is not used again, even once dropped.
   */
  lend(slab: Slab): void {
    slab.readers++
  }

  /** A body lend() lent out of `slab` is no longer read. */
  giveBack(slab: Slab): void {
    slab.readers--
    if (slab.readers === 0 && slab.dropped && slab.holds === 0) this.#retire(slab)
  }

  /**
   * Keeps a reserved body where it is, recorded in `placement` (buffer and slab). False when
   * its slab was dropped meanwhile (it held nothing else), or the body was settled already:
   * place() a copy then (only while it holds(), see memory-tier.ts).
   */
  adopt(placement: Placement, reserved: Placement): boolean {
    const slab = reserved.slab
    if (!slab || slab.dropped || !this.#reserved.has(reserved.buffer)) return false
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

  /** Forgets every body (their buffers stay valid for whoever still holds them: no slab is used again). */
  clear(): void {
    for (const slab of this.#slabs) {
      for (const placement of slab.placements) placement.slab = undefined
      slab.dropped = true
      slab.discarded = true
    }
    for (const slab of this.#free) slab.discarded = true
    this.#free = []
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
    // A new slab can fill up with bodies moved out of sparse ones: then another comes. Compacting
    // comes to an end only while the live bodies stay under bodyBytes (the memory tier's limit);
    // a caller placing more would have bodies moved round from slab to slab forever, so after
    // as many tries as there are slabs a slab opens without compacting: the arena goes over its
    // limit by that slab instead of hanging the process.
    let compactingTries = this.#slabs.length + 1
    while (!slab || slab.used + length > this.slabBytes) slab = this.#openSlab(compactingTries-- > 0)
    return slab
  }

  /**
   * A new slab to place bodies in. When it takes the arena over its limit, the live bodies of
   * the sparsest slabs move into it and those slabs are dropped. The first always fits (the new
   * slab is empty), so the memory held never grows past the limit by more than one slab; each
   * move leaves less dead space, so opening slabs comes to an end.
   */
  #openSlab(compact = true): Slab {
    const previous = this.#open
    // One that bodies being written still hold stays: they may yet be kept there (settle() drops it if none is).
    if (previous && previous.live === 0 && previous.holds === 0) this.#drop(previous)
    const fresh = this.#free.pop() ?? this.#newSlab()
    fresh.dropped = false
    this.#slabs.push(fresh)
    this.#open = fresh
    while (compact && this.#placingBytes > this.limitBytes) {
      const victim = this.#sparsest(fresh)
      // A slab with no dead space gains nothing (the tier never holds more than its budget, so
      // over the limit there is always a slab with some, though it may be one that bodies being
      // written hold: then the arena stays over its limit until they settle, see #sparsest).
      if (!victim || victim.live > this.slabBytes - fresh.used || victim.live === this.slabBytes) break
      this.#compactedBytes += victim.live
      for (const placement of victim.placements) this.#put(placement, placement.buffer, fresh)
      victim.placements.clear()
      victim.live = 0
      this.#drop(victim)
    }
    // Asked for once compacting is done: a slab it emptied is used again first, and at the
    // limit nothing is made only to be let go when it comes.
    this.#makeAhead()
    return fresh
  }

  /**
   * The slab with the fewest live bytes, leaving out `except` and the slabs bodies being written
   * still hold. Such a slab looks sparse (its bodies count as live only once kept), but dropping
   * it frees nothing until their writes settle, and the bodies kept then are copied again: when
   * they did settle the arena was at its limit, so the slab went to the garbage collector instead
   * of being used again (under a miss storm after a Zipf mix, about one slab in ten it dropped).
   */
  #sparsest(except: Slab): Slab | undefined {
    let best: Slab | undefined
    for (const slab of this.#slabs) if (slab !== except && slab.holds === 0 && (!best || slab.live < best.live)) best = slab
    return best
  }

  /**
   * Asks the maker for the ready slabs missing while the arena is still growing: as far as its
   * limit has room for them beside the free ones. Near the limit new slabs come from compacting
   * and from slabs used again, whose pages are in already; one made then would take the room of
   * such a slab, which would go to the garbage collector while fresh pages are faulted in.
   */
  #makeAhead(): void {
    const maker = this.#maker
    if (!maker) return
    let count = 0
    while (this.#free.length + this.#making + count < READY_SLABS && this.#placingBytes + (this.#free.length + this.#making + count + 1) * this.slabBytes <= this.limitBytes) count++
    if (count === 0) return
    this.#making += count
    maker(this.slabBytes, count, (made) => {
      this.#making -= count
      for (const memory of made) {
        // The budget has no room for it now: the garbage collector frees it.
        if (memory.byteLength !== this.slabBytes || this.#placingBytes + (this.#free.length + 1) * this.slabBytes > this.budgetBytes) continue
        this.#free.push(this.#newSlab(memory))
      }
    })
  }

  #newSlab(memory?: SharedArrayBuffer): Slab {
    const slab = new Slab(this.slabBytes, memory)
    this.#slabOf.set(slab.memory, slab)
    this.#allocated++
    this.#alive++
    this.#collected.register(slab.memory, undefined)
    return slab
  }

  #drop(slab: Slab): void {
    slab.dropped = true
    const i = this.#slabs.indexOf(slab)
    if (i >= 0) this.#slabs.splice(i, 1)
    if (this.#open === slab) this.#open = undefined
    if (slab.holds === 0) this.#retire(slab)
    else this.#droppedHeld++
  }

  /**
   * A dropped slab nothing of the arena's own reads any more: free to use again, unless a
   * reader still reads it (lent: retired once given back) or may (exposed), or keeping it would
   * take the arena over its budget (then the garbage collector frees it).
   * The budget, not the limit: a slab compaction empties was dropped just after the new slab
   * its bodies moved into was opened, so the arena sits at its limit then; measured against
   * the limit, no such slab was ever used again, and with bodies evicted out of order (a hit
   * makes its body the most recent) every one went to the garbage collector: under a miss
   * storm after a Zipf mix, 30 to 130 MB of them waited there, and in the disk writer's thread.
   */
  #retire(slab: Slab): void {
    if (slab.exposed || slab.discarded || slab.live !== 0 || slab.readers !== 0) return
    if (this.#placingBytes + (this.#free.length + 1) * this.slabBytes > this.budgetBytes) return
    slab.used = 0
    this.#free.push(slab)
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
