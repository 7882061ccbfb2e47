import { describe, expect, it } from 'vitest'
import { formatCacheStatus, statusLabel } from './cache-status.ts'

describe('Cache-Status (RFC 9211)', () => {
  it('a hit: ttl in whole seconds, the deciding rule as a detail token', () => {
    expect(formatCacheStatus({ hit: true, ttl: 59.9 })).toBe('caje; hit; ttl=59')
    expect(formatCacheStatus({ hit: true, ttl: 59.9, rule: 'static-assets' })).toBe('caje; hit; ttl=59; detail=rule:static-assets')
    // Asked again (the per-name text is kept): the same answer.
    expect(formatCacheStatus({ hit: true, ttl: 3, rule: 'static-assets' })).toBe('caje; hit; ttl=3; detail=rule:static-assets')
    expect(formatCacheStatus({ hit: true, collapsed: true, ttl: 3, rule: 'a.b_c-d' })).toBe('caje; hit; collapsed; ttl=3; detail=rule:a.b_c-d')
  })

  it('a hit with more to say takes every parameter in order', () => {
    expect(formatCacheStatus({ hit: true, ttl: -2, detail: 'stale-while-revalidate', rule: 'r' })).toBe('caje; hit; ttl=-2; detail="rule:r stale-while-revalidate"')
    expect(formatCacheStatus({ hit: true, ttl: 10, rule: 'r', key: 'https://a.test/p#h:x-tenant=acme' })).toBe('caje; hit; ttl=10; detail=rule:r; key="https://a.test/p#h:x-tenant=acme"')
    expect(formatCacheStatus({ fwd: 'stale', fwdStatus: 304, hit: true, ttl: 60 })).toBe('caje; hit; fwd=stale; fwd-status=304; ttl=60')
  })

  it('a forwarded answer: reason, origin status, stored, detail as a token or else a string', () => {
    expect(formatCacheStatus({ fwd: 'uri-miss', fwdStatus: 200, stored: true, ttl: 600, rule: 'forced' })).toBe('caje; fwd=uri-miss; fwd-status=200; stored; ttl=600; detail=rule:forced')
    expect(formatCacheStatus({ fwd: 'bypass', detail: 'unknown-host' })).toBe('caje; fwd=bypass; detail=unknown-host')
    expect(formatCacheStatus({ fwd: 'miss', detail: 'only-if-cached' })).toBe('caje; fwd=miss; detail=only-if-cached')
    expect(formatCacheStatus({ fwd: 'miss', detail: '1 2' })).toBe('caje; fwd=miss; detail="1 2"')
  })

  it('labels for logs and metrics', () => {
    expect(statusLabel({ hit: true, ttl: 5, rule: 'r' })).toBe('hit')
    expect(statusLabel({ hit: true, ttl: -1 })).toBe('stale')
    expect(statusLabel({ fwd: 'bypass', fwdStatus: 200 })).toBe('bypass')
    expect(statusLabel({ fwd: 'uri-miss', fwdStatus: 200, stored: true })).toBe('miss')
    expect(statusLabel({ fwd: 'uri-miss' })).toBe('error')
  })
})

describe('Cache-Status texts handed out again', () => {
  it('a status without ttl or key gets its own text, however many were formatted before it', () => {
    const statuses = [
      { fwd: 'uri-miss', fwdStatus: 200, stored: true },
      { fwd: 'uri-miss', fwdStatus: 404, stored: true },
      { fwd: 'uri-miss', fwdStatus: 200 },
      { fwd: 'vary-miss', fwdStatus: 200, stored: true },
      { fwd: 'uri-miss', fwdStatus: 200, stored: true, collapsed: true },
      { fwd: 'uri-miss', fwdStatus: 200, stored: true, detail: 'memory-only' },
      { fwd: 'uri-miss', fwdStatus: 200, stored: true, rule: 'memory-only' },
      { fwd: 'uri-miss', fwdStatus: 200, stored: true, rule: 'r', detail: 'memory-only' },
      { hit: true, fwd: 'stale', fwdStatus: 200 },
    ] as const
    const expected = [
      'caje; fwd=uri-miss; fwd-status=200; stored',
      'caje; fwd=uri-miss; fwd-status=404; stored',
      'caje; fwd=uri-miss; fwd-status=200',
      'caje; fwd=vary-miss; fwd-status=200; stored',
      'caje; fwd=uri-miss; fwd-status=200; stored; collapsed',
      'caje; fwd=uri-miss; fwd-status=200; stored; detail=memory-only',
      'caje; fwd=uri-miss; fwd-status=200; stored; detail=rule:memory-only',
      'caje; fwd=uri-miss; fwd-status=200; stored; detail="rule:r memory-only"',
      'caje; hit; fwd=stale; fwd-status=200',
    ]
    for (let round = 0; round < 2; round++) expect(statuses.map((s) => formatCacheStatus(s))).toEqual(expected)
  })
})
