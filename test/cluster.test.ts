// Three caje processes on loopback, the local model of a LiteFS cluster: one
// SQLite manifest file shared by all, a cache dir each, and a fake of LiteFS's
// HTTP API each. Node 1's says it is primary; nodes 2 and 3's name 127.0.0.1
// as the primary (CAJE_PRIMARY_URL_TEMPLATE bakes in node 1's port), so they
// open the file read-only and send their writes to node 1.
//
// Every request goes out with `Host: cdn.test`, as behind one public name,
// so the three nodes share cache keys.

import fs from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase } from '../src/manifest/database.ts'
import { migrateToLatest } from '../src/manifest/migrate.ts'
import { startFakeLitefs, type FakeLitefs } from '../src/test-support/fake-litefs.ts'
import { getWithHost, startClusterNode, type ClusterNode } from '../src/test-support/cluster-node.ts'
import { freePort, startOrigin, tempDir, waitFor, type TestOrigin } from '../src/test-support/servers.ts'

const SECRET = 'cluster-secret-for-the-three-node-test'
const TOKEN = 'api-token-for-the-three-node-test-0123456789'
const HOST = 'cdn.test'
/**
 * The purge-log poll is off (0): a node reads the log once at start and then
 * only when nudged, so a purge can only reach the other nodes through the
 * nudge the purging node sends.
 */
const PURGE_POLL_MS = 0

/** A proxied GET with Host: cdn.test. */
const get = (node: ClusterNode, pathname: string) => getWithHost(node, HOST, pathname)

