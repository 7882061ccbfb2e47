import { describe, expect, it } from 'vitest'
import { decideStore } from '../proxy/policy.ts'
import { packMeta, unpackMeta, unpackPurgeFields } from './packed-meta.ts'
import type { EntryMeta } from './types.ts'

const NOW = Date.UTC(2026, 11, 1, 10, 0, 0, 123)

function filled(overrides: Partial<EntryMeta> = {}): EntryMeta {
  const headers = {
    date: new Date(NOW - 123).toUTCString(),
    'content-type': 'text/html; charset=utf-8',
    'content-length': '1024',
    'cache-control': 'public, max-age=60, stale-while-revalidate=30, stale-if-error=600',
    etag: 'W/"abc-123"',
    'last-modified': 'Tue, 15 Nov 1994 12:45:26 GMT',
    expires: 'Thu, 01 Dec 1994 16:00:00 GMT',
    vary: 'Accept-Encoding, Accept-Language',
    'x-odd': 'not a date but 29 chars  GMT',
    'x-number-like': '007',
    'x-unicode': 'café ☕',
  }
  const decision = decideStore(
    { method: 'GET', url: 'https://example.com/', headers: {}, requestTime: NOW - 7 },
    { status: 200, headers: { ...headers, age: '3' }, hasSetCookie: false, responseTime: NOW },
    { cacheSetCookie: false, heuristicFreshness: false },
  )
  if (!decision.store) throw new Error('not storable')
  return {
    key: 'https://example.com/a/b?c=1',
    variant: 'dGhlIHZhcmlhbnQgaWQ',
    url: 'https://example.com/a/b?c=1',
    host: 'example.com',
    status: 200,
    headers,
    varyHeaders: { 'accept-encoding': 'br, gzip', 'accept-language': 'fr' },
    policy: decision.policy,
    storedAt: NOW,
    staleAt: decision.staleAt,
    deleteAt: decision.deleteAt,
    tags: ['post-1', 'section/news', ''],
    contentType: 'text/html; charset=utf-8',
    origin: 'https://origin.example/',
    via: 'peer:node-2',
    size: 1024,
    integrity: 'sha512-abc',
    ...overrides,
  }
}

function roundTrip(meta: EntryMeta): EntryMeta {
  return unpackMeta(packMeta(meta), meta.size, meta.integrity)
}

describe('packed metadata', () => {
  it('round-trips every field the hit path reads, exactly, in a compact one-byte string', () => {
    const meta = filled()
    const packed = packMeta(meta)
    expect(packed.startsWith(`${meta.key}\u0000${meta.variant}\u0000A`)).toBe(true)
    const back = unpackMeta(packed, meta.size, meta.integrity)
    expect(back).toStrictEqual(meta)
    expect(Object.keys(back)).toEqual(Object.keys(meta))
    expect(Object.keys(back.headers)).toEqual(Object.keys(meta.headers))
    // The policy's fractional initial age and the negative request offset survive as numbers.
    expect((back.policy as { initialAge: number }).initialAge).toBe((meta.policy as { initialAge: number }).initialAge)
    // Far smaller than the JSON the disk index keeps.
    expect(packed.length).toBeLessThan(JSON.stringify(meta).length / 2)
  })

  it('keeps a url that differs from the key, a missing policy and absent optional fields', () => {
    const { origin: _o, via: _v, ...rest } = filled({ url: 'https://Example.com/a/b?c=1&utm=x', policy: undefined })
    expect(roundTrip(rest as EntryMeta)).toStrictEqual(rest)
    const withUndefined = { ...rest, origin: undefined, via: undefined } as EntryMeta
    expect(roundTrip(withUndefined)).toStrictEqual(withUndefined)
  })

  it('keeps non-integer and unusual times exactly', () => {
    const meta = filled({ storedAt: NOW + 0.5, staleAt: NOW - 10, deleteAt: Number.POSITIVE_INFINITY })
    expect(roundTrip(meta)).toStrictEqual(meta)
  })

  it('falls back to JSON for metadata the compact form does not know, losing nothing', () => {
    const extra = { ...filled(), future: { x: [1, 2] } } as unknown as EntryMeta
    const packed = packMeta(extra)
    expect(packed[packed.indexOf('\u0000', packed.indexOf('\u0000') + 1) + 1]).toBe('J')
    expect(unpackMeta(packed, extra.size, extra.integrity)).toEqual(extra)
    const oddPolicy = filled({ policy: { v: 2, anything: 'else' } })
    expect(roundTrip(oddPolicy)).toEqual(oddPolicy)
  })

  it('packs a date seen before as it packed it the first time, whether it was a date or only looked like one', () => {
    // The wrong weekday: 29 characters ending in GMT, but not what Date formats back.
    const headers = { date: 'Mon, 15 Nov 1994 12:45:26 GMT', 'last-modified': 'Tue, 15 Nov 1994 12:45:26 GMT' }
    const first = packMeta(filled({ headers }))
    for (let i = 0; i < 3; i++) {
      const again = packMeta(filled({ headers: { ...headers } }))
      expect(again).toBe(first)
      expect(unpackMeta(again, 1024, 'sha512-abc').headers).toStrictEqual(headers)
    }
    // The real date is packed as a number, the impostor as its text.
    expect(first).toContain('Mon, 15 Nov 1994 12:45:26 GMT')
    expect(first).not.toContain('Tue, 15 Nov 1994')
  })

  it('packs only a policy with exactly its own fields as numbers: one missing, extra or of another type is kept as JSON', () => {
    const policy = filled().policy as Record<string, unknown>
    const { lifetime: _l, ...missing } = policy
    for (const odd of [missing, { ...policy, extra: 1 }, { ...policy, lifetime: '60' }, { ...policy, noCache: 0 }]) {
      const meta = filled({ policy: odd })
      const packed = packMeta(meta)
      expect(packed[packed.indexOf('\u0000', packed.indexOf('\u0000') + 1) + 1]).toBe('J')
      expect(unpackMeta(packed, meta.size, meta.integrity)).toEqual(meta)
    }
  })

  it('says what is wrong with a damaged packed string', () => {
    const packed = packMeta(filled())
    expect(() => unpackMeta(packed.slice(0, packed.length - 30), 1, 'x')).toThrow(/packed metadata/)
    expect(() => unpackMeta('k\u0000\u0000Z', 1, 'x')).toThrow(/unknown form/)
  })

  it('reads the fields a purge matches on without decoding the rest, in every form', () => {
    const purgeFields = (m: EntryMeta) => ({ key: m.key, variant: m.variant, url: m.url, host: m.host, tags: m.tags, storedAt: m.storedAt })
    const { origin: _o, via: _v, ...noOptional } = filled({ url: 'https://Example.com/other', policy: undefined, tags: [] })
    const cases: EntryMeta[] = [
      filled(),
      filled({ storedAt: NOW + 0.5, staleAt: NOW - 10, deleteAt: Number.POSITIVE_INFINITY, tags: ['x'.repeat(300), 'a'] }),
      noOptional as EntryMeta,
      { ...filled(), future: 1 } as unknown as EntryMeta,
    ]
    for (const m of cases) expect(unpackPurgeFields(packMeta(m))).toStrictEqual(purgeFields(m))
  })
})
