import { afterEach, describe, expect, it } from 'vitest'
import { normaliseFieldValue } from './proxy/cache-key.ts'
import { purgeInKeyForm, variantLabel } from './node-actions.ts'
import { parseRulesText } from './rules/load.ts'
import { compileRules } from './rules/match.ts'
import { startNode, startOrigin, waitFor, type TestNode } from './test-support/servers.ts'

describe('variantLabel', () => {
  it('names a variant by its Vary values, sorted, without revealing secrets', () => {
    expect(variantLabel({})).toBe('')
    expect(variantLabel({ 'accept-language': 'fr', 'accept-encoding': 'br,gzip' })).toBe('accept-encoding=br,gzip accept-language=fr')
    expect(variantLabel({ 'accept-encoding': '' })).toBe('accept-encoding=(absent)')
    expect(variantLabel({ 'accept-encoding': normaliseFieldValue('accept-encoding', '') })).toBe('accept-encoding=(empty)')
    const cookie = normaliseFieldValue('cookie', 'session=very-secret')
    const label = variantLabel({ cookie })
    expect(label).toMatch(/^cookie=sha256:.{8}…$/)
    expect(label).not.toContain('very-secret')
  })
})

describe('purgeInKeyForm', () => {
  // The rules drop tracking parameters from the key: a stored /p?id=1 was requested as /p?utm_source=x&id=1 too.
  const rules = compileRules(parseRulesText('t.yml', 'rules:\n  - { name: keys, cache_key: { drop_query: ["utm_*"] } }\n'))
  const inKeyForm = (request: Parameters<typeof purgeInKeyForm>[0]) => purgeInKeyForm(request, (url) => rules.purgeUrl(url))

  it('maps a purge by URL to the URL the rules key on, and keeps soft', () => {
    expect(inKeyForm({ kind: 'url', value: 'https://site.test/p?utm_source=x&id=1' })).toEqual({ kind: 'url', value: 'https://site.test/p?id=1' })
    expect(inKeyForm({ kind: 'url', value: 'https://site.test/p?utm_source=x', soft: true })).toEqual({ kind: 'url', value: 'https://site.test/p', soft: true })
  })

  it('leaves prefixes, tags and everything as they are', () => {
    for (const request of [{ kind: 'prefix', value: 'https://site.test/p?utm_source=x' }, { kind: 'tag', value: 'utm_source' }, { kind: 'all' }] as const) expect(inKeyForm(request)).toBe(request)
  })
})

const TOKEN = 'node-actions-test-token-0123456789abcdef'
const api = (node: TestNode, p: string, body?: unknown) =>
  node.get(p, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json', 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
type ListJson = {
  manifest: { total: number; entries: Array<{ url: string; nodes: string[] }> }
  disk: { total: number }
  nodes: Array<{ id: string; online: boolean; self: boolean; holds: number; lastSeenAt: number }>
}

describe('admin actions on a real node', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })


  async function nodeWithPages(pages: string[]): Promise<TestNode> {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600', 'content-type': 'text/plain' })
      res.end('body')
    })
    cleanups.push(() => origin.close())
    // The writer gathers ops for 50 ms before a batch: an answer that did not wait for it comes first.
    const node = await startNode(origin.url, { CAJE_API_TOKEN: TOKEN })
    cleanups.push(() => node.close())
    for (const p of pages) {
      await (await node.get(p)).text()
      await node.stored(p)
    }
    await node.manifest.writer.flush()
    return node
  }

  it('answers a purge once the manifest no longer lists what it removed', async () => {
    const node = await nodeWithPages(['/a', '/b'])
    const url = `${node.url}/a`
    const before = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(before.manifest.entries.map((e) => e.url).sort()).toEqual([`${node.url}/a`, `${node.url}/b`])
    const res = await api(node, '/_caje/purge', { url })
    expect(res.status).toBe(200)
    const after = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(after.manifest.entries.map((e) => e.url)).toEqual([`${node.url}/b`])
  })

  it('answers a purge of what only a peer holds once the manifest no longer lists it', async () => {
    const node = await nodeWithPages(['/a'])
    // A second node on the same manifest file holds /c; this node never saw it, so removing it here costs nothing.
    const peer = await startNode(node.config.origin!.href, { CAJE_NODE_ID: 'peer-node', CAJE_DATABASE_PATH: node.config.databasePath })
    cleanups.push(() => peer.close())
    const url = `${peer.url}/c`
    await (await peer.get('/c')).text()
    await peer.stored('/c')
    await peer.manifest.writer.flush()
    const res = await api(node, '/_caje/purge', { url })
    expect(res.status).toBe(200)
    const after = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(after.manifest.entries.map((e) => e.url)).toEqual([`${node.url}/a`])
  })

  it('previews what a purge covers, and its history says which nodes applied it', async () => {
    const node = await nodeWithPages(['/a/1', '/a/2', '/b'])
    const prefix = `${node.url}/a/`
    const preview = await api(node, `/_caje/purge/preview?kind=prefix&value=${encodeURIComponent(prefix)}`)
    expect(await preview.json()).toEqual({ ok: true, purge: { kind: 'prefix', value: prefix }, entries: 2, bytes: 8, nodes: ['test-node'] })
    const all = (await (await api(node, '/_caje/purge/preview?kind=all')).json()) as { entries: number }
    expect(all.entries).toBe(3)
    expect((await api(node, '/_caje/purge', { prefix })).status).toBe(200)
    type History = { purges: Array<{ request: { kind: string; value: string }; createdBy: string; appliedOn: string[]; pendingOn: string[] }> }
    const first = (await (await api(node, '/_caje/purges')).json()) as History
    expect(first.purges).toHaveLength(1)
    expect(first.purges[0]).toMatchObject({ request: { kind: 'prefix', value: prefix }, createdBy: 'token:CAJE_API_TOKEN' })
    // The node records how far it got in the purge log; then the history says so.
    await waitFor(async () => {
      const h = (await (await api(node, '/_caje/purges')).json()) as History
      return h.purges[0]!.appliedOn.join() === 'test-node' && h.purges[0]!.pendingOn.length === 0
    }, 'the purge to show as applied on this node')
  })

  it('reports the hit ratio of cacheable answers since start: a miss and a hit make one half', async () => {
    const node = await nodeWithPages(['/a'])
    type Status = { status: { hitRatio: number | null } }
    await (await node.get('/a')).text()
    const status = (await (await api(node, '/_caje/status')).json()) as Status
    expect(status.status.hitRatio).toBe(0.5)
  })

  it('answers Clear FS once the manifest no longer lists this node as a holder', async () => {
    const node = await nodeWithPages(['/a'])
    const res = await api(node, '/_caje/clear_fs', {})
    expect(res.status).toBe(200)
    const after = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(after.disk.total).toBe(0)
    expect(after.manifest.entries.flatMap((e) => e.nodes)).toEqual([])
  })
})

