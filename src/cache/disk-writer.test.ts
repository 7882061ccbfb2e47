import fs from 'node:fs'
import path from 'node:path'
import v8 from 'node:v8'
import vm from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { DiskWriter, type DiskWriterOptions } from './disk-writer.ts'
import { contentPath } from './content-file.ts'
import { tempDir } from './test-support.ts'
import { threadNices } from '../test-support/threads.ts'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A writer on a temp dir of its own; both go after the test (close() first). */
async function newWriter(opts: Omit<DiskWriterOptions, 'dir'> = { maxQueueBytes: 1 << 20 }): Promise<{ dir: string; writer: DiskWriter }> {
  const { dir, cleanup } = await tempDir()
  cleanups.push(cleanup)
  const writer = new DiskWriter({ dir, ...opts })
  cleanups.push(() => writer.close())
  return { dir, writer }
}

describe.runIf(process.platform === 'linux')('disk writer thread', () => {
  it('runs below the event loop: its thread, and only it, is ten nice steps lower', async () => {
    const before = threadNices()
    const mine = before.get(String(process.pid))!
    const { dir, writer } = await newWriter()
    // The thread starts with its first job.
    expect(await writer.run({ op: 'rm-content', path: path.join(dir, 'none') })).toEqual({ ok: true })
    const after = threadNices()
    const lowered = [...after].filter(([tid, nice]) => !before.has(tid) && nice === Math.min(19, mine + 10))
    expect(lowered).toHaveLength(1)
    // The event loop's thread keeps its priority.
    expect(after.get(String(process.pid))).toBe(mine)
  })
})

