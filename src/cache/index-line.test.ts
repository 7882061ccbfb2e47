// The disk store queues an entry's index line for its writer as its parts, the
// metadata's JSON among them: the writer's thread makes the line (cacache's
// reader checks what it wrote, disk-store.test.ts). A line made on the event loop's thread was a copy of that JSON per
// miss, kept while the write waited (and a cons string's parts with it).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createDiskStore } from './disk-store.ts'
import { DiskWriter, type DiskJob } from './disk-writer.ts'
import { bodyOf, newEntry, put, tempDir } from './test-support.ts'

const MiB = 1024 * 1024

function linesOf(job: DiskJob): object[] {
  return job.op === 'put' || job.op === 'index' || job.op === 'put-hashed' ? [job.line] : []
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
  it('are queued for the writer as their parts, the metadata as its JSON, for new bodies and metadata updates', async () => {
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
    expect(lines.length).toBeGreaterThanOrEqual(2)
    for (const line of lines) {
      // Nothing but the parts: no line (or part of one) made on this thread.
      expect(Object.values(line).filter((v) => typeof v === 'string' && v !== (line as { integrity?: string }).integrity)).toHaveLength(1)
      const { metadataJson } = line as { metadataJson: string }
      expect(JSON.parse(metadataJson)).toMatchObject({ url: 'https://a.test/flat' })
    }
  })
})