describe('nodes on a real node', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('lists nodes with their last heartbeat, marks a silent one offline, and forgets it with its holdings', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end('x')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_NODE_ID: 'alive', CAJE_API_TOKEN: TOKEN })
    cleanups.push(() => node.close())
    await (await node.get('/a')).text()
    await node.stored('/a')
    // An old node that stopped two minutes ago and held /a too.
    const entry = (await node.store.variants(`${new URL(node.url).origin}/a`))[0]!
    const gone = Date.now() - 120_000
    node.manifest.writer.submit({ type: 'node-heartbeat', node: { id: 'old-node', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: gone - 1000 }, at: gone })
    node.manifest.writer.submit({ type: 'stored', nodeId: 'old-node', entry: { ...entry, tags: entry.tags } })
    // And a peer that is still alive.
    node.manifest.writer.submit({ type: 'node-heartbeat', node: { id: 'peer', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: Date.now() }, at: Date.now() })
    await node.manifest.writer.flush()

    const before = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(before.nodes.map((n) => [n.id, n.online, n.self, n.holds])).toEqual([
      ['alive', true, true, 1],
      ['old-node', false, false, 1],
      ['peer', true, false, 0],
    ])
    expect(before.nodes[1]!.lastSeenAt).toBe(gone)
    expect(before.manifest.entries.map((e) => e.nodes)).toEqual([['alive', 'old-node']])
    const self = await api(node, '/_caje/nodes/alive/forget', {})
    expect([self.status, ((await self.json()) as { code: string }).code]).toEqual([409, 'node_self'])
    const online = await api(node, '/_caje/nodes/peer/forget', {})
    expect([online.status, ((await online.json()) as { code: string }).code]).toEqual([409, 'node_online'])
    const unknown = await api(node, '/_caje/nodes/nobody/forget', {})
    expect([unknown.status, ((await unknown.json()) as { code: string }).code]).toEqual([404, 'node_unknown'])
    const forgot = await api(node, '/_caje/nodes/old-node/forget', {})
    expect(await forgot.json()).toEqual({ ok: true, node: 'old-node', dropped: 1 })
    // Answered once written: the manifest no longer knows it, nor lists it as a holder.
    const after = (await (await api(node, '/_caje/list')).json()) as ListJson
    expect(after.nodes.map((n) => n.id)).toEqual(['alive', 'peer'])
    expect(after.manifest.entries.map((e) => e.nodes)).toEqual([['alive']])
  })
})

describe('traffic on a real node', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it('shows this node’s current minute at once, and every node’s minutes once recorded in the manifest', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600' })
      res.end('0123456789')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_NODE_ID: 'me', CAJE_API_TOKEN: TOKEN })
    cleanups.push(() => node.close())
    await (await node.get('/t')).text()
    await node.stored('/t')
    await (await node.get('/t')).text()
    type Traffic = { minutes: Array<{ nodeId: string; minute: number; requests: number; hits: number; misses: number; bytesCache: number; bytesOrigin: number }> }
    const read = async () => ((await (await api(node, '/_caje/traffic')).json()) as Traffic).minutes
    // The access log and the counters run when the response has been sent: wait for both requests.
    await waitFor(async () => (await read()).reduce((n, m) => n + m.requests, 0) === 2, 'both requests to be counted')
    const mine = (await read()).filter((m) => m.nodeId === 'me')
    expect(mine.reduce((a, m) => ({ hits: a.hits + m.hits, misses: a.misses + m.misses, c: a.c + m.bytesCache, o: a.o + m.bytesOrigin }), { hits: 0, misses: 0, c: 0, o: 0 })).toEqual({ hits: 1, misses: 1, c: 10, o: 10 })

    // Another node's finished minutes arrive through the manifest (a redelivered batch counts once).
    const minute = Math.floor(Date.now() / 60_000) * 60_000 - 120_000
    const batch = { type: 'minutes' as const, nodeId: 'peer', minutes: [{ minute, requests: 40, hits: 30, misses: 10, bytesCache: 3000, bytesOrigin: 1000 }] }
    node.manifest.writer.submit(batch)
    node.manifest.writer.submit(batch)
    await node.manifest.writer.flush()
    expect((await read()).filter((m) => m.nodeId === 'peer')).toEqual([{ nodeId: 'peer', ...batch.minutes[0]! }])
  })
})
