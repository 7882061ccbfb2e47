import { describe, expect, it } from 'vitest'
import { createMetrics, renderMetrics } from './metrics.ts'
import type { ServedRequest } from './proxy/http-adapter.ts'
import type { ProxyResult } from './proxy/proxy.ts'
import type { RuleMatch } from './rules/match.ts'
import { accountServed } from './served.ts'
import { createTrafficRecorder } from './traffic.ts'

const answer = (result: Pick<ProxyResult, 'cacheStatus' | 'tier'> & Partial<ProxyResult>): ProxyResult => ({ status: 200, headers: {}, body: null, ...result })
const rules = (key: string) => ({ key }) as RuleMatch

describe('served-request accounting', () => {
  it('notes what each answer leaves behind: its Cache-Status for its key, its traffic and hot-set count, its bytes per tier', async () => {
    const traffic = createTrafficRecorder()
    const metrics = createMetrics({ processMetrics: false })
    const onServed = accountServed({ traffic, metrics })
    const page: ServedRequest = { method: 'GET', scheme: 'http', host: 'h', path: '/page?utm=1', rules: rules('http://h/page') }

    onServed(answer({ cacheStatus: { fwd: 'uri-miss', fwdStatus: 200, stored: true }, tier: 'origin', headers: { 'cache-status': 'caje; fwd=uri-miss; fwd-status=200; stored' } }), 100, page)
    onServed(answer({ cacheStatus: { hit: true, ttl: 60 }, cacheStatusText: 'caje; hit; ttl=60', tier: 'memory', headers: { 'cache-status': 'stale text' } }), 100, page)
    onServed(answer({ cacheStatus: { hit: true, ttl: 59 }, tier: 'disk' }), 7, { ...page, rules: undefined })
    // Refused before the proxy: counted as a request, nothing else.
    onServed(answer({ cacheStatus: { fwd: 'request' }, tier: 'none', headers: { 'cache-status': 'caje; fwd=request' } }), 11, { method: 'GET', host: '', path: '/x' })

    // The text sent, preferred over the header object; a request without a rules match notes none.
    expect(traffic.lastStatus('http://h/page')).toMatchObject({ cacheStatus: 'caje; hit; ttl=60' })
    expect(traffic.lastStatus('http://h/page?utm=1')).toBeUndefined()
    expect(traffic.pending()[0]).toMatchObject({ requests: 4, hits: 2, misses: 1, bytesCache: 107, bytesOrigin: 100 })
    // The key the rules made, else the URL's.
    expect(traffic.takeHits()).toEqual([
      { key: 'http://h/page', hits: 2 },
      { key: 'http://h/page?utm=1', hits: 1 },
    ])
    const { body } = await renderMetrics(metrics)
    expect(body).toContain('caje_served_bytes_total{tier="memory"} 100')
    expect(body).toContain('caje_served_bytes_total{tier="disk"} 7')
    expect(body).toContain('caje_served_bytes_total{tier="origin"} 100')
  })

  it('counts an answer in the minute it was sent, read once by the writer for its Cache-Status and its traffic', () => {
    const traffic = createTrafficRecorder()
    const onServed = accountServed({ traffic, metrics: createMetrics({ processMetrics: false }) })
    const at = 7 * 60_000 + 5
    onServed(answer({ cacheStatus: { hit: true, ttl: 60 }, cacheStatusText: 'caje; hit; ttl=60', tier: 'memory' }), 3, { method: 'GET', scheme: 'http', host: 'h', path: '/p', rules: rules('http://h/p') }, at)
    expect(traffic.lastStatus('http://h/p')).toEqual({ cacheStatus: 'caje; hit; ttl=60', at })
    expect(traffic.pending().map((m) => [m.minute, m.requests])).toEqual([[7 * 60_000, 1]])
  })
})
