import { describe, expect, it } from 'vitest'
import { createLastStatus } from './last-status.ts'

describe('last status', () => {
  it('gives the status and time of the latest answer for a key', () => {
    let t = 1000
    const last = createLastStatus(10, () => t)
    last.record('a', 'caje; fwd=uri-miss; fwd-status=200; stored')
    t = 2000
    last.record('a', 'caje; hit; ttl=59')
    expect(last.get('a')).toEqual({ cacheStatus: 'caje; hit; ttl=59', at: 2000 })
    t = 3000
    last.record('a', 'caje; hit; ttl=59')
    expect(last.get('a')).toEqual({ cacheStatus: 'caje; hit; ttl=59', at: 3000 })
    expect(last.get('b')).toBeUndefined()
  })

  it('keeps at most its limit of keys, dropping the one recorded first', () => {
    const last = createLastStatus(2, () => 0)
    last.record('a', 'caje; hit; ttl=1')
    last.record('b', 'caje; hit; ttl=1')
    last.record('a', 'caje; hit; ttl=0')
    last.record('c', 'caje; hit; ttl=1')
    expect(last.get('a')).toBeUndefined()
    expect(last.get('b')?.cacheStatus).toBe('caje; hit; ttl=1')
    expect(last.get('c')?.cacheStatus).toBe('caje; hit; ttl=1')
  })
})
