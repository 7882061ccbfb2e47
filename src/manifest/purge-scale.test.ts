// Purges and reconciliation at scale: what one purge or one restart costs
// the manifest, with real SQLite files, real disk stores and real sockets.

import { EventEmitter } from 'node:events'
import fs from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Kysely } from 'kysely'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import { bodyOf, newEntry, put } from '../cache/test-support.ts'
import type { CacheStore } from '../cache/types.ts'
import { whenReached } from '../test-support/when-reached.ts'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import { createPurgeApplier } from './purge.ts'
import type { PurgeApplier, PurgeApplierOptions } from './purge.ts'
import { reconcileHoldings, recordStoreEvents } from './recorder.ts'
import { countEntries, heldBy, listManifest, upsertNode } from './repositories.ts'
import { captureLog, freshManifest, holdWriteLock, waitFor } from './test-helpers.ts'
import { DirectWriter } from './writer.ts'

const SECRET = 'a-cluster-secret-of-some-length'

/** A writer that passes ops on to `w` and notes the type of each; `sent(type)` resolves once an op of that type was submitted. */
function countingWriter(w: Pick<DirectWriter, 'submit' | 'submitFirst' | 'flush'>): {
  submitted: string[]
  sent(type: string): Promise<void>
  counting: Pick<DirectWriter, 'submit' | 'submitFirst' | 'flush'>
} {
  const submitted: string[] = []
  const noted = new EventEmitter()
  const note = (type: string) => {
    submitted.push(type)
    noted.emit(type)
  }
  return {
    submitted,
    sent: (type) => (submitted.includes(type) ? Promise.resolve() : new Promise((resolve) => noted.once(type, () => resolve()))),
    counting: {
      submit: (op) => {
        note(op.type)
        w.submit(op)
      },
      submitFirst: (op, o) => {
        note(op.type)
        return w.submitFirst(op, o)
      },
      flush: (o) => w.flush(o),
    },
  }
}

