// Warm start, black-box: nodes sharing one manifest file (as without LiteFS),
// a real origin, real disks. A node that starts with an empty disk fetches
// what the cluster asks for most first, and /_caje/ready holds traffic back
// until it has.

import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { ReadyStatus } from './manifest/hot-set.ts'
import { killCajeProcesses, startCajeProcess } from './test-support/caje-process.ts'
import { startNode, startOrigin, tempDir, whenReached, type TestNode, type TestOrigin } from './test-support/servers.ts'

const nodes: TestNode[] = []
const origins: TestOrigin[] = []
afterEach(async () => {
  killCajeProcesses()
  for (const n of nodes.splice(0)) await n.close()
  for (const o of origins.splice(0)) await o.close()
})

/** An origin serving every path as a cacheable page; paths under /hot wait while `held` is set. */
async function gatedOrigin(): Promise<{ origin: TestOrigin; hold(): void; release(): void }> {
  let held: Array<() => void> | undefined
  const origin = await startOrigin((req, res) => {
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': req.url?.startsWith('/pass') ? 'no-store' : 'max-age=3600' })
      res.end(`body of ${req.url}`)
    }
    if (held && req.url?.startsWith('/hot')) held.push(answer)
    else answer()
  })
  origins.push(origin)
  return {
    origin,
    hold: () => (held = []),
    release: () => {
      const waiting = held ?? []
      held = undefined
      for (const answer of waiting) answer()
    },
  }
}

async function node(originUrl: string, dir: string, database: string, env: Record<string, string>, log?: (e: Record<string, unknown>) => void): Promise<TestNode> {
  const n = await startNode(originUrl, { CAJE_DATABASE_PATH: database, ...env }, { dir, ...(log && { log }) })
  nodes.push(n)
  return n
}

async function ready(n: TestNode): Promise<{ status: number; body: ReadyStatus & { node: string } }> {
  const res = await n.get('/_caje/ready')
  return { status: res.status, body: (await res.json()) as ReadyStatus & { node: string } }
}

/** Node "a" serves traffic (cold pages once, hot pages often) and is closed, which hands its last hit counts to the manifest. */
async function clusterWithTraffic(originUrl: string, shared: string): Promise<void> {
  const a = await node(originUrl, path.join(shared, 'a'), path.join(shared, 'manifest.db'), { CAJE_NODE_ID: 'a', CAJE_HIT_FLUSH_SECONDS: '3600' })
  // Keyset (manifest) order is the opposite of how hot they are.
  const traffic: Array<[string, number]> = [
    ['/a-cold', 1],
    ['/b-cold', 1],
    ['/hot-y', 3],
    ['/hot-z', 5],
  ]
  for (const [p, times] of traffic) {
    for (let i = 0; i < times; i++) await (await a.get(p)).text()
    await a.stored(p)
  }
  // Asked for most of all, but passed through (no-store): nothing a warming node could fetch, so not counted.
  for (let i = 0; i < 9; i++) await (await a.get('/pass')).text()
  // Counts wait in memory for the batch: nothing in the manifest yet.
  expect(await a.manifest.readDb().selectFrom('url_hits').selectAll().execute()).toEqual([])
  nodes.splice(nodes.indexOf(a), 1)
  await a.close()
}

