// The proxy reached through Hono's fallback route with a web Request (app.request()).

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
