// Every origin exchange is counted by the one origin sender, revalidations included.

import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, type TestNode } from '../test-support/servers.ts'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function metricLines(node: TestNode, name: string): Promise<string[]> {
  const text = await (await node.get('/_caje/metrics')).text()
  return text.split('\n').filter((l) => l.startsWith(name))
}

describe('origin sender', () => {
  it('counts a revalidation that cannot reach the origin as an origin error', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=0, must-revalidate', etag: '"v1"', 'content-length': '2' })
      res.end('ok')
    })
    let originOpen = true
    cleanups.push(async () => {
      if (originOpen) await origin.close()
    })
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    expect(await (await node.get('/r')).text()).toBe('ok')
    await node.stored('/r')
    expect((await metricLines(node, 'caje_origin_response_seconds_count')).join('\n')).toMatch(/status="200"\} 1/)

    await origin.close()
    originOpen = false
    const res = await node.get('/r')
    await res.arrayBuffer()
    expect(res.status).toBe(502)
    expect(await metricLines(node, 'caje_origin_errors_total{kind="connect"}')).toEqual(['caje_origin_errors_total{kind="connect"} 1'])
  })
})
