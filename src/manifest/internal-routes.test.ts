import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import type { ManifestOp } from './ops.ts'
import { countEntries, purgesAfter } from './repositories.ts'
import { captureLog, entry, freshManifestPerTest, holdWriteLock, waitFor } from './test-helpers.ts'
import { DirectWriter, PIPELINE_HEADER, QUEUED_HEADER } from './writer.ts'

const SECRET = 'a-cluster-secret-of-some-length'
const op: ManifestOp = { type: 'stored', nodeId: 'n2', entry: entry({ url: 'https://ex.com/x' }) }

describe('internal routes', () => {
  let db: Kysely<Database>
  freshManifestPerTest((m) => (db = m.db))

  function app(deps: Partial<Parameters<typeof createInternalApp>[0]> = {}): Hono {
    const root = new Hono()
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, log: captureLog().log, ...deps }))
    return root
  }

  const post = (a: Hono, body: unknown, auth?: string) =>
    a.request(`${INTERNAL_BASE_PATH}/manifest`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth === undefined ? {} : { authorization: auth }) },
      body: JSON.stringify(body),
    })

  it('refuses without the secret or with a wrong one, and applies nothing', async () => {
    const a = app()
    for (const auth of [undefined, `Bearer ${SECRET}x`, `Bearer ${SECRET.slice(0, -1)}`, SECRET, 'Basic abc', 'Bearer ']) {
      const res = await post(a, { ops: [op] }, auth)
      expect(res.status, String(auth)).toBe(401)
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/)
      expect(await res.json()).toEqual({ error: 'missing or wrong cluster secret' })
    }
    // Unknown paths too: no route names leak without the secret.
    expect((await a.request(`${INTERNAL_BASE_PATH}/nope`)).status).toBe(401)
    expect((await a.request(`${INTERNAL_BASE_PATH}/role`)).status).toBe(401)
    expect(await countEntries(db)).toBe(0)
  })

  it('is disabled when no cluster secret is configured', async () => {
    const res = await post(app({ clusterSecret: undefined }), { ops: [op] }, 'Bearer anything')
    expect(res.status).toBe(503)
    expect(await countEntries(db)).toBe(0)
  })

  it('applies a batch on the primary', async () => {
    const res = await post(app(), { ops: [op, { type: 'deleted', nodeId: 'n2', key: 'https://ex.com/none', variant: '' }] }, `Bearer ${SECRET}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(await res.json()).toEqual({ applied: 2, failed: 0 })
    expect(await countEntries(db)).toBe(1)
  })

  it('acknowledges a purge that allows it once it is in the log, and removes its entries afterwards', async () => {
    const stored: ManifestOp[] = Array.from({ length: 300 }, (_, i) => ({ type: 'stored', nodeId: 'n2', entry: entry({ url: `https://ex.com/p/${i}`, storedAt: 1000 + i }) }))
    const a = app()
    expect((await post(a, { ops: stored }, `Bearer ${SECRET}`)).status).toBe(200)
    const purge = { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/p/', host: null, createdAt: 5000, createdBy: 'admin', nodeId: 'n2', soft: false }
    const res = await post(a, { ops: [{ type: 'purge', purge, sweepAfterAck: true }] }, `Bearer ${SECRET}`)
    expect(await res.json()).toEqual({ applied: 1, failed: 0 })
    // Answered with the purge recorded and before its sweep's first transaction (it waits for a turn of the loop).
    expect((await purgesAfter(db, 0)).map((p) => p.requestId)).toEqual(['r1'])
    expect(await countEntries(db)).toBe(300)
    await waitFor(async () => (await countEntries(db)) === 0, 5000, 'the purge\'s entries to leave the manifest')
  })

  it('answers 409 with the primary it knows on a replica', async () => {
    const a = app({
      writableDb: () => undefined,
      role: () => ({ kind: 'replica', primaryHost: 'm1', primaryUrl: 'http://m1:8080' }),
    })
    const res = await post(a, { ops: [op] }, `Bearer ${SECRET}`)
    expect(res.status).toBe(409)
    expect(await res.json()).toMatchObject({ error: expect.stringContaining('replica'), primaryUrl: 'http://m1:8080' })
    const role = await a.request(`${INTERNAL_BASE_PATH}/role`, { headers: { authorization: `Bearer ${SECRET}` } })
    expect(await role.json()).toEqual({ role: 'replica', primaryUrl: 'http://m1:8080' })
  })

  it('refuses malformed batches with the reason, and 503s when the database is busy', async () => {
    const bad = await post(app(), { ops: [{ type: 'stored', nodeId: 'n2' }] }, `Bearer ${SECRET}`)
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ error: 'ops[0]: entry: not an object' })

    const notJson = await app().request(`${INTERNAL_BASE_PATH}/manifest`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' },
      body: '{',
    })
    expect(notJson.status).toBe(400)

    const busy = app({
      applyOps: async () => {
        throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })
      },
    })
    const res = await post(busy, { ops: [op] }, `Bearer ${SECRET}`)
    expect(res.status).toBe(503)
    expect(await res.json()).toEqual({ error: 'manifest is busy; retry' })
  })
})