describe('warm start', () => {
  it('an empty node fetches the hottest entries first and answers /_caje/ready with 503 until it holds its share of them', async () => {
    const { origin, hold, release } = await gatedOrigin()
    const shared = await tempDir()
    await clusterWithTraffic(origin.url, shared)

    hold()
    const before = origin.requests.length
    const b = await node(origin.url, path.join(shared, 'b'), path.join(shared, 'manifest.db'), {
      CAJE_NODE_ID: 'b',
      CAJE_POPULATE_INTERVAL: '300',
      CAJE_POPULATE_CONCURRENCY: '1',
      CAJE_READY_HOT_SET: '2',
      CAJE_READY_WARM_SHARE: '1',
    })
    // Node a's one batch, per key, summed over its requests.
    const counts = await b.manifest.readDb().selectFrom('url_hits').select(['key', 'hits']).orderBy('hits', 'desc').orderBy('key').execute()
    expect(counts.map((r) => [new URL(r.key).pathname, r.hits])).toEqual([
      ['/hot-z', 5],
      ['/hot-y', 3],
      ['/a-cold', 1],
      ['/b-cold', 1],
    ])

    const cold = await ready(b)
    expect(cold.status).toBe(503)
    expect(cold.body).toMatchObject({ ready: false, state: 'warming', hotSet: 2, target: 2, node: 'b' })
    expect(cold.body.fetched).toBeLessThan(2)
    // Liveness is another question: a warming node is alive.
    expect((await b.get('/_caje/health')).status).toBe(200)

    release()
    // Ready follows the store: each copy stored is counted as it happens.
    await whenReached(b.store, async () => (await ready(b)).status === 200)
    expect((await ready(b)).body).toMatchObject({ ready: true, state: 'warm', fetched: 2, target: 2, progress: 1 })
    await whenReached(b.store, () => origin.requests.length - before >= 4)
    expect(origin.requests.slice(before).map((r) => r.url)).toEqual(['/hot-z', '/hot-y', '/a-cold', '/b-cold'])
  })

  it('a node whose disk is not empty at start is ready at once, and so is a cluster with no hit counts', async () => {
    const { origin } = await gatedOrigin()
    const shared = await tempDir()
    const database = path.join(shared, 'manifest.db')
    const env = { CAJE_NODE_ID: 'a', CAJE_POPULATE_INTERVAL: '300' }
    const first = await node(origin.url, path.join(shared, 'a'), database, env)
    // Nothing counted anywhere yet.
    expect(await ready(first)).toMatchObject({ status: 200, body: { ready: true, state: 'no-hot-set' } })
    for (let i = 0; i < 3; i++) await (await first.get('/hot-page')).text()
    await first.stored('/hot-page')
    nodes.splice(nodes.indexOf(first), 1)
    await first.close()

    // Same disk, hit counts now in the manifest: ready at once.
    const again = await node(origin.url, path.join(shared, 'a'), database, env)
    expect(await ready(again)).toMatchObject({ status: 200, body: { ready: true, state: 'not-empty' } })
  })

  it('a warm-up that cannot make progress (origin down, no peer) gives up after CAJE_READY_TIMEOUT and says so', async () => {
    const { origin } = await gatedOrigin()
    const shared = await tempDir()
    await clusterWithTraffic(origin.url, shared)
    const originUrl = origin.url
    await origin.close()
    origins.splice(origins.indexOf(origin), 1)

    const lines: Array<Record<string, unknown>> = []
    let gaveUpLogged!: (line: Record<string, unknown>) => void
    const gaveUpLine = new Promise<Record<string, unknown>>((resolve) => (gaveUpLogged = resolve))
    const b = await node(
      originUrl,
      path.join(shared, 'b'),
      path.join(shared, 'manifest.db'),
      // CAJE_READY_TIMEOUT's least value: the give-up is the product's own timer, on the real clock.
      { CAJE_NODE_ID: 'b', CAJE_POPULATE_INTERVAL: '300', CAJE_READY_TIMEOUT: '1', CAJE_ORIGIN_CONNECT_TIMEOUT_MS: '500' },
      (e) => {
        lines.push(e)
        if (String(e.msg).startsWith('warm-up gave up')) gaveUpLogged(e)
      },
    )
    expect(lines.some((l) => String(l.msg).startsWith('warm-up started'))).toBe(true)
    const gaveUp = await gaveUpLine
    expect(gaveUp).toMatchObject({ level: 'warn', fetched: 0, target: 4, hotSet: 4, timeoutSeconds: 1 })
    expect(await ready(b)).toMatchObject({ status: 200, body: { ready: true, state: 'timed-out', fetched: 0 } })
  })

  it('a caje process started on an empty disk answers 503 with its progress, then 200 once warm', async () => {
    const { origin, hold, release } = await gatedOrigin()
    const shared = await tempDir()
    await clusterWithTraffic(origin.url, shared)
    hold()
    const caje = await startCajeProcess({
      CAJE_ORIGIN: origin.url,
      CAJE_CACHE_DIR: path.join(shared, 'b', 'cache'),
      CAJE_DATABASE_PATH: path.join(shared, 'manifest.db'),
      CAJE_NODE_ID: 'b',
      CAJE_POPULATE_INTERVAL: '300',
      CAJE_READY_HOT_SET: '2',
      CAJE_READY_WARM_SHARE: '100%',
    })
    const { url } = caje
    const readyNow = async () => {
      const res = await fetch(`${url}/_caje/ready`)
      return { status: res.status, body: (await res.json()) as ReadyStatus }
    }
    expect(await readyNow()).toMatchObject({ status: 503, body: { ready: false, state: 'warming', hotSet: 2, target: 2, fetched: 0, progress: 0 } })
    expect((await fetch(`${url}/_caje/health`)).status).toBe(200)
    // Log lines reach stdout in batches (log.ts FLUSH_AFTER_MS): wait for the line, not for the state.
    await caje.printed((out) => out.includes('warm-up started'), 'the warm-up started line')
    release()
    // The process says when it is warm: it is ready from then on.
    await caje.printed((out) => out.includes('warm-up done'), 'the warm-up done line')
    expect(await readyNow()).toMatchObject({ status: 200, body: { ready: true, state: 'warm', fetched: 2 } })
    expect(await caje.stop()).toBe(0)
  })
})
