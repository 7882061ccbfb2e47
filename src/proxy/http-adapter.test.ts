// The proxy reached through Hono's fallback route with a web Request (app.request()).

import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { createApp } from '../app.ts'
import { silentLogger } from '../log.ts'
import { startNode, startOrigin } from '../test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

describe('proxy behind app.request()', () => {
  it('never takes a client X-Real-IP for the client address', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': '2' })
      res.end('ok')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const app = createApp({ config: node.config, store: node.store, proxy: node.proxy, log: silentLogger })
    const res = await app.request('/ip', { headers: { host: 'site.test', 'x-real-ip': '6.6.6.6' } })
    expect(await res.text()).toBe('ok')
    const seen = origin.requests.find((r) => r.url === '/ip')!
    expect(String(seen.headers['x-forwarded-for'] ?? '')).not.toContain('6.6.6.6')
    expect(seen.headers['x-real-ip']).toBeUndefined()
  })
})

describe('a client that leaves before its answer', () => {
  it('ends the origin request at once, for a cache miss and for a pass-through', async () => {
    // The origin never answers: only the client's leaving can end its requests (the timeouts are far away).
    const arrived = new Map<string, () => void>()
    const closed = new Map<string, Promise<void>>()
    const origin = await startOrigin((req, res) => {
      // The response is never ended, so it closes only when caje drops the connection.
      closed.set(req.url!, new Promise((resolve) => res.once('close', () => resolve())))
      arrived.get(req.url!)?.()
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_ORIGIN_TIMEOUT_MS: '600000', CAJE_ORIGIN_BODY_TIMEOUT_MS: '600000' })
    cleanups.push(() => node.close())
    for (const path of ['/miss', '/pass']) {
      const atOrigin = new Promise<void>((resolve) => arrived.set(path, resolve))
      const client = http.request({ host: '127.0.0.1', port: node.port, path, method: path === '/pass' ? 'POST' : 'GET', headers: { host: 'site.test' } })
      client.on('error', () => {})
      client.end()
      await atOrigin
      client.destroy()
      await closed.get(path)
    }
    expect(origin.requests.map((r) => r.url)).toEqual(['/miss', '/pass'])
  })
})