/** The internal routes over a writer with its apply thread, wired as a node wires them. */
function routesOnApplyThread(db: Kysely<Database>): { writer: DirectWriter; root: Hono } {
  const writer = new DirectWriter({ db, applyThread: true, intervalMs: 10_000, log: captureLog().log })
  const root = new Hono()
  root.route(
    INTERNAL_BASE_PATH,
    createInternalApp({
      clusterSecret: SECRET,
      writableDb: () => db,
      log: captureLog().log,
      applyOps: (d, ops, options) => writer.applyReceived(ops, options),
      applyBody: (d, chunks) => writer.applyReceivedBody(chunks),
    }),
  )
  return { writer, root }
}

describe('internal routes with the writer\'s apply thread, as a node wires them', () => {
  let db: Kysely<Database>
  let path: string
  freshManifestPerTest((m) => ((db = m.db), (path = m.path)))

  it('applies batches from their bytes on the thread, checks the rest here, and answers a busy file with 503', async () => {
    const { writer, root } = routesOnApplyThread(db)
    const post = (body: string) => root.request(`${INTERNAL_BASE_PATH}/manifest`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' }, body })
    const stored = (i: number, storedAt = 1000 + i): ManifestOp => ({ type: 'stored', nodeId: 'n2', entry: entry({ url: `https://ex.com/p/${i}`, storedAt }) })

    const res = await post(JSON.stringify({ ops: Array.from({ length: 300 }, (_, i) => stored(i)) }))
    expect(await res.json()).toEqual({ applied: 300, failed: 0 })
    expect(await countEntries(db)).toBe(300)

    // A purge among stores goes back to the event loop: recorded, acknowledged, swept afterwards; a store after it is kept.
    const purge = { requestId: 'r1', kind: 'prefix', value: 'https://ex.com/p/', host: null, createdAt: 5000, createdBy: 'admin', nodeId: 'n2', soft: false }
    const mixed = await post(JSON.stringify({ ops: [stored(300), { type: 'purge', purge, sweepAfterAck: true }, stored(301, 6000)] }))
    expect(await mixed.json()).toEqual({ applied: 3, failed: 0 })
    await waitFor(async () => (await countEntries(db)) === 1, 5000, 'the purge\'s entries to leave the manifest')

    const bad = await post(JSON.stringify({ ops: [stored(1), { type: 'stored', nodeId: 'n2' }] }))
    expect(bad.status).toBe(400)
    expect(await bad.json()).toEqual({ error: 'ops[1]: entry: not an object' })
    expect((await post('{"ops":[')).status).toBe(400)

    const lock = holdWriteLock(path)
    const busy = await post(JSON.stringify({ ops: [stored(400, 7000)] }))
    lock.release()
    expect(busy.status).toBe(503)
    expect(await busy.json()).toEqual({ error: 'manifest is busy; retry' })
    expect(await countEntries(db)).toBe(1)
    await writer.close()
  })

  it('answers a batch in line at once and its outcome after; applies a line in order, and none after a batch it did not apply', async () => {
    const { writer, root } = routesOnApplyThread(db)
    const post = (body: string, line: string) =>
      root.request(`${INTERNAL_BASE_PATH}/manifest`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json', [PIPELINE_HEADER]: line }, body })
    const stored = (i: number): ManifestOp => ({ type: 'stored', nodeId: 'n2', entry: entry({ url: `https://ex.com/line/${i}`, storedAt: 1000 + i }) })

    // In line: the head says so, and the body carries the answer with its status.
    const first = await post(JSON.stringify({ ops: [stored(1), stored(2)] }), 'line-a 0 last')
    expect(first.status).toBe(200)
    expect(first.headers.get(QUEUED_HEADER)).toBe('1')
    expect(await first.json()).toEqual({ applied: 2, failed: 0, status: 200 })

    // A batch the primary cannot apply, and the one sent after it in the same line: neither is applied.
    const broken = await post('{"ops":[', 'line-b 0')
    const after = await post(JSON.stringify({ ops: [stored(3)] }), 'line-b 1 last')
    // Another line is not held up by it.
    const other = await post(JSON.stringify({ ops: [stored(4)] }), 'line-c 0 last')
    expect(await broken.json()).toEqual({ error: 'body is not valid JSON', status: 400 })
    expect(await after.json()).toEqual({ error: 'the batch before this one in its line was not applied; retry', status: 503 })
    expect(await other.json()).toEqual({ applied: 1, failed: 0, status: 200 })
    expect(await countEntries(db)).toBe(3)

    // A batch whose line this node does not know (the one before it failed and ended it, or never came): not applied either.
    const stray = await post(JSON.stringify({ ops: [stored(3)] }), 'line-b 2 last')
    expect(await stray.json()).toEqual({ error: 'the batch before this one in its line was not applied; retry', status: 503 })
    expect(await countEntries(db)).toBe(3)

    // Sent again, in a line of its own.
    const again = await post(JSON.stringify({ ops: [stored(3)] }), 'line-d 0 last')
    expect(await again.json()).toEqual({ applied: 1, failed: 0, status: 200 })
    expect(await countEntries(db)).toBe(4)
    await writer.close()
  })
})
