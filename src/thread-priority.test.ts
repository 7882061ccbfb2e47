import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { startApplyThread } from './manifest/apply-thread.ts'
import { openReadWorkerDatabase } from './manifest/read-worker.ts'
import { freshManifest } from './manifest/test-helpers.ts'
import { BACKGROUND_NICE_STEPS, lowerThisThreadSource } from './thread-priority.ts'
import { threadNices } from './test-support/threads.ts'

const mine = () => threadNices().get(String(process.pid))!
const lowered = () => Math.min(19, mine() + BACKGROUND_NICE_STEPS)

/**
 * The threads started while `start` ran (it resolves once its thread has run its script), by
 * their nice value; the event loop's thread must keep its own.
 */
async function niceOfNewThreads(start: () => Promise<unknown>): Promise<number[]> {
  const before = threadNices()
  const loop = before.get(String(process.pid))
  await start()
  const after = threadNices()
  expect(after.get(String(process.pid))).toBe(loop)
  return [...after].filter(([tid]) => !before.has(tid)).map(([, nice]) => nice)
}

describe.runIf(process.platform === 'linux')('background threads run below the event loop', () => {
  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('lowers the thread whose script runs it, and only that one', async () => {
    let worker: Worker | undefined
    const seen = await niceOfNewThreads(async () => {
      // The thread stays alive until terminated: one that ended after answering would be gone from the second snapshot.
      const script = `${lowerThisThreadSource('test')}\nrequire('node:worker_threads').parentPort.postMessage(require('node:os').getPriority())\nsetInterval(() => {}, 1 << 30)`
      worker = new Worker(script, { eval: true })
      cleanups.push(() => worker!.terminate())
      const own = await new Promise((resolve) => worker!.once('message', resolve))
      // As the thread itself reads it (getpriority on Linux answers for the calling thread).
      expect(own).toBe(lowered())
    })
    expect(seen.filter((n) => n === lowered())).toHaveLength(1)
  })

  it('warns once and carries on at the process priority when the priority cannot be set', async () => {
    // An out-of-range step makes setPriority throw, as a system that refuses it would.
    const source = lowerThisThreadSource('test').replace(`(${BACKGROUND_NICE_STEPS}, `, '(NaN, ')
    const worker = new Worker(`${source}\nrequire('node:worker_threads').parentPort.postMessage(require('node:os').getPriority())`, { eval: true, stderr: true })
    cleanups.push(() => worker.terminate())
    let err = ''
    worker.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')))
    expect(await new Promise((resolve) => worker.once('message', resolve))).toBe(mine())
    await new Promise<void>((resolve) => worker.stderr.once('end', resolve).resume())
    const lines = err.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatchObject({ level: 'warn', thread: 'test' })
    expect(String(lines[0]!.msg)).toMatch(/could not lower a background thread/)
  })

  // The cache's disk writer: disk-writer.test.ts.
  it('not the manifest apply thread or the read worker, which this process waits for', async () => {
    const { path: file, cleanup } = await freshManifest()
    cleanups.push(cleanup)

    // The writer holds its turn on the file while this thread applies a batch: lowered, it would keep
    // the event loop's own queries waiting whenever it lost the CPU inside a transaction.
    const apply = await niceOfNewThreads(async () => {
      const thread = startApplyThread({ path: file })
      cleanups.push(() => thread.close())
      await thread.indexSearch(1)
    })
    expect(apply).toEqual([mine()])

    // Its queries answer an admin's request: they run at the process's priority.
    const read = await niceOfNewThreads(async () => {
      const readDb = openReadWorkerDatabase({ path: file })
      cleanups.push(() => readDb.destroy())
      await readDb.selectFrom('nodes').select('id').execute()
    })
    expect(read).toEqual([mine()])
  })
})
