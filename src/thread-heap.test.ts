import { execFile } from 'node:child_process'
import { readdirSync, watch } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { APPLY_YOUNG_GENERATION_MB, startApplyThread } from './manifest/apply-thread.ts'
import { openReadWorkerDatabase } from './manifest/read-worker.ts'
import { freshManifest } from './manifest/test-helpers.ts'
import { HEAP_LOG_ENV, logHeap, startWorker, THREAD_MAP_ENV, WORKER_YOUNG_GENERATION_MB } from './thread-heap.ts'

const run = promisify(execFile)
const here = path.dirname(fileURLToPath(import.meta.url))

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** Allocates short-lived objects until a new space has grown as far as it may, then reports its size. */
const CHURN = `
  const v8 = process.getBuiltinModule('node:v8')
  let keep = []
  for (let i = 0; i < 2e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 5000) keep = [] }
  const newSpace = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size
`

describe('worker threads’ heaps', () => {
  it('get their own young generation under bin/caje’s --max-semi-space-size, and the event loop keeps its own', async () => {
    // What bin/caje starts Node with: a semi-space of 4 MB, a new space of 8 MB, in every thread unless told otherwise.
    const script = `
      import { startWorker } from ${JSON.stringify(path.join(here, 'thread-heap.ts'))}
      const worker = startWorker(${JSON.stringify(`${CHURN}; process.getBuiltinModule('node:worker_threads').parentPort.postMessage(newSpace())`)})
      const inWorker = await new Promise((resolve) => worker.once('message', resolve))
      await worker.terminate()
      ${CHURN}
      console.log(JSON.stringify({ inWorker, inLoop: newSpace() }))
    `
    const { stdout } = await run(process.execPath, ['--max-semi-space-size=4', '--import', 'tsx', '--input-type=module', '-e', script])
    const sizes = JSON.parse(stdout) as { inWorker: number; inLoop: number }
    // Two of the young generation's three semi-spaces are new space.
    expect(sizes.inWorker).toBeLessThanOrEqual(((WORKER_YOUNG_GENERATION_MB * 2) / 3) * 1024 * 1024)
    expect(sizes.inLoop).toBe(8 * 1024 * 1024)
  })

  it('start without bin/caje’s --initial-old-space-size, which the event loop keeps', async () => {
    // Full collections (major GCs) while the old space grows from a few MB to about 35 MB of live
    // objects: none under a floor of 64 MB, some in a heap collected as V8 sizes it.
    const grow = (report: string) => `
      const { PerformanceObserver, constants } = process.getBuiltinModule('node:perf_hooks')
      globalThis.gc()
      let majors = 0
      const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++ })
      observer.observe({ entryTypes: ['gc'] })
      const keep = []
      for (let i = 0; i < 300000; i++) keep.push({ i, a: [i, i, i, i, i, i, i, i] })
      // GC entries are delivered in a later turn of the loop.
      setImmediate(() => setImmediate(() => { observer.disconnect(); ${report} }))
    `
    const script = `
      import { startWorker } from ${JSON.stringify(path.join(here, 'thread-heap.ts'))}
      const worker = startWorker(${JSON.stringify(grow("process.getBuiltinModule('node:worker_threads').parentPort.postMessage(majors)"))})
      const inWorker = await new Promise((resolve) => worker.once('message', resolve))
      await worker.terminate()
      const inLoop = await new Promise((resolve) => eval(${JSON.stringify(grow('resolve(majors)'))}))
      console.log(JSON.stringify({ inWorker, inLoop }))
    `
    const { stdout } = await run(process.execPath, ['--initial-old-space-size=64', '--heap-growing-percent=30', '--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script])
    const majors = JSON.parse(stdout) as { inWorker: number; inLoop: number }
    expect(majors.inLoop).toBe(0)
    expect(majors.inWorker).toBeGreaterThan(0)
  })

  it('are limited for the manifest’s apply and read threads', async () => {
    const m = await freshManifest()
    cleanups.push(m.cleanup)
    const threads: Worker[] = []
    const apply = startApplyThread({ path: m.path, onThread: (t) => threads.push(t) })
    cleanups.push(() => apply.close())
    const reader = openReadWorkerDatabase({ path: m.path, onThread: (t) => threads.push(t) })
    cleanups.push(() => reader.destroy())
    await reader.selectFrom('entries').select('url').execute()
    expect(threads).toHaveLength(2)
    // The apply thread's own (a batch's parsed ops outlive a young generation of the default size), the reader's the default.
    expect(threads.map((t) => t.resourceLimits?.maxYoungGenerationSizeMb)).toEqual([APPLY_YOUNG_GENERATION_MB, WORKER_YOUNG_GENERATION_MB])
  })
})

/** Points `variable` at a file in a fresh directory for this test; the variable's value before is restored after it. */
async function envFile(variable: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'caje-thread-heap-'))
  const before = process.env[variable]
  cleanups.push(() => {
    if (before === undefined) delete process.env[variable]
    else process.env[variable] = before
    return rm(dir, { recursive: true, force: true })
  })
  const file = path.join(dir, 'log')
  process.env[variable] = file
  return file
}

