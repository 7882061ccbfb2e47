// Revalidation of one stored entry against a real origin and a real store
// (RFC 9111 §4.3): a matching 304 merges its fields and keeps the stored body,
// a 304 for another representation drops the entry, a 200 replaces it through
// a fill, a 5xx or a failed exchange is reported for stale-if-error, and a
// background refresh runs once per variant.

import fs from 'node:fs/promises'
import type http from 'node:http'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createCacheStore } from '../cache/tiered-store.ts'
import type { CacheStore, EntryMeta } from '../cache/types.ts'
import { bodyBytes, startOrigin, tempDir, type TestOrigin } from '../test-support/servers.ts'
import { startFill } from './fill.ts'
import { createOriginClient, type OriginClient } from './origin.ts'
import type { FreshnessPolicy } from './policy.ts'
import { BackgroundRevalidator, revalidate, type Revalidation, type RevalidateDeps } from './revalidate.ts'

const URL_A = 'http://site.test/a'
let dir: string
let origin: TestOrigin
let client: OriginClient
let store: CacheStore
let deps: RevalidateDeps
/** How the origin answers a conditional request; the first, unconditional one always gets v1. */
let answer: (req: http.IncomingMessage, res: http.ServerResponse) => void

beforeEach(async () => {
  dir = await tempDir()
  answer = (_req, res) => {
    res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=120', 'x-served-by': 'second' })
    res.end()
  }
  origin = await startOrigin((req, res) => {
    if (req.headers['if-none-match'] !== undefined) return answer(req, res)
    res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v1"', 'content-type': 'text/plain', 'x-served-by': 'first' })
    res.end('stored body')
  })
  client = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000 })
  store = await createCacheStore({ dir, maxBytes: 1e8, memoryBytes: 1 << 20, maxObjectBytes: 1e7 })
  deps = { store, origin: client, storeRules: { cacheSetCookie: false, heuristicFreshness: false }, maxObjectBytes: 1e7, log: () => {}, now: Date.now }
})

afterEach(async () => {
  await store.close()
  await client.close()
  await origin.close()
  await fs.rm(dir, { recursive: true, force: true })
})

/** Store what the origin answers for /a, the way a miss does. */
async function stored(): Promise<EntryMeta> {
  const res = await client.send({ origin: new URL(origin.url), method: 'GET', path: '/a', headers: { host: 'site.test' } })
  const fill = startFill(deps, { key: URL_A, url: URL_A, host: 'site.test', origin: new URL(origin.url) }, { method: 'GET', headers: { host: 'site.test' }, requestTime: Date.now() }, res)
  void bodyBytes(fill.body)
  const { meta } = await fill.outcome
  return meta!
}

function revalidation(meta: EntryMeta): Revalidation {
  return { meta, policy: meta.policy as FreshnessPolicy, originUrl: new URL(origin.url), clientHeaders: { host: 'site.test' }, forwardHeaders: { host: 'site.test', 'if-none-match': '"client-copy"' } }
}

async function bodyOf(meta: EntryMeta): Promise<string | undefined> {
  const body = await store.read(meta.key, meta.variant)
  return body?.kind === 'buffer' ? body.buffer.toString() : undefined
}

describe('revalidate', () => {
  it("merges a matching 304's fields into the entry and keeps the stored body", async () => {
    const meta = await stored()
    const outcome = await revalidate(deps, revalidation(meta))
    expect(outcome.kind).toBe('refreshed')
    if (outcome.kind !== 'refreshed') return
    expect(outcome.meta.headers).toMatchObject({ 'cache-control': 'max-age=120', 'x-served-by': 'second', 'content-type': 'text/plain' })
    expect(store.variant(URL_A, meta.variant)?.headers['x-served-by']).toBe('second')
    expect(await bodyOf(outcome.meta)).toBe('stored body')
    // The stored validator replaces the client's own conditional (RFC 9111 §4.3.1).
    expect(origin.requests.at(-1)!.headers['if-none-match']).toBe('"v1"')
  })

  it('drops the entry when the 304 selects another representation (RFC 9111 §4.3.4)', async () => {
    answer = (_req, res) => {
      res.writeHead(304, { etag: '"v2"' })
      res.end()
    }
    const meta = await stored()
    expect(await revalidate(deps, revalidation(meta))).toEqual({ kind: 'failed', status: 304 })
    expect(store.variant(URL_A, meta.variant)).toBeUndefined()
  })

  it('replaces the entry with a full response through a fill', async () => {
    answer = (_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', etag: '"v2"', 'content-length': '8' })
      res.end('new body')
    }
    const meta = await stored()
    const outcome = await revalidate(deps, revalidation(meta))
    expect(outcome.kind).toBe('replaced')
    if (outcome.kind !== 'replaced') return
    void bodyBytes(outcome.fill.body)
    const { meta: replaced } = await outcome.fill.outcome
    expect(replaced?.headers.etag).toBe('"v2"')
    expect(await bodyOf(replaced!)).toBe('new body')
  })

  it('reports a 5xx with its unread response, and a failed exchange with its error, leaving the entry alone', async () => {
    answer = (_req, res) => {
      res.writeHead(503, { 'content-length': '4' })
      res.end('down')
    }
    const meta = await stored()
    const outcome = await revalidate(deps, revalidation(meta))
    expect(outcome).toMatchObject({ kind: 'failed', status: 503 })
    if (outcome.kind === 'failed') outcome.response?.body.resume()

    answer = (req) => req.socket.destroy()
    const failed = await revalidate(deps, revalidation(meta))
    expect(failed.kind).toBe('failed')
    expect(failed.kind === 'failed' && failed.error).toBeInstanceOf(Error)
    expect(await bodyOf(store.variant(URL_A, meta.variant)!)).toBe('stored body')
  })
})

describe('BackgroundRevalidator', () => {
  it('refreshes a variant once however often it is asked while a refresh runs, and reports when all are done', async () => {
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    answer = (_req, res) => {
      void held.then(() => {
        res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=300' })
        res.end()
      })
    }
    const meta = await stored()
    const background = new BackgroundRevalidator(deps)
    background.start(revalidation(meta))
    background.start(revalidation(meta))
    const idle = background.idle()
    release()
    await idle
    expect(origin.count('/a')).toBe(2) // the fill, then one revalidation
    expect(store.variant(URL_A, meta.variant)?.headers['cache-control']).toBe('max-age=300')
  })
})
