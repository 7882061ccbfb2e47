// The index lines the disk store queues for its writer are flat strings: a line
// left as a tree of cons strings keeps its parts (the metadata's JSON among
// them) on the heap while the write waits, and is copied when posted.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createDiskStore, flatLine } from './disk-store.ts'
import { DiskWriter, type DiskJob } from './disk-writer.ts'
import { sameHiddenClass } from '../test-support/hidden-class.ts'
import { bodyOf, newEntry, put, tempDir } from './test-support.ts'

const MiB = 1024 * 1024

// Strings of one byte per character, made at run time, one of each kind V8 has for them.
const consString = (): string => 'x'.repeat(20) + String(Math.random())
const flatString = (): string => ['{', String(Math.random())].join('')
const hiddenClassOf = (s: string): object => s as unknown as object

function isFlat(s: string): boolean {
  return sameHiddenClass(hiddenClassOf(s), hiddenClassOf(flatString())) && !sameHiddenClass(hiddenClassOf(s), hiddenClassOf(consString()))
}

function linesOf(job: DiskJob): string[] {
  if (job.op === 'put' || job.op === 'index') return [job.line]
  if (job.op === 'put-hashed') return [...job.line]
  return []
}

let dir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ dir, cleanup } = await tempDir())
})

afterEach(async () => {
  vi.restoreAllMocks()
  await cleanup()
})

describe('index lines', () => {
  it('the references tell a cons string from a flat one', () => {
    expect(isFlat(flatString())).toBe(true)
    expect(isFlat(consString())).toBe(false)
    expect(isFlat(flatLine(['{"key":', JSON.stringify(consString()), '}']))).toBe(true)
  })

  it('are queued for the writer as flat strings, for new bodies and metadata updates', async () => {
    const jobs: DiskJob[] = []
    const enqueue = DiskWriter.prototype.enqueue
    vi.spyOn(DiskWriter.prototype, 'enqueue').mockImplementation(function (this: DiskWriter, job, done) {
      jobs.push(job)
      enqueue.call(this, job, done)
    })
    const store = await createDiskStore({ dir, maxBytes: 100 * MiB, maxObjectBytes: 10 * MiB, log: () => {} })
    try {
      // Once the start-up sweep is over, a new body's digest is the writer's to take ('put-hashed').
      await store.drain()
      const meta = await put(store, newEntry('https://a.test/flat', { headers: { 'content-type': 'text/plain', etag: '"1"' } }), bodyOf(1000))
      await store.drain()
      await store.updateMeta({ ...meta!, staleAt: meta!.staleAt + 1000 })
      await store.drain()
    } finally {
      await store.close()
    }
    const lines = jobs.flatMap(linesOf)
    expect(jobs.map((j) => j.op)).toEqual(expect.arrayContaining(['put-hashed', 'index']))
    expect(lines.length).toBeGreaterThanOrEqual(3)
    for (const line of lines) expect(isFlat(line)).toBe(true)
  })
})