describe('disk writer callbacks', () => {
  it('answers every enqueued job before drain() resolves, in order, even when a callback throws', async () => {
    const failures: unknown[] = []
    const { dir, writer } = await newWriter({ maxQueueBytes: 1 << 20, onCallbackError: (error) => failures.push(error) })
    const order: string[] = []
    const body = new Uint8Array(Buffer.from('hello'))
    const contentPath = path.join(dir, 'content-v2', 'x', 'y', 'z')
    writer.enqueue({ op: 'put', body, contentPath, id: 'k', line: '{}', compact: false }, (result) => {
      order.push(`put ${result.ok}`)
      throw new Error('callback broke')
    })
    writer.enqueue({ op: 'rm-content', path: path.join(dir, 'none') }, (result) => order.push(`rm ${result.ok}`))
    await writer.drain()
    expect(order).toEqual(['put true', 'rm true'])
    expect(failures).toHaveLength(1)
    expect((failures[0] as Error).message).toBe('callback broke')
    expect(writer.stats()).toMatchObject({ jobs: 0, bytes: 0 })
    expect(fs.readFileSync(contentPath, 'utf8')).toBe('hello')
  })

  it('reports the shared memory its thread still refers to after writing bodies that live there', async () => {
    const { dir, writer } = await newWriter()
    expect(writer.stats().threadSharedBytes).toBe(0)
    const shared = new SharedArrayBuffer(256 * 1024)
    // Two bodies of one shared buffer in one message: the thread gets that buffer once.
    writer.enqueue({ op: 'put', body: new Uint8Array(shared, 0, 5), contentPath: path.join(dir, 'content-v2', 'a'), id: 'a', line: '{}', compact: false }, () => {})
    writer.enqueue({ op: 'put', body: new Uint8Array(shared, 5, 5), contentPath: path.join(dir, 'content-v2', 'b'), id: 'b', line: '{}', compact: false }, () => {})
    await writer.drain()
    // Its young generation is far larger than what one batch allocates: nothing collected yet.
    expect(writer.stats().threadSharedBytes).toBe(shared.byteLength)
  })

  it('makes each directory of the cache once: objects stored in directories it has made cost no mkdir', async () => {
    const { dir, writer } = await newWriter()
    const ids = Array.from({ length: 200 }, (_, i) => `https://a.test/${i}`)
    const stored = await Promise.all(
      ids.map((id, i) => writer.run({ op: 'put-hashed', body: new Uint8Array(Buffer.from(`body ${i}`)), id, line: [`{"key":"${id}","integrity":"`, '"}'], compact: false })),
    )
    expect(stored.filter((r) => !r.ok)).toEqual([])
    // A fresh cache: every directory was made by the thread, at most two calls each (a first
    // one that found the parent missing).
    const dirs = fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isDirectory()).length
    const calls = writer.stats().mkdirCalls
    expect(calls).toBeGreaterThanOrEqual(dirs)
    expect(calls).toBeLessThanOrEqual(2 * dirs)
    // New index lines for the same objects land in directories the thread has made: no mkdir at all.
    const updated = await Promise.all(ids.map((id) => writer.run({ op: 'index', id, line: `{"key":"${id}"}`, compact: false })))
    expect(updated.filter((r) => !r.ok)).toEqual([])
    expect(writer.stats().mkdirCalls).toBe(calls)
  })

  it('checks a body it wrote before taking it as in place: one changed or removed by hand since is written again', async () => {
    const { dir, writer } = await newWriter()
    const body = Buffer.from('the same body for several entries')
    const put = (id: string) => writer.run({ op: 'put-hashed', body: new Uint8Array(body), id, line: [`{"key":"${id}","integrity":"`, '"}'], compact: false })
    const first = await put('a')
    if (!first.ok) throw new Error(first.error.message)
    const file = contentPath(dir, first.integrity!)!
    expect(fs.readFileSync(file)).toEqual(body)
    // Another entry with the same body: the file is left as it is (same inode).
    const second = await put('b')
    expect(second).toMatchObject({ ok: true, integrity: first.integrity, file: { ino: first.file!.ino } })
    // Bytes changed in place, the size kept: written again, whole.
    fs.writeFileSync(file, Buffer.alloc(body.length, 0x78))
    expect(await put('c')).toMatchObject({ ok: true, integrity: first.integrity })
    expect(fs.readFileSync(file)).toEqual(body)
    // Removed: written again.
    fs.rmSync(file)
    const fourth = await put('d')
    expect(fourth).toMatchObject({ ok: true, integrity: first.integrity })
    expect(fs.readFileSync(file)).toEqual(body)
    expect(fourth.ok && fourth.file!.ino).toBe(fs.statSync(file).ino)
  })

  it('answers a job enqueued after close with an error, never silently', async () => {
    const { writer } = await newWriter()
    await writer.close()
    const result = await new Promise((resolve) => writer.enqueue({ op: 'clear' }, resolve))
    expect(result).toMatchObject({ ok: false, error: { code: 'ECLOSED' } })
  })

  it('lets go of a job once it is posted to its thread, not only once the thread answers', async () => {
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    const { dir, writer } = await newWriter({ maxQueueBytes: 64 << 20 })
    const answered: boolean[] = []
    // Made in a function of its own: nothing in the test holds the job but the WeakRef.
    const watch = (i: number) => {
      const job = { op: 'put' as const, body: new Uint8Array(Buffer.alloc(64 * 1024, i)), contentPath: path.join(dir, 'content-v2', `${i}`), id: `k${i}`, line: `{"n":${i}}`, compact: false }
      writer.enqueue(job, (result) => answered.push(result.ok))
      return new WeakRef(job)
    }
    const first = watch(0)
    // The rest of the same message keeps the thread busy writing long after it is posted.
    for (let i = 1; i < 200; i++) watch(i)
    // The writer posts in the check phase of this turn, ahead of this callback.
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    expect(answered).toEqual([])
    expect(first.deref()).toBeUndefined()
    await writer.drain()
    expect(answered).toHaveLength(200)
    expect(answered.every(Boolean)).toBe(true)
  })

  it('makes slab memory on its thread: the size and number asked for, in the order asked, and counts it as memory it refers to', async () => {
    const { writer } = await newWriter()
    const made: SharedArrayBuffer[][] = []
    await new Promise<void>((resolve) => {
      writer.makeSlabs(64 * 1024, 2, (slabs) => made.push(slabs))
      writer.makeSlabs(128 * 1024, 1, (slabs) => {
        made.push(slabs)
        resolve()
      })
    })
    expect(made.map((slabs) => slabs.map((m) => m.byteLength))).toEqual([[64 * 1024, 64 * 1024], [128 * 1024]])
    expect(made.flat().every((m) => m instanceof SharedArrayBuffer && new Uint8Array(m).every((b) => b === 0))).toBe(true)
    expect(writer.stats().threadSharedBytes).toBe(256 * 1024)
  })

  it('makes no slabs once closed, and says so', async () => {
    const { writer } = await newWriter()
    await writer.close()
    expect(await new Promise((resolve) => writer.makeSlabs(64 * 1024, 1, resolve))).toEqual([])
  })
})