/**
 * Starts a worker thread named `name` through startWorker and resolves once its script has run
 * (its first message): whatever startWorker puts before the script has run too. The thread then
 * waits for a message, so it lives (its thread id stays this process's) until the test ends.
 */
function startThread(name: string): Promise<Worker> {
  return new Promise((resolve, reject) => {
    const worker = startWorker(`const { parentPort } = process.getBuiltinModule('node:worker_threads'); parentPort.postMessage('up'); parentPort.once('message', () => process.exit(0))`, {}, name)
    cleanups.push(() => worker.terminate())
    worker.once('message', () => resolve(worker)).once('error', reject)
  })
}

const lines = async (file: string): Promise<string[]> => (await readFile(file, 'utf8')).trim().split('\n')

describe('the thread map (CAJE_THREAD_MAP)', () => {
  it.runIf(process.platform === 'linux')('names each worker thread by its Linux thread id, and writes nothing without the variable', async () => {
    const file = await envFile(THREAD_MAP_ENV)
    delete process.env[THREAD_MAP_ENV]
    await startThread('unnamed')
    process.env[THREAD_MAP_ENV] = file
    await startThread('cache disk writer')
    await startThread('manifest apply')
    const map = await lines(file)
    expect(map.map((l) => l.replace(/^\d+ /, ''))).toEqual(['cache disk writer', 'manifest apply'])
    const tids = new Set(readdirSync('/proc/self/task'))
    for (const line of map) expect(tids.has(line.split(' ')[0]!)).toBe(true)
    expect(map[0]!.split(' ')[0]).not.toBe(map[1]!.split(' ')[0])
  })
})

type HeapLine = { thread: string; committed: number; used: number; spaces: Record<string, [number, number]> }

describe('the heap log (CAJE_HEAP_LOG)', () => {
  it("appends each thread's heap statistics by name as it starts, the event loop's too, and nothing without the variable", async () => {
    const file = await envFile(HEAP_LOG_ENV)
    delete process.env[HEAP_LOG_ENV]
    await startThread('unlogged')
    process.env[HEAP_LOG_ENV] = file
    // The thread's first line is written before its script runs, the event loop's before logHeap returns:
    // both are there long before the first interval (250 ms for the thread) has passed.
    await startThread('cache disk writer')
    cleanups.push(logHeap(file, 'main', 60_000))
    const heap = (await lines(file)).map((l) => JSON.parse(l) as HeapLine)
    expect(heap.map((l) => l.thread)).toEqual(['cache disk writer', 'main'])
    for (const line of heap) {
      expect(line.used).toBeGreaterThan(0)
      expect(line.committed).toBeGreaterThanOrEqual(line.used)
      expect(line.spaces.old_space![0]).toBeGreaterThan(0)
    }
  })

  it('goes on appending a line every interval', async () => {
    const file = await envFile(HEAP_LOG_ENV)
    cleanups.push(logHeap(file, 'main', 10))
    // Three lines: the one at once and two from the timer.
    await new Promise<void>((resolve, reject) => {
      const watcher = watch(file)
      cleanups.push(() => watcher.close())
      const check = (): void => void lines(file).then((l) => l.length >= 3 && resolve(), reject)
      watcher.on('change', check).on('error', reject)
      check()
    })
    expect(new Set((await lines(file)).map((l) => (JSON.parse(l) as HeapLine).thread))).toEqual(new Set(['main']))
  })
})
