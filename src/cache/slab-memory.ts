// Memory for new slabs (slab-arena.ts), its pages mapped ahead of use by a
// thread of its own.
//
// A new slab is fresh memory: the first write to each of its pages faults,
// and the kernel finds, zeroes and maps a page. On the virtual machines caje
// runs on a fault costs tens of microseconds (about 35 µs measured here), and
// a 10 KiB body spans three pages: on a storm of misses, or a cold cache
// filling, that was a fifth of the event loop's time per miss. Here a small
// thread writes to every page of the next slabs before the arena asks for
// them, so the event loop finds them mapped.
//
// Only memory the thread has finished with is handed out, so no slab is ever
// written by both threads at once. It says so through shared memory, not a
// message: a busy event loop sees it at once. When nothing is ready (a burst
// outran the thread), a slab is plain fresh memory, as before.

import { Worker } from 'node:worker_threads'

/** Slabs made ready ahead of the one in use: a burst of new bodies fills more than one in the time the thread maps one. */
const AHEAD = 2

export interface SlabMemory {
  /** Memory for a new slab of `bytes` bytes: mapped ahead when it is ready, else plain fresh memory. */
  take(bytes: number): SharedArrayBuffer
  /** Slabs handed out with their pages mapped ahead, so far. */
  readonly readyTaken: number
  /** Resolves once the thread has mapped every slab given to it so far (for tests). */
  settled(): Promise<void>
}

/** A source of slab memory that maps pages ahead on the process's page-mapping thread. */
export function createSlabMemory(): SlabMemory {
  /** Slabs handed to the thread, oldest first; the thread maps them in that order. */
  const queued: SharedArrayBuffer[] = []
  /** How many of this source's slabs the thread has mapped (it counts up, in order). */
  const mapped = new Int32Array(new SharedArrayBuffer(4))
  let posted = 0
  let taken = 0
  let size = 0
  let readyTaken = 0

  function prepare(): void {
    while (queued.length < AHEAD) {
      const memory = new SharedArrayBuffer(size)
      queued.push(memory)
      posted++
      mappingThread().postMessage({ memory, mapped, seq: posted })
    }
  }

  return {
    take(bytes) {
      if (bytes !== size) {
        // A new size: what was prepared does not fit (an arena keeps one size, so this is once).
        taken += queued.length
        queued.length = 0
        size = bytes
      }
      let memory: SharedArrayBuffer
      if (queued.length > 0 && Atomics.load(mapped, 0) > taken) {
        memory = queued.shift()!
        taken++
        readyTaken++
      } else memory = new SharedArrayBuffer(bytes)
      prepare()
      return memory
    },
    get readyTaken() {
      return readyTaken
    },
    async settled() {
      for (let seen = Atomics.load(mapped, 0); seen < posted; seen = Atomics.load(mapped, 0)) {
        await waitAsync(mapped, 0, seen).value
      }
    },
  }
}

/** Atomics.waitAsync (in Node since 16; missing from the TypeScript lib this project targets). */
const waitAsync = (Atomics as unknown as { waitAsync(array: Int32Array, index: number, value: number): { value: Promise<string> | string } }).waitAsync

let thread: Worker | undefined

/** The one page-mapping thread of the process, started on first use; it never keeps the process alive. */
function mappingThread(): Worker {
  if (thread) return thread
  const worker = new Worker(MAPPER_SOURCE, { eval: true })
  worker.unref()
  // Mapping ahead is an optimisation: a thread that fails is replaced on next use, and the
  // slabs it was given simply stay unmapped (never handed out ready).
  worker.on('error', () => {
    if (thread === worker) thread = undefined
  })
  worker.on('exit', () => {
    if (thread === worker) thread = undefined
  })
  thread = worker
  return worker
}

/** The thread's body: runs as a script of its own (eval), so it refers to nothing outside itself. */
function pageMapper(): void {
  const { parentPort } = process.getBuiltinModule('node:worker_threads')
  const PAGE = 4096
  parentPort!.on('message', ({ memory, mapped, seq }: { memory: SharedArrayBuffer; mapped: Int32Array; seq: number }) => {
    const bytes = new Uint8Array(memory)
    // A write maps a page of its own (a read would only map the shared zero page, and the
    // event loop's first write would still fault). The memory is all zeroes: writing one keeps it so.
    for (let i = 0; i < bytes.length; i += PAGE) bytes[i] = 0
    Atomics.store(mapped, 0, seq)
    Atomics.notify(mapped, 0)
  })
}

// Transpilers may wrap named functions in a `__name(fn, "name")` helper that the eval'd script
// would not have: give it a no-op one.
const MAPPER_SOURCE = `var __name = (f) => f;\n(${pageMapper.toString()})()`