async function admin<T>(node: ClusterNode, pathname: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; json: T }> {
  const res = await fetch(node.url + pathname, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json', ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  })
  return { status: res.status, json: (await res.json()) as T }
}

interface ListJson {
  disk: { total: number; entries: { url: string }[] }
  manifest: { total: number; entries: { url: string; nodes: string[] }[] }
}
interface PopulateJson {
  populate: { running: boolean; done: number; skipped: number; failed: number; bytes: number; startedAt: number; finishedAt: number | null } | null
}

const list = async (node: ClusterNode, filter: string, limit = 50) => (await admin<ListJson>(node, `/_caje/list?filter=${encodeURIComponent(filter)}&limit=${limit}`)).json
const holders = async (node: ClusterNode, url: string) => (await list(node, url)).manifest.entries.find((e) => e.url === url)?.nodes ?? []
const diskHas = async (node: ClusterNode, filter: string) => (await list(node, filter)).disk.total

/** Start a populate run on `node` and wait for it to finish. */
async function populate(node: ClusterNode, timeoutMs = 15_000): Promise<NonNullable<PopulateJson['populate']>> {
  const started = await admin<{ started: boolean }>(node, '/_caje/populate', { method: 'POST', body: {} })
  expect(started.status).toBe(202)
  expect(started.json.started).toBe(true)
  let status: PopulateJson['populate'] = null
  await waitFor(
    async () => {
      status = (await admin<PopulateJson>(node, '/_caje/populate')).json.populate
      return status !== null && !status.running
    },
    `populate on ${node.name}`,
    timeoutMs,
  )
  return status!
}

describe('three caje nodes sharing one manifest', () => {
  let origin: TestOrigin
  let root: string
  const nodes: ClusterNode[] = []
  const litefs: FakeLitefs[] = []
  let env1: Record<string, string>
  /** The origin answers /soft/* with 503 while this is set. */
  let softOriginDown = false

  beforeAll(async () => {
    origin = await startOrigin((req, res) => {
      if (req.url?.startsWith('/soft/')) {
        // Revalidatable, with a stale-if-error window: what a soft purge is for.
        if (softOriginDown) {
          res.writeHead(503, { 'content-type': 'text/plain' })
          return res.end('origin down')
        }
        const headers = { 'cache-control': 'public, max-age=600, stale-if-error=600', etag: '"soft-v1"' }
        if (req.headers['if-none-match'] === '"soft-v1"') {
          res.writeHead(304, headers)
          return res.end()
        }
        res.writeHead(200, { ...headers, 'content-type': 'text/plain' })
        return res.end(`soft body: ${req.url}`)
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600', 'surrogate-key': 'cluster-test' })
      res.end(`hello from the origin: ${req.url}`)
    })
    root = await tempDir('caje-cluster-')
    const ports = [await freePort(), await freePort(), await freePort()]
    const common = {
      CAJE_ORIGIN: origin.url,
      CAJE_LISTEN_HOST: '127.0.0.1',
      CAJE_DATABASE_PATH: path.join(root, 'shared', 'manifest.db'),
      CAJE_CLUSTER_SECRET: SECRET,
      CAJE_API_TOKEN: TOKEN,
      CAJE_ADMIN_PASSWORD: 'correct horse battery staple',
      CAJE_PRIMARY_URL_TEMPLATE: `http://{host}:${ports[0]}`,
      CAJE_ACCESS_LOG: 'false',
      CAJE_POPULATE_INTERVAL: '0',
      CAJE_POPULATE_CONCURRENCY: '4',
      CAJE_PURGE_POLL_MS: String(PURGE_POLL_MS),
      CAJE_SHUTDOWN_TIMEOUT_MS: '2000',
    }
    const envFor = async (i: number): Promise<Record<string, string>> => {
      const litefsDir = path.join(root, `litefs${i + 1}`)
      await fs.mkdir(litefsDir, { recursive: true })
      const api = await startFakeLitefs(i === 0 ? { isPrimary: true } : { isPrimary: false, hostname: '127.0.0.1' })
      litefs.push(api)
      return {
        ...common,
        PORT: String(ports[i]),
        CAJE_NODE_ID: `node${i + 1}`,
        CAJE_CACHE_DIR: path.join(root, `cache${i + 1}`),
        CAJE_LITEFS_DIR: litefsDir,
        CAJE_LITEFS_API: api.url,
        CAJE_INTERNAL_URL: `http://127.0.0.1:${ports[i]}`,
      }
    }
    // Replicas open the file read-only and must find it, as under LiteFS once the
    // primary's copy has arrived: create it first, so all three can start together.
    const { db } = openDatabase({ path: common.CAJE_DATABASE_PATH })
    await migrateToLatest(db)
    await db.destroy()
    env1 = await envFor(0)
    const t0 = Date.now()
    nodes.push(...(await Promise.all([startClusterNode('node1', env1), startClusterNode('node2', await envFor(1)), startClusterNode('node3', await envFor(2))])))
    console.log(`three nodes started in ${Date.now() - t0} ms`)
    const roles = await Promise.all(nodes.map(async (n) => ((await (await fetch(`${n.url}/_caje/health`)).json()) as { role: string }).role))
    expect(roles).toEqual(['primary', 'replica', 'replica'])
  }, 180_000) // the processes start together: see startClusterNode

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()))
    await Promise.all(litefs.map((l) => l.close()))
    await origin?.close()
    if (root) await fs.rm(root, { recursive: true, force: true })
  })

  const [n1, n2, n3] = [0, 1, 2].map((i) => () => nodes[i]!)

  it('records a response cached through node 1 in the manifest as held by node 1', async () => {
    const first = await get(n1(), '/page')
    expect(first.status).toBe(200)
    expect(first.cacheStatus).toMatch(/fwd=uri-miss; fwd-status=200; stored/)
    // Read through a replica: its read-only handle sees what the primary wrote.
    await waitFor(async () => (await holders(n2(), `http://${HOST}/page`)).join() === 'node1', 'the manifest to show node1 holding /page')
  })

  it('populate on node 2 fills from node 1, not the origin, and node 2 then serves a hit', async () => {
    const originBefore = origin.count('/page')
    const status = await populate(n2())
    expect(status).toMatchObject({ done: 1, failed: 0 })
    expect(origin.count('/page')).toBe(originBefore)
    const hit = await get(n2(), '/page')
    expect(hit.cacheStatus).toMatch(/^caje; hit/)
    expect(hit.body).toBe('hello from the origin: /page')
    await waitFor(async () => (await holders(n1(), `http://${HOST}/page`)).join() === 'node1,node2', 'the manifest to show node2 holding /page too')
  })

  it('measures populate throughput', async () => {
    const N = 200
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < N) {
          const r = await get(n1(), `/obj/${next++}`)
          expect(r.status).toBe(200)
        }
      }),
    )
    await waitFor(async () => (await list(n2(), '/obj/', 1)).manifest.total === N, `${N} objects in the manifest`, 10_000)
    const originBefore = origin.requests.length
    const t0 = Date.now()
    const status = await populate(n2(), 20_000)
    const wallMs = Date.now() - t0
    expect(status).toMatchObject({ done: N, failed: 0 })
    expect(origin.requests.length).toBe(originBefore)
    const runMs = Math.max(1, status.finishedAt! - status.startedAt)
    console.log(
      `populate throughput (concurrency 4): ${N} objects (${status.bytes} bytes) from a peer in ${runMs} ms = ${Math.round((N * 1000) / runMs)} objects/s ` +
        `(${wallMs} ms from the POST until the status said finished, polled)`,
    )
    expect((await get(n2(), `/obj/${N - 1}`)).cacheStatus).toMatch(/^caje; hit/)
  })

  // The nodes never poll the purge log: what arrives came by the nudge.
  it('a purge sent to node 3 (a replica) reaches all three nodes by the nudge (none of them polls the purge log)', async () => {
    expect(await populate(n3(), 20_000)).toMatchObject({ failed: 0 })
    for (const n of nodes) expect(await diskHas(n, '/page'), n.name).toBe(1)

    const t0 = Date.now()
    const res = await admin<{ ok: boolean; removed: number }>(n3(), '/_caje/purge', { method: 'POST', body: { url: `http://${HOST}/page` } })
    expect(res.status).toBe(200)
    expect(res.json.removed).toBe(1)
    const goneAt: Record<string, number> = {}
    await waitFor(
      async () => {
        for (const n of nodes) if (goneAt[n.name] === undefined && (await diskHas(n, '/page')) === 0) goneAt[n.name] = Date.now() - t0
        return Object.keys(goneAt).length === 3
      },
      'the purge on every node',
    )
    console.log(`purge by URL via replica node3: gone from every node after ${Math.max(...Object.values(goneAt))} ms (${JSON.stringify(goneAt)})`)
    await waitFor(async () => (await list(n1(), '/page')).manifest.total === 0, 'the manifest entry to go')
    const after = await get(n1(), '/page')
    expect(after.cacheStatus).toMatch(/fwd=uri-miss/)

    // By prefix, sent to the other replica: 200 objects on three nodes.
    const t1 = Date.now()
    const prefix = await admin<{ removed: number }>(n2(), '/_caje/purge', { method: 'POST', body: { prefix: `http://${HOST}/obj/` } })
    expect(prefix.json.removed).toBe(200)
    await waitFor(async () => (await Promise.all(nodes.map((n) => diskHas(n, '/obj/')))).every((t) => t === 0), 'the prefix purge on every node')
    console.log(`purge by prefix (200 objects) via replica node2: gone from every node after ${Date.now() - t1} ms`)
  })

  it('a soft purge on node 1 makes node 2 revalidate (a 304 keeps the body), serve stale-if-error while the origin fails, and the history says when each node applied it', async () => {
    for (const p of ['/soft/a', '/soft/b']) {
      expect((await get(n1(), p)).cacheStatus).toMatch(/stored/)
      expect((await get(n2(), p)).cacheStatus).toMatch(/stored/)
    }
    await waitFor(async () => (await holders(n1(), `http://${HOST}/soft/b`)).join() === 'node1,node2', 'both nodes to hold /soft/b')
    expect((await get(n2(), '/soft/a')).cacheStatus).toMatch(/^caje; hit/)

    const res = await admin<{ ok: boolean; purge: { soft: boolean }; removed: number; marked: number }>(n1(), '/_caje/purge', {
      method: 'POST',
      body: { prefix: `http://${HOST}/soft/`, soft: true },
    })
    expect(res.status).toBe(200)
    expect(res.json).toMatchObject({ ok: true, purge: { soft: true }, removed: 0, marked: 2 })
    // Node 2 gets the purge by the nudge (it never polls the purge log) and marks its copies stale, keeping them.
    await waitFor(
      async () => {
        const disk = (await admin<{ disk: { entries: { url: string; staleAt: number }[] } }>(n2(), '/_caje/list?filter=%2Fsoft%2F')).json.disk.entries
        return disk.length === 2 && disk.every((e) => e.staleAt <= Date.now())
      },
      'node2 to mark its copies stale',
      5_000,
    )

    const before = origin.requests.length
    const revalidated = await get(n2(), '/soft/a')
    expect(revalidated.status).toBe(200)
    expect(revalidated.body).toBe('soft body: /soft/a')
    expect(revalidated.cacheStatus).toMatch(/^caje; fwd=stale; fwd-status=304; ttl=\d+; detail=soft-purge$/)
    // The origin saw one conditional request with the stored validator, and answered 304.
    const asked = origin.requests.slice(before)
    expect(asked.map((r) => [r.url, r.headers['if-none-match']])).toEqual([['/soft/a', '"soft-v1"']])
    // Refreshed: a hit again.
    expect((await get(n2(), '/soft/a')).cacheStatus).toMatch(/^caje; hit/)

    // The origin fails: /soft/b, still marked stale, is served under stale-if-error.
    softOriginDown = true
    try {
      const stale = await get(n2(), '/soft/b')
      expect(stale.status).toBe(200)
      expect(stale.body).toBe('soft body: /soft/b')
      expect(stale.cacheStatus).toMatch(/fwd=stale; fwd-status=503;.*detail=stale-if-error/)
    } finally {
      softOriginDown = false
    }

    // The history, read on node 3: a soft purge, applied on every node, each with its time.
    type History = { purges: Array<{ request: { kind: string; soft: boolean }; appliedOn: string[]; pendingOn: string[]; appliedAt: Record<string, number>; createdAt: number }> }
    let latest: History['purges'][number] | undefined
    await waitFor(
      async () => {
        latest = (await admin<History>(n3(), '/_caje/purges')).json.purges[0]
        return latest !== undefined && latest.pendingOn.length === 0 && Object.keys(latest.appliedAt).length === 3
      },
      'every node to report when it applied the soft purge',
      5_000,
    )
    expect(latest!.request).toMatchObject({ kind: 'prefix', soft: true })
    expect(latest!.appliedOn.sort()).toEqual(['node1', 'node2', 'node3'])
    for (const at of Object.values(latest!.appliedAt)) expect(at).toBeGreaterThanOrEqual(latest!.createdAt)
    console.log(`soft purge applied after (ms): ${JSON.stringify(Object.fromEntries(Object.entries(latest!.appliedAt).map(([n, at]) => [n, at - latest!.createdAt])))}`)
  })

  it('internal endpoints refuse requests without the cluster secret', async () => {
    const key = encodeURIComponent(`http://${HOST}/page`)
    for (const n of nodes) {
      for (const auth of [undefined, 'Bearer not-the-secret', `Bearer ${TOKEN}`]) {
        const headers: Record<string, string> = auth ? { authorization: auth } : {}
        expect((await fetch(`${n.url}/_caje/internal/object?key=${key}&variant=`, { headers })).status, `${n.name} object ${auth}`).toBe(401)
        expect((await fetch(`${n.url}/_caje/internal/purge-nudge`, { method: 'POST', headers })).status).toBe(401)
        expect((await fetch(`${n.url}/_caje/internal/manifest`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{"ops":[]}' })).status).toBe(401)
      }
      // With the secret the same routes answer.
      const ok = await fetch(`${n.url}/_caje/internal/object?key=${encodeURIComponent(`http://${HOST}/nothing`)}&variant=`, { headers: { authorization: `Bearer ${SECRET}` } })
      expect(ok.status).toBe(404)
    }
  })

  it('a replica whose primary is down queues its writes and delivers them when the primary returns', async () => {
    await n1().stop()
    const cached = await get(n2(), '/while-primary-down')
    expect(cached.cacheStatus).toMatch(/stored/)
    // The write is waiting in node 2's queue, retried with backoff.
    await waitFor(
      async () => {
        const h = (await (await fetch(`${n2().url}/_caje/health`)).json()) as { manifestWriter: { queued: number; failedAttempts: number } }
        return h.manifestWriter.queued > 0 && h.manifestWriter.failedAttempts > 0
      },
      'node2 to queue and retry',
    )
    expect(await holders(n2(), `http://${HOST}/while-primary-down`)).toEqual([])

    nodes[0] = await startClusterNode('node1', env1)
    const t0 = Date.now()
    await waitFor(async () => (await holders(n1(), `http://${HOST}/while-primary-down`)).join() === 'node2', "node2's queued write in the manifest", 15_000)
    console.log(`queued replica write delivered ${Date.now() - t0} ms after the primary was back`)
  })
})
