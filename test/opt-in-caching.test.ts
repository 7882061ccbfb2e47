// Opt-in caching, seen from outside: caje as its own process in front of an
// origin that, like many frameworks by default, sends an ETag on every page
// and no Cache-Control, per-user pages included. caje must not share those.

import { createHash } from 'node:crypto'
import http from 'node:http'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { killCajeProcesses, startCajeProcess } from '../src/test-support/caje-process.ts'
import { startNode, startOrigin, tempDir, waitFor, whenReached, type TestOrigin } from '../src/test-support/servers.ts'

const origins: TestOrigin[] = []
afterEach(async () => {
  killCajeProcesses()
  for (const o of origins.splice(0)) await o.close()
})

/** caje as its own process (`node --import tsx src/main.ts`), like production. */
async function spawnCaje(origin: string, env: Record<string, string> = {}): Promise<string> {
  const dir = await tempDir('caje-opt-in-')
  const caje = await startCajeProcess({
    CAJE_ORIGIN: origin,
    CAJE_CACHE_DIR: path.join(dir, 'cache'),
    CAJE_DATABASE_PATH: path.join(dir, 'manifest.db'),
    CAJE_NODE_ID: 'opt-in',
    CAJE_ADMIN_PASSWORD: 'opt-in-caching-password',
    ...env,
  })
  return caje.url
}

const cacheEntries = async (caje: string): Promise<number> => ((await (await fetch(`${caje}/_caje/health`)).json()) as { cache: { entries: number } }).cache.entries

/**
 * Express-like defaults: a strong ETag of the body, a Last-Modified a few seconds old (so a
 * heuristic lifetime rounds to zero and the copy is stale at once), no Cache-Control. The page
 * depends on the session cookie.
 */
async function accountOrigin(): Promise<TestOrigin> {
  const origin = await startOrigin((req, res) => {
    const user = /(?:^|;\s*)sid=(\w+)/.exec(req.headers.cookie ?? '')?.[1]
    const body = user ? `account page of ${user}: card ending 4242` : 'please sign in'
    const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 16)}"`
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag })
      res.end()
      return
    }
    const type = req.url?.endsWith('.css') ? 'text/css' : 'text/html'
    res.writeHead(200, { 'content-type': type, 'content-length': String(Buffer.byteLength(body)), etag, 'last-modified': new Date(Date.now() - 5000).toUTCString() })
    res.end(body)
  })
  origins.push(origin)
  return origin
}

describe('opt-in caching through a caje process', () => {
  it.each(['/account', '/account/x.css'])("%s: a page with only an ETag is not stored, so max-stale never returns alice's page to someone else", async (page) => {
    const origin = await accountOrigin()
    const caje = await spawnCaje(origin.url)

    const alice = await fetch(caje + page, { headers: { cookie: 'sid=alice' } })
    expect(await alice.text()).toBe('account page of alice: card ending 4242')
    const anyone = await fetch(caje + page, { headers: { 'cache-control': 'max-stale' } })
    expect(await anyone.text()).toBe('please sign in')

    expect(alice.headers.get('cache-status')).toBe('caje; fwd=uri-miss; fwd-status=200; detail=no-explicit-freshness')
    expect(anyone.headers.get('cache-status')).toBe('caje; fwd=uri-miss; fwd-status=200; detail=no-explicit-freshness')
    // Both went to the origin, the second without alice's cookie and without her validator.
    expect(origin.requests.map((r) => [r.url, r.headers.cookie, r.headers['if-none-match']])).toEqual([
      [page, 'sid=alice', undefined],
      [page, undefined, undefined],
    ])
  })

  it('with CAJE_HEURISTIC_FRESHNESS=true: no guessed freshness for a request with Cookie, and a guessed entry is never served stale', async () => {
    const origin = await accountOrigin()
    const caje = await spawnCaje(origin.url, { CAJE_HEURISTIC_FRESHNESS: 'true' })

    // A request with a cookie: its answer is not stored at all.
    const alice = await fetch(caje + '/account', { headers: { cookie: 'sid=alice' } })
    expect(await alice.text()).toBe('account page of alice: card ending 4242')
    expect(alice.headers.get('cache-status')).toContain('detail=no-explicit-freshness')
    const anyone = await fetch(caje + '/account', { headers: { 'cache-control': 'max-stale' } })
    expect(await anyone.text()).toBe('please sign in')

    // The cookieless page was stored on a heuristic (stale at once: Last-Modified is seconds
    // old), so even max-stale makes caje revalidate it with the origin first.
    expect(anyone.headers.get('cache-status')).toContain('stored')
    await waitFor(async () => (await cacheEntries(caje)) === 1, 'the cookieless page to be stored')
    const again = await fetch(caje + '/account', { headers: { 'cache-control': 'max-stale' } })
    expect(await again.text()).toBe('please sign in')
    expect(again.headers.get('cache-status')).toMatch(/^caje; fwd=stale; fwd-status=304/)
    expect(origin.requests.length).toBe(3)
    expect(origin.requests[2]!.headers['if-none-match']).toBeDefined()
  })
})

describe('entries stored on a guessed lifetime', () => {
  it('are not served once heuristic freshness is off (a configuration change, or an upgrade from a caje that guessed)', async () => {
    const origin = await startOrigin((_req, res) => {
      // Last-Modified a year ago: a guessed lifetime of a day.
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '4', 'last-modified': new Date(Date.now() - 365 * 24 * 3600 * 1000).toUTCString() })
      res.end('page')
    })
    origins.push(origin)
    const dir = await tempDir('caje-opt-in-')
    // One site name across both runs (the port changes, and the cache key holds the host).
    const get = (node: { port: number }) =>
      new Promise<{ cacheStatus: string; body: string }>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: node.port, path: '/old', headers: { host: 'site.test' }, agent: false }, (res) => {
            let body = ''
            res.setEncoding('utf8')
            res.on('data', (c: string) => (body += c))
            res.on('end', () => resolve({ cacheStatus: String(res.headers['cache-status']), body }))
          })
          .on('error', reject)
      })
    const guessing = await startNode(origin.url, { CAJE_HEURISTIC_FRESHNESS: 'true' }, { dir })
    try {
      expect((await get(guessing)).cacheStatus).toContain('stored')
      await whenReached(guessing.store, async () => (await guessing.store.variants('http://site.test/old')).length === 1)
      expect((await get(guessing)).cacheStatus).toMatch(/^caje; hit/)
    } finally {
      await guessing.close()
    }
    const optIn = await startNode(origin.url, {}, { dir })
    try {
      expect(await optIn.store.variants('http://site.test/old')).toHaveLength(1)
      const r = await get(optIn)
      expect(r.body).toBe('page')
      expect(r.cacheStatus).toBe('caje; fwd=vary-miss; fwd-status=200; detail=no-explicit-freshness')
      expect(origin.count('/old')).toBe(2)
    } finally {
      await optIn.close()
    }
  })
})
