import type { Worker } from 'node:worker_threads'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { applyOps } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { openReadWorkerDatabase } from './read-worker.ts'
import { countEntries, listManifest } from './repositories.ts'
import { indexQueued } from './search.ts'
import { entry, freshManifest } from './test-helpers.ts'
import { turnsDuring } from '../test-support/servers.ts'

const T = 1_700_000_000_000

describe('manifest reads on a worker thread', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function setUp() {
    const m = await freshManifest()
    cleanups.push(m.cleanup)
    const ops: ManifestOp[] = Array.from({ length: 120 }, (_, i) => ({
      type: 'stored',
      nodeId: `n${(i % 3) + 1}`,
      entry: entry({ url: `https://${i % 4 ? 'ex.com' : 'other.test'}/${i % 2 ? 'blog' : 'shop'}/${i}`, storedAt: T + i }),
    }))
    await applyOps(m.db, ops)
    await indexQueued(m.db, 1000)
    const reader = openReadWorkerDatabase({ path: m.path })
    cleanups.push(() => reader.destroy())
    return { m, reader }
  }

  it('answers the admin list exactly as the node\'s own handle does: pages, filters, cursors, counts', async () => {
    const { m, reader } = await setUp()
    const first = await listManifest(m.db, { limit: 10 })
    expect(await listManifest(reader, { limit: 10 })).toEqual(first)
    expect(await listManifest(reader, { limit: 10, cursor: first.nextCursor })).toEqual(await listManifest(m.db, { limit: 10, cursor: first.nextCursor }))
    for (const q of [{ filter: 'blog/1' }, { filter: 'sh' }, { host: 'other.test' }, { nodeId: 'n2', offset: 5 }]) {
      expect(await listManifest(reader, q)).toEqual(await listManifest(m.db, q))
    }
    expect(await countEntries(reader, { nodeId: 'n1' })).toBe(40)
    // A write made since is seen by the next read (each read sees the last commit).
    await applyOps(m.db, [{ type: 'stored', nodeId: 'n1', entry: entry({ url: 'https://ex.com/late', storedAt: T + 999 }) }])
    expect((await listManifest(reader, { limit: 1 })).entries[0]!.url).toBe('https://ex.com/late')
  })

  it('runs a long query while the event loop keeps turning, and reports SQL errors as errors', async () => {
    const { reader } = await setUp()
    const { result: slow, turns } = await turnsDuring(() => sql<{ n: number }>`with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000000) select count(*) as n from c`.execute(reader))
    expect(slow.rows[0]!.n).toBe(3_000_000)
    // On the event loop the query would have run in one synchronous call: the loop could not turn during it.
    expect(turns).toBeGreaterThan(10)
    await expect(sql`select * from no_such_table`.execute(reader)).rejects.toThrow(/no such table/)
    await expect(sql`delete from entries`.execute(reader)).rejects.toThrow(/readonly/)
  })

  it('starts a new thread for the next read when its thread ended, and none once closed', async () => {
    const m = await freshManifest()
    cleanups.push(m.cleanup)
    await applyOps(m.db, [{ type: 'stored', nodeId: 'n1', entry: entry({ url: 'https://ex.com/a', storedAt: T }) }])
    const threads: Worker[] = []
    const reader = openReadWorkerDatabase({ path: m.path, onThread: (t) => threads.push(t) })
    expect(await countEntries(reader, {})).toBe(1)
    expect(threads).toHaveLength(1)
    await threads[0]!.terminate()
    expect(await countEntries(reader, {})).toBe(1)
    expect(threads).toHaveLength(2)
    await reader.destroy()
    await expect(countEntries(reader, {})).rejects.toThrow(/destroyed|closed/)
    expect(threads).toHaveLength(2)
  })
})
