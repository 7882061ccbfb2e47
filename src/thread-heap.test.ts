import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { APPLY_YOUNG_GENERATION_MB, startApplyThread } from './manifest/apply-thread.ts'
import { openReadWorkerDatabase } from './manifest/read-worker.ts'
import { freshManifest } from './manifest/test-helpers.ts'
import { WORKER_YOUNG_GENERATION_MB } from './thread-heap.ts'

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

describe('the thread map (CAJE_THREAD_MAP)', () => {
  it.runIf(process.platform === 'linux')('names each worker thread by its Linux thread id, and writes nothing without the variable', async () => {
    const { mkdtemp, readFile, rm } = await import('node:fs/promises')
    const os = await import('node:os')
    const { existsSync, readdirSync } = await import('node:fs')
    const { startWorker, THREAD_MAP_ENV } = await import('./thread-heap.ts')
    const dir = await mkdtemp(path.join(os.tmpdir(), 'caje-thread-map-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'threads')
    const before = process.env[THREAD_MAP_ENV]
    cleanups.push(() => {
      if (before === undefined) delete process.env[THREAD_MAP_ENV]
      else process.env[THREAD_MAP_ENV] = before
    })
    // The thread stays alive (waiting for a message) until its id has been checked against this process's threads.
    const start = (name: string): Promise<Worker> =>
      new Promise((resolve, reject) => {
        const worker = startWorker(`const { parentPort } = process.getBuiltinModule('node:worker_threads'); parentPort.postMessage('up'); parentPort.once('message', () => process.exit(0))`, {}, name)
        cleanups.push(() => worker.terminate())
        worker.once('message', () => resolve(worker)).once('error', reject)
      })
    delete process.env[THREAD_MAP_ENV]
    await start('unnamed')
    process.env[THREAD_MAP_ENV] = file
    await start('cache disk writer')
    await start('manifest apply')
    const lines = (await readFile(file, 'utf8')).trim().split('\n')
    expect(lines.map((l) => l.replace(/^\d+ /, ''))).toEqual(['cache disk writer', 'manifest apply'])
    const tids = new Set(readdirSync('/proc/self/task'))
    for (const line of lines) expect(tids.has(line.split(' ')[0]!)).toBe(true)
    expect(lines[0]!.split(' ')[0]).not.toBe(lines[1]!.split(' ')[0])
    expect(existsSync(file)).toBe(true)
  })
})

describe('the heap log (CAJE_HEAP_LOG)', () => {
  it("appends each thread's heap statistics by name, the event loop's too, and nothing without the variable", async () => {
    const { mkdtemp, readFile, rm } = await import('node:fs/promises')
    const os = await import('node:os')
    const { existsSync } = await import('node:fs')
    const { startWorker, logHeap, HEAP_LOG_ENV } = await import('./thread-heap.ts')
    const dir = await mkdtemp(path.join(os.tmpdir(), 'caje-heap-log-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'heap')
    const before = process.env[HEAP_LOG_ENV]
    cleanups.push(() => {
      if (before === undefined) delete process.env[HEAP_LOG_ENV]
      else process.env[HEAP_LOG_ENV] = before
    })
    // The thread waits for a message, so it lives until its line has been read.
    const start = (name: string): Promise<Worker> =>
      new Promise((resolve, reject) => {
        const worker = startWorker(`const { parentPort } = process.getBuiltinModule('node:worker_threads'); parentPort.postMessage('up'); parentPort.once('message', () => process.exit(0))`, {}, name)
        cleanups.push(() => worker.terminate())
        worker.once('message', () => resolve(worker)).once('error', reject)
      })
    delete process.env[HEAP_LOG_ENV]
    await start('unlogged')
    process.env[HEAP_LOG_ENV] = file
    await start('cache disk writer')
    cleanups.push(logHeap(file, 'main', 10))
    const threads = async (): Promise<Set<string>> => {
      const text = existsSync(file) ? await readFile(file, 'utf8') : ''
      return new Set(text.trim().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { thread: string }).thread))
    }
    while ((await threads()).size < 2) await new Promise((resolve) => setTimeout(resolve, 20))
    expect([...(await threads())].sort()).toEqual(['cache disk writer', 'main'])
    const line = JSON.parse((await readFile(file, 'utf8')).trim().split('\n')[0]!) as { committed: number; used: number; spaces: Record<string, [number, number]> }
    expect(line.used).toBeGreaterThan(0)
    expect(line.committed).toBeGreaterThanOrEqual(line.used)
    expect(line.spaces.old_space![0]).toBeGreaterThan(0)
  })
})
