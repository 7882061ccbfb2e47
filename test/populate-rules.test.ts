// Populate of one URL whose cache key a rule makes from a request header and a
// cookie: two caje processes on loopback share one manifest file (each writes
// it directly, as without LiteFS), each with its own cache dir and the same
// rules file. A row's Populate button on node 2 names one key; node 2 must
// then hold every key of that URL, copied from node 1, not from the origin.

import fs from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { PopulateStatus } from '../src/vocabulary.ts'
import { getWithHost, startClusterNode, type ClusterNode } from '../src/test-support/cluster-node.ts'
import { freePort, startOrigin, tempDir, waitFor, type TestOrigin } from '../src/test-support/servers.ts'

const SECRET = 'cluster-secret-for-the-keyed-populate-test'
const TOKEN = 'api-token-for-the-keyed-populate-test-0123'
const HOST = 'cdn.test'

const RULES = `rules:
  - name: per-tenant
    match: { path: /t/ }
    cache_key: { headers: [x-tenant], cookies: [lang] }
`

/** A proxied GET with Host: cdn.test, so both nodes make the same keys. */
const get = (node: ClusterNode, pathname: string, headers: Record<string, string> = {}) => getWithHost(node, HOST, pathname, headers)

async function admin<T>(node: ClusterNode, pathname: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(node.url + pathname, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return { status: res.status, json: (await res.json()) as T }
}


interface ListJson {
  manifest: { entries: { key: string; url: string; nodes: string[] }[] }
}

/** The key a response's Cache-Status names (`key="..."`, RFC 9211 §2.7), present when a rule made it. */
function keyOf(cacheStatus: string): string {
  const m = /; key=("(?:[^"\\]|\\.)*")/.exec(cacheStatus)
  if (!m) throw new Error(`no key in Cache-Status: ${cacheStatus}`)
  return JSON.parse(m[1]!) as string
}

describe('populate of a URL whose key a rule makes from a header and a cookie', () => {
  let origin: TestOrigin
  let root: string
  const nodes: ClusterNode[] = []

  // The clients: one key each under /t/page.
  const CLIENTS: Record<string, string>[] = [{ 'x-tenant': 'acme' }, { 'x-tenant': 'globex' }, { cookie: 'lang=fr; other=1' }, {}]
  const bodyFor = (h: Record<string, string>) => `page for tenant=${h['x-tenant'] ?? '-'} cookie=${h.cookie ?? '-'}`

  beforeAll(async () => {
    origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' })
      res.end(bodyFor({ ...(req.headers['x-tenant'] ? { 'x-tenant': String(req.headers['x-tenant']) } : {}), ...(req.headers.cookie ? { cookie: req.headers.cookie } : {}) }))
    })
    root = await tempDir('caje-populate-rules-')
    const rulesFile = path.join(root, 'caje.yml')
    await fs.writeFile(rulesFile, RULES)
    const ports = [await freePort(), await freePort()]
    const env = (i: number): Record<string, string> => ({
      PORT: String(ports[i]),
      CAJE_LISTEN_HOST: '127.0.0.1',
      CAJE_ORIGIN: origin.url,
      CAJE_CONFIG: rulesFile,
      CAJE_DATABASE_PATH: path.join(root, 'manifest.db'),
      CAJE_CACHE_DIR: path.join(root, `cache${i + 1}`),
      CAJE_NODE_ID: `node${i + 1}`,
      CAJE_INTERNAL_URL: `http://127.0.0.1:${ports[i]}`,
      CAJE_CLUSTER_SECRET: SECRET,
      CAJE_API_TOKEN: TOKEN,
      CAJE_ADMIN_PASSWORD: 'correct horse battery staple',
      CAJE_ACCESS_LOG: 'false',
      CAJE_POPULATE_INTERVAL: '0',
      CAJE_SHUTDOWN_TIMEOUT_MS: '2000',
    })
    // One after the other: the first creates and migrates the shared file.
    nodes.push(await startClusterNode('node1', env(0)))
    nodes.push(await startClusterNode('node2', env(1)))
  }, 180_000) // the processes start together: see startClusterNode

  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()))
    await origin?.close()
    if (root) await fs.rm(root, { recursive: true, force: true })
  })

  it('warms every key of the URL from the peer when asked for one of them, and then serves each from cache', async () => {
    const [n1, n2] = nodes as [ClusterNode, ClusterNode]
    const keys: string[] = []
    for (const headers of CLIENTS) {
      const first = await get(n1, '/t/page', headers)
      expect(first.body).toBe(bodyFor(headers))
      expect(first.cacheStatus).toMatch(/fwd=uri-miss; fwd-status=200; stored/)
      keys.push(keyOf(first.cacheStatus))
    }
    expect(new Set(keys).size).toBe(CLIENTS.length)
    const url = `http://${HOST}/t/page`
    await waitFor(
      async () => {
        const { entries } = (await admin<ListJson>(n2, `/_caje/list?filter=${encodeURIComponent('/t/page')}`)).json.manifest
        return entries.filter((e) => e.url === url && e.nodes.includes('node1')).length === CLIENTS.length
      },
      'the manifest to list every key of /t/page as held by node 1',
      10_000,
    )

    const originBefore = origin.count('/t/page')
    // The row's Populate button sends its key: here the one for tenant acme.
    const started = await admin<{ started: boolean }>(n2, '/_caje/populate', { key: keys[0] })
    expect(started).toMatchObject({ status: 202, json: { started: true } })
    let status: PopulateStatus | null = null
    await waitFor(
      async () => {
        status = (await admin<{ populate: PopulateStatus | null }>(n2, '/_caje/populate')).json.populate
        return status !== null && !status.running
      },
      'populate on node 2 to finish',
      15_000,
    )
    expect(status).toMatchObject({ key: keys[0], done: CLIENTS.length, fromPeers: CLIENTS.length, fromOrigin: 0, failed: 0 })
    expect(origin.count('/t/page')).toBe(originBefore)

    for (const [i, headers] of CLIENTS.entries()) {
      const served = await get(n2, '/t/page', headers)
      expect(served.cacheStatus).toMatch(/^caje; hit/)
      expect(keyOf(served.cacheStatus)).toBe(keys[i])
      expect(served.body).toBe(bodyFor(headers))
    }
    expect(origin.count('/t/page')).toBe(originBefore)
  })
})
