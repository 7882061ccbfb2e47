import { describe, expect, it } from 'vitest'
import { startNode, startOrigin } from '../test-support/servers.ts'
import { Coalescer, FillGate } from './coalesce.ts'

describe('Coalescer', () => {
  it('calls a waiter collapsed only while the leader still waits for the origin', async () => {
    const c = new Coalescer()
    const leader = c.join('k')
    if (leader.role !== 'leader') throw new Error('first caller leads')
    const early = c.join('k')
    expect(early).toMatchObject({ role: 'waiter', collapsed: true })
    expect(c.awaitingOrigin('k')).toBe(true)
    leader.received()
    // The origin's answer is complete; only the cache write is left.
    const late = c.join('k')
    expect(late).toMatchObject({ role: 'waiter', collapsed: false })
    expect(c.awaitingOrigin('k')).toBe(false)
    leader.settle('stored')
    expect(await (early as { outcome: Promise<string> }).outcome).toBe('stored')
    expect(c.join('k').role).toBe('leader')
  })

  it('counts the waiters of every key until their leader settles', async () => {
    const c = new Coalescer()
    const a = c.join('a')
    const b = c.join('b')
    if (a.role !== 'leader' || b.role !== 'leader') throw new Error('first callers lead')
    expect(c.waiters).toBe(0)
    c.join('a')
    c.join('a')
    c.join('b')
    expect({ size: c.size, waiters: c.waiters }).toEqual({ size: 2, waiters: 3 })
    a.settle('not-shared')
    expect({ size: c.size, waiters: c.waiters }).toEqual({ size: 1, waiters: 1 })
    a.settle('stored')
    expect(c.waiters).toBe(1)
    b.settle('stored')
    expect({ size: c.size, waiters: c.waiters }).toEqual({ size: 0, waiters: 0 })
  })
})

describe('FillGate', () => {
  it('lets a key whose last fill was not shareable be filled alone until one is stored or the mark expires', async () => {
    let clock = 0
    const gate = new FillGate(1000, 10, () => clock)
    const first = gate.join('k')
    if (first.role !== 'leader') throw new Error('first caller leads')
    const waiter = gate.join('k')
    first.settle(false)
    expect(waiter.role === 'waiter' && (await waiter.outcome)).toBe('not-shared')
    // Not shareable: each request now goes to the origin on its own, none waits.
    expect(gate.join('k').role).toBe('alone')
    expect(gate.join('k').role).toBe('alone')
    expect(gate.pending('k')).toBeUndefined()
    clock += 1001
    const again = gate.join('k')
    expect(again.role).toBe('leader')
    if (again.role === 'waiter') return
    again.settle(false)
    const alone = gate.join('k')
    expect(alone.role).toBe('alone')
    if (alone.role === 'waiter') return
    // A lone fill that was stored clears the mark: the next miss leads again.
    alone.settle(true)
    expect(gate.join('k').role).toBe('leader')
  })
})

describe('Cache-Status collapsed', () => {
  it('is not said of a request that arrives after the miss before it completed', async () => {
    const body = 'x'.repeat(4 * 1024 * 1024)
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600', 'content-length': String(body.length) })
      res.end(body)
    })
    const node = await startNode(origin.url, { CAJE_MAX_OBJECT_BYTES: String(16 * 1024 * 1024), CAJE_MEMORY_CACHE_BYTES: '0' })
    try {
      const statuses: string[] = []
      for (let i = 0; i < 10; i++) {
        const first = await node.get(`/big-${i}`)
        await first.arrayBuffer()
        // The miss is complete on the client's side; the node may still be writing it to disk.
        const next = await node.get(`/big-${i}`)
        await next.arrayBuffer()
        statuses.push(next.headers.get('cache-status') ?? '')
      }
      expect(statuses.filter((s) => s.includes('collapsed'))).toEqual([])
      expect(origin.count('/big-0')).toBe(1)
    } finally {
      await node.close()
      await origin.close()
    }
  })
})
