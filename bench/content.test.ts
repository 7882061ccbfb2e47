import type { AddressInfo } from 'node:net'
import type http from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createBareServer } from './bare.ts'
import { FIXED_SIZES, contentFor, objectBody, objectIndex, sha256 } from './content.ts'
import { createOriginServer, NO_STORE_PREFIX, ORIGIN_STATS_PATH } from './origin.ts'

describe('content', () => {
  it('is deterministic and sized as named', () => {
    for (const [p, size] of Object.entries(FIXED_SIZES)) {
      const a = contentFor(p)!
      expect(a.body.length).toBe(size)
      expect(a.headers['content-length']).toBe(String(size))
    }
    expect(sha256(objectBody(7))).toBe(sha256(objectBody(7)))
    expect(sha256(objectBody(7))).not.toBe(sha256(objectBody(8)))
    expect(contentFor('/nocache-1k')!.headers['cache-control']).toBe('no-store')
    expect(contentFor('/1k')!.headers['cache-control']).toBe('public, max-age=3600')
  })

  it('knows the object paths, with or without a query', () => {
    expect(objectIndex('/obj/0')).toBe(0)
    expect(objectIndex('/obj/9999?r=1')).toBe(9999)
    expect(objectIndex('/obj/10000')).toBeUndefined()
    expect(objectIndex('/obj/x')).toBeUndefined()
    expect(contentFor('/nope')).toBeUndefined()
  })
})

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function close(server: http.Server): Promise<void> {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
}

describe('origin and bare servers', () => {
  let origin: http.Server
  let bare: http.Server
  let originUrl: string
  let bareUrl: string
  beforeAll(async () => {
    origin = createOriginServer()
    bare = createBareServer()
    originUrl = await listen(origin)
    bareUrl = await listen(bare)
  })
  afterAll(async () => {
    await close(origin)
    await close(bare)
  })

  it('serve the same bytes and headers', async () => {
    for (const p of ['/1k', '/64k', '/1m', '/nocache-1k', '/obj/0', '/obj/4321?r=2']) {
      const [a, b] = await Promise.all([fetch(originUrl + p), fetch(bareUrl + p)])
      expect(a.status).toBe(200)
      expect(b.status).toBe(200)
      const [ba, bb] = [Buffer.from(await a.arrayBuffer()), Buffer.from(await b.arrayBuffer())]
      expect(sha256(ba)).toBe(sha256(contentFor(p)!.body))
      expect(sha256(bb)).toBe(sha256(ba))
      expect(b.headers.get('etag')).toBe(a.headers.get('etag'))
      expect(b.headers.get('cache-control')).toBe(a.headers.get('cache-control'))
    }
    expect((await fetch(bareUrl + '/missing')).status).toBe(404)
    expect((await fetch(originUrl + '/missing')).status).toBe(404)
  })

  it('origin serves every content path under the no-store prefix with the same bytes, never cacheable', async () => {
    for (const p of ['/1k', '/obj/17?storm=3']) {
      const res = await fetch(originUrl + NO_STORE_PREFIX + p)
      expect(res.status).toBe(200)
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(contentFor(p)!.body))
    }
    // The shared content of a fixed path keeps its own headers.
    expect((await fetch(originUrl + '/1k')).headers.get('cache-control')).toBe('public, max-age=3600')
    expect((await fetch(originUrl + NO_STORE_PREFIX + '/missing')).status).toBe(404)
  })

  it('origin answers If-None-Match with 304 and counts requests', async () => {
    const before = (await (await fetch(originUrl + ORIGIN_STATS_PATH)).json()) as { requests: number; notModified: number }
    const etag = contentFor('/64k')!.etag
    const res = await fetch(originUrl + '/64k', { headers: { 'if-none-match': `W/${etag}, "other"` } })
    expect(res.status).toBe(304)
    expect(res.headers.get('etag')).toBe(etag)
    await fetch(originUrl + '/1k').then((r) => r.arrayBuffer())
    const after = (await (await fetch(originUrl + ORIGIN_STATS_PATH)).json()) as { requests: number; notModified: number }
    expect(after.requests - before.requests).toBe(2)
    expect(after.notModified - before.notModified).toBe(1)
  })
})
