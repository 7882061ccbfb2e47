import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import type { Kysely } from 'kysely'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import { bodyOf, newEntry, put } from '../cache/test-support.ts'
import type { CacheStore, NewEntry } from '../cache/types.ts'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import { createPurgeApplier, purgeCovers } from './purge.ts'
import type { PurgeApplier, PurgeApplierOptions } from './purge.ts'
import { countEntries, insertPurge, lastAppliedPurge, listManifest, purgeApplyTimes, recordStored, toEntryRecord, upsertNode } from './repositories.ts'
import type { NewPurge } from './repositories.ts'
import { captureLog, entry, freshManifest, waitFor } from './test-helpers.ts'
import { DirectWriter } from './writer.ts'
import type { ManifestOp } from './ops.ts'

const SECRET = 'a-cluster-secret-of-some-length'

describe('purge applier', () => {
  let db: Kysely<Database>
  let dir: string
  let cleanup: () => Promise<void>
  let writer: DirectWriter
  const stores: CacheStore[] = []
  const closers: (() => Promise<void>)[] = []

  beforeEach(async () => {
    ;({ db, dir, cleanup } = await freshManifest())
    writer = new DirectWriter({ db, intervalMs: 5, log: captureLog().log })
  })

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
    await writer.close()
    for (const s of stores.splice(0)) await s.close()
    await cleanup()
  })

  async function store(name: string): Promise<CacheStore> {
    const s = await createCacheStore({ dir: path.join(dir, name), maxBytes: 1e9, memoryBytes: 1024 * 1024, maxObjectBytes: 1e7 })
    stores.push(s)
    return s
  }

  function applier(s: CacheStore, nodeId: string, overrides: Partial<PurgeApplierOptions> = {}): PurgeApplier {
    const a = createPurgeApplier({ readDb: () => db, store: s, writer, nodeId, clusterSecret: SECRET, log: captureLog().log, pollMs: 0, ...overrides })
    closers.push(() => a.close())
    return a
  }

  async function keys(s: CacheStore): Promise<string[]> {
    return (await s.list({ limit: 1000 })).entries.map((e) => `${e.key}#${e.variant}`).sort()
  }

  let requestSeq = 0
  const purge = (p: Pick<NewPurge, 'kind' | 'value'> & Partial<NewPurge>) =>
    insertPurge(db, { host: null, requestId: `r${++requestSeq}`, createdAt: Date.now(), createdBy: 'test', nodeId: 'other', ...p })

  const fill = async (s: CacheStore, url: string, overrides: Partial<NewEntry> = {}) => {
    const meta = (await put(s, newEntry(url, overrides), bodyOf(50)))!
    await recordStored(db, 'n1', toEntryRecord(meta))
    return meta
  }

  it('applies every purge after the last applied one, in id order, each kind, and records its progress', async () => {
    await upsertNode(db, { id: 'n1', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now())
    const s = await store('n1')
    await fill(s, 'https://ex.com/a')
    await fill(s, 'https://ex.com/a', { variant: 'gz' })
    await fill(s, 'https://ex.com/ab')
    await fill(s, 'https://ex.com/dir/x')
    await fill(s, 'https://ex.com/dir/y')
    await fill(s, 'https://ex.com/tagged', { tags: ['blue', 'red'] })
    await fill(s, 'https://other.com/z', { tags: ['red'] })
    await fill(s, 'https://other.com/keep')

    await purge({ kind: 'url', value: 'https://ex.com/a' }) // both variants, not /ab
    await purge({ kind: 'prefix', value: 'https://ex.com/dir/' })
    const { id: last } = await purge({ kind: 'tag', value: 'red', host: 'ex.com' }) // only ex.com's
    const { log, lines } = captureLog()
    const metrics: string[] = []
    const a = applier(s, 'n1', { log, metrics: { purge: (k) => void metrics.push(k) } })
    await a.applyPending()
    expect(await keys(s)).toEqual(['https://ex.com/ab#', 'https://other.com/keep#', 'https://other.com/z#'])
    expect(metrics).toEqual(['url', 'prefix', 'tag'])
    expect(a.lastApplied()).toBe(last)
    await writer.flush()
    expect(await lastAppliedPurge(db, 'n1')).toBe(last)
    expect(lines.some((l) => l.msg === 'applied purges' && l.fields?.removed === 5)).toBe(true)

    // Nothing new: nothing happens. Then 'all'.
    await a.applyPending()
    expect(metrics).toHaveLength(3)
    await purge({ kind: 'all', value: '' })
    await a.applyPending()
    expect(await keys(s)).toEqual([])

    // A restarted node resumes after what it recorded: earlier purges are not applied again.
    await writer.flush()
    await fill(s, 'https://ex.com/a')
    const again = applier(s, 'n1')
    await again.applyPending()
    expect(await keys(s)).toEqual(['https://ex.com/a#'])
  })

  it('records a purge ahead of the ops queued before it (a backlog after a fill)', async () => {
    const busy = new DirectWriter({ db, intervalMs: 5, maxBatch: 100, log: captureLog().log })
    closers.push(() => busy.close())
    // Elsewhere than the purge: these entries stay, so the count shows how many were applied.
    for (let i = 0; i < 2000; i++) busy.submit({ type: 'stored', nodeId: 'n1', entry: entry({ url: `https://backlog.example/${i}` }) })
    const a = applier(await store('first'), 'n1', { writer: busy })
    await a.purge({ kind: 'prefix', value: 'https://ex.com/' })
    await waitFor(async () => (await db.selectFrom('purges').select('id').execute()).length === 1, 5000, 'the purge in the log')
    expect(await countEntries(db)).toBeLessThan(2000)
    await busy.flush()
    expect(await countEntries(db)).toBe(2000)
  })

  it('asks the primary only to record the purge before it acknowledges it: the manifest sweep may follow', async () => {
    const sent: ManifestOp[] = []
    const a = applier(await store('ack'), 'n1', {
      writer: {
        submit: (op) => writer.submit(op),
        submitFirst: (op, o) => {
          sent.push(op)
          return writer.submitFirst(op, o)
        },
      },
    })
    await a.purge({ kind: 'prefix', value: 'https://ex.com/' })
    expect(sent).toMatchObject([{ type: 'purge', purge: { kind: 'prefix', value: 'https://ex.com/' }, sweepAfterAck: true }])
  })

  it('keeps entries stored after a purge when an old purge is applied late (a node restarted under a new id)', async () => {
    const s = await store('late')
    const createdAt = Date.now() - 10 * 60_000
    await purge({ kind: 'all', value: '', createdAt })
    await fill(s, 'https://ex.com/old', { storedAt: createdAt - 1000 })
    await fill(s, 'https://ex.com/at', { storedAt: createdAt })
    await fill(s, 'https://ex.com/just-after', { storedAt: createdAt + 1 })
    await fill(s, 'https://ex.com/new', { storedAt: Date.now() })
    // A new node: no row yet, so it starts from the beginning of the log.
    await applier(s, 'newcomer').applyPending()
    expect(await keys(s)).toEqual(['https://ex.com/just-after#', 'https://ex.com/new#'])
    expect(purgeCovers({ kind: 'url', value: 'https://ex.com/k', host: null, createdAt }, { key: 'https://ex.com/k', url: 'https://ex.com/other', host: 'ex.com', tags: [], storedAt: createdAt })).toBe(true)
  })

  it('polls the log: a purge recorded elsewhere is applied within the poll interval', async () => {
    const s = await store('poller')
    await fill(s, 'https://ex.com/p')
    const a = applier(s, 'poller', { pollMs: 20 })
    a.start()
    await waitFor(() => a.lastApplied() !== undefined, 20_000, 'the first pass')
    // Nothing but the poll applies purges recorded elsewhere (no nudge, no purge() here).
    await purge({ kind: 'url', value: 'https://ex.com/p' })
    await waitFor(async () => (await keys(s)).length === 0, 10_000, 'the poll to apply the purge')
  })

  it('purge() applies here at once, records the purge, and nudges peers, which apply it without polling', async () => {
    const here = await store('here')
    const there = await store('there')
    await fill(here, 'https://ex.com/t', { tags: ['x'] })
    await fill(there, 'https://ex.com/t', { tags: ['x'] })
    await fill(there, 'https://ex.com/u')

    // The peer: its internal app on a real socket, its applier only nudged (no poll).
    const peerApplier = applier(there, 'there')
    const root = new Hono()
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, store: there, onPurgeNudge: () => peerApplier.nudge(), log: captureLog().log }))
    const server = await new Promise<Server>((resolve) => {
      const srv = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(srv as Server)) as Server
    })
    closers.unshift(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const peerUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    await upsertNode(db, { id: 'there', region: 'r', internalUrl: peerUrl, startedAt: 0 }, Date.now())
    await upsertNode(db, { id: 'gone', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now() - 3600_000)
    await upsertNode(db, { id: 'here', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now())
    await peerApplier.applyPending()

    const nudged: string[] = []
    let nudgedTwice!: () => void
    const secondNudge = new Promise<void>((resolve) => (nudgedTwice = resolve))
    const counted: string[] = []
    const a = applier(here, 'here', {
      metrics: { purge: (k) => void counted.push(k) },
      fetchImpl: (input, init) => {
        if (nudged.push(String(input)) === 2) nudgedTwice()
        return fetch(input, init)
      },
    })
    const started = Date.now()
    expect(await a.purge({ kind: 'tag', value: 'x' })).toEqual({ removed: 1 })
    expect(await keys(here)).toEqual([])
    expect(a.covers({ key: 'https://ex.com/t', url: 'https://ex.com/t', host: 'ex.com', tags: ['x'], storedAt: started })).toBe(true)

    // The peer does not poll (pollMs 0): only the nudge can make it apply the purge.
    await waitFor(() => peerApplier.lastApplied() === 1, 10_000, 'the nudged peer to apply the purge')
    expect(await keys(there)).toEqual(['https://ex.com/u#'])
    // Only live peers are nudged, never this node itself: at once with the purge, and again once it is in the log.
    await secondNudge
    expect(nudged).toEqual([`${peerUrl}${INTERNAL_BASE_PATH}/purge-nudge`, `${peerUrl}${INTERNAL_BASE_PATH}/purge-nudge`])
    // The purge is in the manifest's log, and its entry is gone from the manifest.
    expect((await listManifest(db)).entries.map((e) => e.url)).toEqual(['https://ex.com/u'])
    // Once it is in the log, this node records its progress without a poll (the purge history
    // counts it), and does not apply (or count) the purge a second time.
    await waitFor(async () => (await lastAppliedPurge(db, 'here')) === 1, 20_000, 'this node to record that it applied the purge')
    expect(a.lastApplied()).toBe(1)
    await a.applyPending()
    expect(counted).toEqual(['tag'])
  })

  it('a soft purge marks what it covers stale instead of removing it, here and in the manifest, and a restart keeps the mark', async () => {
    await upsertNode(db, { id: 'n1', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now())
    const s = await store('soft')
    const before = Date.now() - 1000
    await fill(s, 'https://ex.com/blog/a', { storedAt: before })
    await fill(s, 'https://ex.com/blog/b', { storedAt: before, tags: ['t'] })
    await fill(s, 'https://ex.com/other', { storedAt: before })

    const a = applier(s, 'n1')
    const { removed } = await a.purge({ kind: 'prefix', value: 'https://ex.com/blog/', soft: true })
    expect(removed).toBe(2)
    // Nothing is removed: the covered entries are marked stale as of the purge, the rest untouched.
    expect(await keys(s)).toEqual(['https://ex.com/blog/a#', 'https://ex.com/blog/b#', 'https://ex.com/other#'])
    const marked = s.variant('https://ex.com/blog/a', '')!
    expect(marked.softPurgedAt).toBeGreaterThanOrEqual(before)
    expect(marked.staleAt).toBe(marked.softPurgedAt)
    expect(s.variant('https://ex.com/other', '')!.softPurgedAt).toBeUndefined()
    expect(a.covers(marked)).toBe(false)
    expect(a.softPurgedAt(marked)).toBe(marked.softPurgedAt)

    // The manifest keeps the entries, stale from the purge on (populate no longer copies them as fresh).
    await writer.flush()
    const rows = (await listManifest(db)).entries
    expect(rows.map((e) => e.url).sort()).toEqual(['https://ex.com/blog/a', 'https://ex.com/blog/b', 'https://ex.com/other'])
    expect(rows.find((e) => e.url === 'https://ex.com/blog/a')!.staleAt).toBe(marked.softPurgedAt)
    expect(rows.find((e) => e.url === 'https://ex.com/other')!.staleAt).toBeGreaterThan(Date.now())
    // A store of the entry delivered after the soft purge is still recorded (only a hard purge keeps one out).
    expect(await recordStored(db, 'n2', toEntryRecord(marked))).toBe(true)

    // Restart: the store loads its index from disk, still marked.
    await s.drain()
    const reopened = await store('soft')
    expect(reopened.variant('https://ex.com/blog/b', '')!.softPurgedAt).toBe(marked.softPurgedAt)
    expect(reopened.variant('https://ex.com/other', '')!.softPurgedAt).toBeUndefined()
    // Entries stored after the soft purge are fresh as usual, even when the purge is applied again.
    await fill(reopened, 'https://ex.com/blog/new')
    await applier(reopened, 'fresh-node').applyPending()
    expect(reopened.variant('https://ex.com/blog/new', '')!.softPurgedAt).toBeUndefined()
    expect(reopened.variant('https://ex.com/blog/a', '')!.softPurgedAt).toBe(marked.softPurgedAt)
  })

  it('records when each node applied each purge, the first time only', async () => {
    await upsertNode(db, { id: 'n1', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now())
    await upsertNode(db, { id: 'n2', region: 'r', internalUrl: 'http://127.0.0.1:9', startedAt: 0 }, Date.now())
    let clock = 1_000_000
    const a = applier(await store('t1'), 'n1', { now: () => clock })
    await a.purge({ kind: 'url', value: 'https://ex.com/x' })
    clock = 1_000_500
    await a.applyPending()
    await writer.flush()
    const b = applier(await store('t2'), 'n2', { now: () => clock })
    clock = 1_002_000
    await b.applyPending()
    await writer.flush()
    // Applied again (a node whose progress was not recorded): the first time stays.
    clock = 1_009_000
    await applier(await store('t3'), 'n2', { now: () => clock }).applyPending()
    await writer.flush()
    const times = await purgeApplyTimes(db, [1])
    expect(Object.fromEntries(times.get(1)!)).toEqual({ n1: 1_000_000, n2: 1_002_000 })
  })
})
