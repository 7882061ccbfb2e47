// The V8 heaps of caje's worker threads, sized for what they hold.
//
// Every worker thread is an isolate of its own, and V8 gives each the young
// generation the process's flags ask for: bin/caje's --max-semi-space-size=4,
// sized for the event loop's requests, gave the cache's disk writer and the
// manifest threads 8 MB of new space apiece, kept for good once a busy spell
// had grown it. Their short-lived objects are a batch's job descriptions and
// a query's rows, a fraction of that. Under a storm of misses those new
// spaces were about a fifth of the memory the threads' heaps took.
//
// A Worker's resourceLimits.maxYoungGenerationSizeMb sizes its young
// generation, but V8 lets --max-semi-space-size win over it (heap.cc,
// ConfigureHeap). The flag is read only when an isolate sets up its heap: the
// event loop's heap keeps the size it started with, and with the flag set to
// 0 here (V8's "not set") the threads started afterwards get their limits.
// Every worker caje starts goes through startWorker, so none gets V8's
// default for the machine (up to 32 MB of new space) instead.
//
// An --initial-old-space-size given to caje's Node (bin/caje sets none; an
// operator may add it, see there) is the event loop's too, and is cleared
// the same way: V8 never starts a full collection of a heap whose old space
// is below that size (heap.cc: a configured initial size becomes the heap's
// minimum). The event loop's garbage is a request's; a worker given the same
// floor (the disk writer's batches) let its old space fill that far before
// collecting it: under a miss storm the disk writer's heap held 68 MB, most
// of it garbage.

import v8 from 'node:v8'
import { Worker, type ResourceLimits, type WorkerOptions } from 'node:worker_threads'

/**
 * A worker's young generation: V8 makes it three semi-spaces (two for new space, one for
 * new large objects), so 3 MB is a new space of 2 MB.
 */
export const WORKER_YOUNG_GENERATION_MB = 3

export const WORKER_RESOURCE_LIMITS: Readonly<ResourceLimits> = Object.freeze({ maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB })

let heapFlagsCleared = false

/**
 * A worker thread running `source` (a script, eval'd), its heap sized by WORKER_RESOURCE_LIMITS.
 * `thread` names it for THREAD_MAP_ENV; `youngGenerationMb` overrides the young generation for a
 * thread whose work keeps more alive at once (the manifest's apply thread).
 */
export function startWorker(source: string, options: Omit<WorkerOptions, 'eval' | 'resourceLimits'> = {}, thread = 'worker', youngGenerationMb = WORKER_YOUNG_GENERATION_MB): Worker {
  if (!heapFlagsCleared) {
    // Process-wide, and read by V8 only when a new isolate configures its heap (see above).
    v8.setFlagsFromString('--max-semi-space-size=0')
    v8.setFlagsFromString('--initial-old-space-size=0')
    heapFlagsCleared = true
  }
  const mapFile = process.env[THREAD_MAP_ENV]
  const heapFile = process.env[HEAP_LOG_ENV]
  let script = mapFile ? `${threadMapLine(mapFile, thread)}\n${source}` : source
  if (heapFile) script = `(${logHeap.toString()})(${JSON.stringify(heapFile)}, ${JSON.stringify(thread)}, ${HEAP_LOG_INTERVAL_MS});\n${script}`
  return new Worker(script, { ...options, eval: true, resourceLimits: { ...WORKER_RESOURCE_LIMITS, maxYoungGenerationSizeMb: youngGenerationMb } })
}

/**
 * With this variable naming a file, each worker thread appends `<its Linux thread id> <name>` to
 * it as it starts: Node 20 gives every thread the process's name, and bench/thread-cpu.ts reads
 * this to say which thread's CPU (/proc/<pid>/task/<tid>/stat) is the disk writer's, the
 * manifest's... A diagnostic for benchmarks; nothing is written without it.
 */
export const THREAD_MAP_ENV = 'CAJE_THREAD_MAP'

function threadMapLine(file: string, thread: string): string {
  return `{ const fs = process.getBuiltinModule('node:fs'); try { fs.appendFileSync(${JSON.stringify(file)}, fs.readlinkSync('/proc/thread-self').split('/').pop() + ' ' + ${JSON.stringify(thread)} + '\\n') } catch {} }`
}

/**
 * With this variable naming a file, the event loop (main.ts) and every worker thread append a
 * line of their V8 heap's statistics to it every HEAP_LOG_INTERVAL_MS: Node 20 has no
 * worker.getHeapStatistics(), and a peak of the process's RSS does not say which isolate grew,
 * nor whether a heap held live objects or room V8 kept after a collection. A diagnostic for
 * benchmarks (the miss storm's memory); nothing is written without it.
 */
export const HEAP_LOG_ENV = 'CAJE_HEAP_LOG'

export const HEAP_LOG_INTERVAL_MS = 250

/**
 * Appends `{"t","thread","committed","used","external","spaces":{name:[committed,used]}}` (bytes,
 * t in ms since the epoch) for this thread to `file` at once, then every `intervalMs` until the
 * returned stop is called; the timer keeps no thread alive. The first line is written before this
 * returns, so a thread that lives less than an interval is in the log too (and, in a worker, before
 * its own script runs). Self-contained, as worker threads run its source.
 */
export function logHeap(file: string, thread: string, intervalMs: number): () => void {
  const fs = process.getBuiltinModule('node:fs')
  const v8 = process.getBuiltinModule('node:v8')
  const append = (): void => {
    const heap = v8.getHeapStatistics()
    const spaces: Record<string, [number, number]> = {}
    for (const space of v8.getHeapSpaceStatistics()) if (space.space_size > 0) spaces[space.space_name] = [space.space_size, space.space_used_size]
    const line = { t: Date.now(), thread, committed: heap.total_heap_size, used: heap.used_heap_size, external: heap.external_memory, spaces }
    try {
      fs.appendFileSync(file, JSON.stringify(line) + '\n')
    } catch {}
  }
  append()
  const timer = setInterval(append, intervalMs)
  timer.unref()
  return () => clearInterval(timer)
}
