import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin } from './test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

describe('caje routes', () => {
  it('answers /_caje/health without auth, never through the proxy', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('x')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_NODE_ID: 'node-a', CAJE_REGION: 'ams' })
    cleanups.push(() => node.close())
    await (await node.get('/one')).text()
    await node.stored('/one')
    const health = await node.get('/_caje/health')
    expect(health.status).toBe(200)
    expect(health.headers.get('cache-control')).toBe('no-store')
    const body = (await health.json()) as { status: string; node: string; region: string; cache: { entries: number; bytes: number } }
    expect(body).toMatchObject({ status: 'ok', node: 'node-a', region: 'ams', cache: { entries: 1, bytes: 1 } })
    // The memory tier's own memory: its slabs, and dropped ones not freed yet.
    expect(body.cache).toMatchObject({ memoryHeldBytes: expect.any(Number), memoryDroppedBytes: 0, memoryDroppedHeldBytes: 0, memorySlabsAllocatedBytes: expect.any(Number) })
    for (const root of ['/_caje', '/_caje/']) {
      const res = await node.get(root, { redirect: 'manual' })
      expect(res.status, root).toBe(303)
      expect(res.headers.get('location'), root).toBe('/_caje/list')
    }
    const unknown = await node.get('/_caje/nope')
    expect(unknown.status).toBe(404)
    expect(origin.count('/_caje/nope')).toBe(0)
  })

  it('serves Prometheus metrics, behind a token when one is configured', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('hello')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_METRICS_TOKEN: 'metrics-secret-123' })
    cleanups.push(() => node.close())
    await (await node.get('/m')).text()
    await node.stored('/m')
    await (await node.get('/m')).text()
    expect((await node.get('/_caje/metrics')).status).toBe(401)
    expect((await node.get('/_caje/metrics', { headers: { authorization: 'Bearer wrong' } })).status).toBe(401)
    const ok = await node.get('/_caje/metrics', { headers: { authorization: 'Bearer metrics-secret-123' } })
    expect(ok.status).toBe(200)
    const text = await ok.text()
    expect(text).toMatch(/caje_requests_total\{cache_status="hit"\} 1/)
    expect(text).toMatch(/caje_requests_total\{cache_status="miss"\} 1/)
    expect(text).toMatch(/caje_cache_entries 1/)
  })
})