describe('purges and reconciliation at scale', () => {
  let db: Kysely<Database>
  let dir: string
  let file: string
  let cleanup: () => Promise<void>
  const closers: (() => Promise<void>)[] = []

  beforeEach(async () => {
    ;({ db, dir, path: file, cleanup } = await freshManifest())
  })

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
    await cleanup()
  })

  async function store(name: string): Promise<CacheStore> {
    const s = await createCacheStore({ dir: path.join(dir, name), maxBytes: 1e9, memoryBytes: 0, maxObjectBytes: 1e7 })
    closers.push(() => s.close())
    return s
  }

  function writer(options: Partial<ConstructorParameters<typeof DirectWriter>[0]> = {}): DirectWriter {
    const w = new DirectWriter({ db, intervalMs: 5, log: captureLog().log, ...options })
    closers.push(() => w.close())
    return w
  }

  function applier(s: CacheStore, nodeId: string, w: DirectWriter, overrides: Partial<PurgeApplierOptions> = {}): PurgeApplier {
    const a = createPurgeApplier({ readDb: () => db, store: s, writer: w, nodeId, clusterSecret: SECRET, log: captureLog().log, pollMs: 0, ...overrides })
    closers.push(() => a.close())
    return a
  }

  async function fillMany(s: CacheStore, prefix: string, n: number, storedAt = Date.now()): Promise<void> {
    for (let i = 0; i < n; i++) await put(s, newEntry(`https://ex.com${prefix}${i}`, { storedAt }), bodyOf(32, i + 1))
  }

  async function serveInternal(s: CacheStore, a: PurgeApplier): Promise<string> {
    const root = new Hono()
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: s, onPurgeNudge: (p) => a.nudge(p), log: captureLog().log }))
    const server = await new Promise<Server>((resolve) => {
      const srv = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(srv as Server)) as Server
    })
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  /**
   * A store named `name` holding /p/0..299 and /keep/0..2, recorded in the manifest, and its
   * purge applier; `submitted` then lists the type of each op the node puts on the writer.
   */
  async function purgeFixture(name: string) {
    const w = writer()
    const s = await store(name)
    const { submitted, sent, counting } = countingWriter(w)
    closers.push(async () => stop())
    const stop = recordStoreEvents(s, counting, 'n1')
    await fillMany(s, '/p/', 300, Date.now() - 1000)
    await fillMany(s, '/keep/', 3, Date.now() - 1000)
    await w.flush()
    expect(await countEntries(db)).toBe(303)
    submitted.length = 0
    return { w, s, submitted, sent, a: applier(s, 'n1', w, { writer: counting }) }
  }

  it('records a purge of many variants as one op, not one "deleted" op per variant', async () => {
    const { w, submitted, sent, a } = await purgeFixture('n1')
    expect(await a.purge({ kind: 'prefix', value: 'https://ex.com/p/' })).toEqual({ removed: 300 })
    await w.flush()
    // The purge itself, and (once it is in the log, at its own pace) this node's progress: never a
    // "deleted" op per removed variant.
    await sent('purge-applied')
    expect(submitted).toEqual(['purge', 'purge-applied'])
    // The one purge op removed the entries (and their holdings) from the manifest.
    expect((await listManifest(db, { limit: 1000 })).entries.map((e) => e.url).sort()).toEqual(['https://ex.com/keep/0', 'https://ex.com/keep/1', 'https://ex.com/keep/2'])
    expect((await heldBy(db, 'n1')).length).toBe(3)
  })

  it('records a soft purge of many variants as one op too: marking entries stale sends no op per entry', async () => {
    const { w, s, submitted, sent, a } = await purgeFixture('soft')
    expect(await a.purge({ kind: 'prefix', value: 'https://ex.com/p/', soft: true })).toEqual({ removed: 300 })
    await w.flush()
    // The purge itself, and (once it is in the log) this node's progress: never an op per marked entry.
    await sent('purge-applied')
    expect(submitted).toEqual(['purge', 'purge-applied'])
    // Every entry stays, here and in the manifest; the purged ones are stale from the purge on.
    expect(s.stats().entries).toBe(303)
    const rows = (await listManifest(db, { limit: 1000 })).entries
    expect(rows).toHaveLength(303)
    expect(rows.filter((e) => e.staleAt <= Date.now()).map((e) => e.url).every((u) => u.startsWith('https://ex.com/p/'))).toBe(true)
    expect(rows.filter((e) => e.staleAt <= Date.now())).toHaveLength(300)
    expect((await heldBy(db, 'n1')).length).toBe(303)
  })

  it('drops a thousand entries from the index at once and removes their files in the background', async () => {
    const s = await store('bulk')
    await fillMany(s, '/bulk/', 1000, Date.now() - 1000)
    expect(await s.deleteWhere((m) => m.url.includes('/bulk/'))).toBe(1000)
    expect(s.stats().entries).toBe(0)
    expect(await s.read('https://ex.com/bulk/7', '')).toBeUndefined()
    // close() waits for the background removals: nothing is left on disk but the (empty) layout.
    await s.close()
    const left = await fs.readdir(path.join(dir, 'bulk', 'content-v2'), { recursive: true, withFileTypes: true }).catch(() => [])
    expect(left.filter((e) => e.isFile())).toEqual([])
  })

  it('sends the purge to peers at once: they apply it while the purging node has not yet delivered its queue', async () => {
    const hereStore = await store('here')
    const thereStore = await store('there')
    const storedAt = Date.now() - 1000
    await fillMany(hereStore, '/x/', 5, storedAt)
    await fillMany(thereStore, '/x/', 5, storedAt)
    const hereWriter = writer()
    const thereWriter = writer()
    const there = applier(thereStore, 'there', thereWriter)
    const thereUrl = await serveInternal(thereStore, there)
    await upsertNode(db, { id: 'there', region: 'r', internalUrl: thereUrl, startedAt: 0 }, Date.now())

    // Another process holds the manifest's write lock: nothing this node queues is delivered.
    const lock = holdWriteLock(file)
    closers.push(async () => lock.release())
    const here = applier(hereStore, 'here', hereWriter)
    expect(await here.purge({ kind: 'prefix', value: 'https://ex.com/x/' })).toEqual({ removed: 5 })
    await whenReached(thereStore, async () => (await thereStore.list({ limit: 10 })).total === 0)
    expect(hereWriter.stats().queued).toBeGreaterThan(0)
    expect(hereWriter.stats().batches).toBe(0)

    // Once the purge is in the log, the peer does not apply it a second time and records its progress.
    lock.release()
    await hereWriter.flush()
    await waitFor(() => there.lastApplied() === 1, 5000, 'the peer to read the log after the second nudge')
  })

  it('reconciles an empty disk with one op, however many holdings the manifest lists', async () => {
    const s = await store('empty')
    const sqlite = (await import('better-sqlite3')).default
    const raw = new sqlite(file)
    const now = Date.now()
    raw.transaction(() => {
      const e = raw.prepare(`insert into entries (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers) values (?, '', 'ex.com', ?, 200, 1, '', ?, ?, ?, '[]', '{}')`)
      const h = raw.prepare(`insert into entry_nodes (entry_id, node_id, stored_at) select id, 'n1', ? from entries where key = ? and variant = ''`)
      for (let i = 0; i < 3000; i++) {
        e.run(`k${i}`, `https://ex.com/${i}`, now, now + 60_000, now + 120_000)
        h.run(now, `k${i}`)
      }
    })()
    raw.close()
    // A queue far smaller than the holdings: one op per holding would overflow it.
    const w = writer({ maxQueue: 100 })
    expect(await reconcileHoldings({ store: s, db, writer: w, nodeId: 'n1' })).toEqual({ recorded: 0, forgotten: 3000 })
    await w.flush()
    expect(w.stats()).toMatchObject({ submitted: 1, dropped: 0 })
    expect(await heldBy(db, 'n1')).toEqual([])
  })

  it('reconciles a disk with the manifest without dropping ops, through a queue smaller than the differences', async () => {
    const s = await store('partial')
    await fillMany(s, '/disk/', 250)
    const sqlite = (await import('better-sqlite3')).default
    const raw = new sqlite(file)
    const now = Date.now()
    raw.transaction(() => {
      const e = raw.prepare(`insert into entries (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers) values (?, '', 'ex.com', ?, 200, 1, '', ?, ?, ?, '[]', '{}')`)
      const h = raw.prepare(`insert into entry_nodes (entry_id, node_id, stored_at) select id, 'n1', ? from entries where key = ? and variant = ''`)
      for (let i = 0; i < 2500; i++) {
        e.run(`gone${i}`, `https://ex.com/gone/${i}`, now, now + 60_000, now + 120_000)
        h.run(now, `gone${i}`)
      }
    })()
    raw.close()
    const w = writer({ maxQueue: 100, maxBatch: 40 })
    expect(await reconcileHoldings({ store: s, db, writer: w, nodeId: 'n1', chunk: 50 })).toEqual({ recorded: 250, forgotten: 2500 })
    await w.flush()
    expect(w.stats().dropped).toBe(0)
    const held = (await heldBy(db, 'n1')).map((h) => h.key).sort()
    expect(held).toEqual(Array.from({ length: 250 }, (_, i) => `https://ex.com/disk/${i}`).sort())
  })
})
