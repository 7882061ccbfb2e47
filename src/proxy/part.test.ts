// Stored parts: which request completes one (RFC 9111 §3.3), and when a new part
// combines with a stored one (RFC 9111 §3.4, RFC 9110 §15.3.7.3), decided from
// the validators and the ranges alone.

import { describe, expect, it } from 'vitest'
import type { EntryMeta } from '../cache/types.ts'
import { combineParts, storedPartFor, completionRequest } from './part.ts'
import { sameStrongValidator, strongValidator } from './range.ts'

const LM = 'Tue, 01 Dec 2026 08:00:00 GMT'
const LATER = 'Tue, 01 Dec 2026 08:00:01 GMT'

function part(contentRange: string, headers: Record<string, string> = { etag: '"v1"' }, extra: Partial<EntryMeta> = {}): EntryMeta {
  const [, start, end] = /(\d+)-(\d+)/.exec(contentRange)!
  return {
    key: 'http://site.test/file',
    variant: '~part',
    url: 'http://site.test/file',
    host: 'site.test',
    status: 206,
    headers: { 'content-range': contentRange, 'content-length': String(Number(end) - Number(start) + 1), ...headers },
    varyHeaders: {},
    policy: {},
    storedAt: 1,
    staleAt: 2,
    deleteAt: 3,
    size: Number(end) - Number(start) + 1,
    integrity: 'sha512-x',
    tags: [],
    contentType: '',
    ...extra,
  }
}

/** The cleaned fields of an incoming 206 for `range` of a 10-byte representation. */
function incoming(range: string, headers: Record<string, string> = { etag: '"v1"' }): Record<string, string> {
  const [start, end] = range.split('-').map(Number) as [number, number]
  return { 'content-range': `bytes ${range}/10`, 'content-length': String(end - start + 1), ...headers }
}

describe('strong validators (RFC 9110 §8.8)', () => {
  it('compares entity tags strongly: both strong and identical', () => {
    expect(sameStrongValidator({ etag: '"a"' }, { etag: '"a"' })).toBe(true)
    expect(sameStrongValidator({ etag: '"a"' }, { etag: '"b"' })).toBe(false)
    expect(sameStrongValidator({ etag: 'W/"a"' }, { etag: 'W/"a"' })).toBe(false)
    expect(sameStrongValidator({ etag: '"a"' }, { etag: 'W/"a"' })).toBe(false)
    // One has an entity tag, the other not: not shown to be one representation.
    expect(sameStrongValidator({ etag: '"a"', 'last-modified': LM, date: LATER }, { 'last-modified': LM, date: LATER })).toBe(false)
    expect(sameStrongValidator({}, {})).toBe(false)
  })

  it('takes Last-Modified as strong only with a Date at least a second later (§8.8.2.2)', () => {
    const strong = { 'last-modified': LM, date: LATER }
    expect(sameStrongValidator(strong, strong)).toBe(true)
    expect(sameStrongValidator(strong, { 'last-modified': LM, date: LM })).toBe(false)
    expect(sameStrongValidator(strong, { 'last-modified': LM })).toBe(false)
    expect(sameStrongValidator(strong, { 'last-modified': LATER, date: 'Tue, 01 Dec 2026 09:00:00 GMT' })).toBe(false)
  })

  it('gives If-Range a strong entity tag, else a strong date when there is no entity tag (§13.1.5)', () => {
    expect(strongValidator({ etag: '"a"', 'last-modified': LM, date: LATER })).toBe('"a"')
    expect(strongValidator({ etag: 'W/"a"', 'last-modified': LM, date: LATER })).toBeUndefined()
    expect(strongValidator({ 'last-modified': LM, date: LATER })).toBe(LM)
    expect(strongValidator({ 'last-modified': LM, date: LM })).toBeUndefined()
    expect(strongValidator({})).toBeUndefined()
  })
})

describe('completing a stored part (RFC 9111 §3.3)', () => {
  it('asks for the rest after a part that starts the representation, or before one that ends it', () => {
    expect(completionRequest(part('bytes 0-4/10'))).toEqual({ range: 'bytes=5-', 'if-range': '"v1"' })
    expect(completionRequest(part('bytes 4-9/10'))).toEqual({ range: 'bytes=0-3', 'if-range': '"v1"' })
    // Without a strong validator there is nothing to put in If-Range.
    expect(completionRequest(part('bytes 0-4/10', { etag: 'W/"v1"' }))).toEqual({ range: 'bytes=5-' })
    expect(completionRequest(part('bytes 0-4/10', {}))).toEqual({ range: 'bytes=5-' })
    // Missing bytes on both sides: one range cannot complete it.
    expect(completionRequest(part('bytes 2-7/10'))).toBeUndefined()
    expect(completionRequest(part('bytes 0-9/10'))).toBeUndefined()
  })

  it('picks the newest part of the request’s variant, for a plain GET only', () => {
    const old = part('bytes 0-4/10', { etag: '"v1"' }, { storedAt: 1 })
    const newer = part('bytes 5-9/10', { etag: '"v2"' }, { storedAt: 5 })
    const middle = part('bytes 2-7/10', { etag: '"v3"' }, { storedAt: 4 })
    const french = part('bytes 0-4/10', { etag: '"fr"', vary: 'accept-language' }, { storedAt: 10, varyHeaders: { 'accept-language': 'fr' } })
    const whole = { ...old, status: 200, storedAt: 20 }
    const get = { method: 'GET', headers: { 'accept-language': 'de' } }
    expect(storedPartFor(get, [old, newer, middle, french, whole])).toBe(newer)
    expect(storedPartFor({ method: 'GET', headers: { 'accept-language': 'fr' } }, [old, french])).toBe(french)
    expect(storedPartFor({ method: 'GET', headers: { range: 'bytes=0-1' } }, [old])).toBeUndefined()
    expect(storedPartFor({ method: 'HEAD', headers: {} }, [old])).toBeUndefined()
  })
})

describe('combining parts (RFC 9111 §3.4)', () => {
  it('makes a complete 200 when the parts add up to the whole representation', () => {
    const plan = combineParts(part('bytes 0-4/10'), incoming('5-9'))
    expect(plan).toMatchObject({ status: 200, union: { start: 0, end: 9, length: 10 }, fields: { 'content-length': '10', 'content-range': undefined }, before: { start: 0, end: 4 }, offset: 5 })
    expect(plan?.after).toBeUndefined()
    // The new part first, the stored one after it; overlapping bytes come from the new part.
    expect(combineParts(part('bytes 3-9/10'), incoming('0-5'))).toMatchObject({ status: 200, before: undefined, after: { start: 3, end: 6 }, offset: 0 })
  })

  it('keeps a larger part when the union is still not the whole', () => {
    expect(combineParts(part('bytes 2-4/10'), incoming('5-6'))).toMatchObject({
      status: 206,
      union: { start: 2, end: 6 },
      fields: { 'content-length': '5', 'content-range': 'bytes 2-6/10' },
      before: { start: 0, end: 2 },
      offset: 3,
    })
    // A new part with stored bytes on both sides of it.
    expect(combineParts(part('bytes 1-8/10'), incoming('3-4'))).toMatchObject({ status: 206, union: { start: 1, end: 8 }, before: { start: 0, end: 1 }, after: { start: 4, end: 7 }, offset: 2 })
  })

  it('never combines parts without the same strong validator', () => {
    for (const [stored, fresh] of [
      [{ etag: '"v1"' }, { etag: '"v2"' }],
      [{ etag: 'W/"v1"' }, { etag: 'W/"v1"' }],
      [{}, {}],
      [{ 'last-modified': LM, date: LM }, { 'last-modified': LM, date: LM }],
      [{ etag: '"v1"' }, {}],
    ] as const) {
      expect(combineParts(part('bytes 0-4/10', stored), incoming('5-9', fresh)), JSON.stringify([stored, fresh])).toBeUndefined()
    }
    expect(combineParts(part('bytes 0-4/10', { 'last-modified': LM, date: LATER }), incoming('5-9', { 'last-modified': LM, date: LATER }))).toMatchObject({ status: 200 })
  })

  it('never combines parts of different lengths, codings, or with a gap between them', () => {
    expect(combineParts(part('bytes 0-4/11'), incoming('5-9'))).toBeUndefined()
    expect(combineParts(part('bytes 0-4/10', { etag: '"v1"', 'content-encoding': 'gzip' }), incoming('5-9'))).toBeUndefined()
    expect(combineParts(part('bytes 0-3/10'), incoming('5-9'))).toBeUndefined()
    // A whole response stored is not a part to combine with.
    expect(combineParts({ status: 200, headers: { etag: '"v1"' } }, incoming('5-9'))).toBeUndefined()
    // An incoming part whose body is not exactly its range.
    expect(combineParts(part('bytes 0-4/10'), { ...incoming('5-9'), 'content-length': '4' })).toBeUndefined()
  })

  it('takes the new fields, keeps fields only the stored part has, and drops its Content-Range', () => {
    const plan = combineParts(part('bytes 0-4/10', { etag: '"v1"', 'cache-control': 'max-age=1', 'x-old': 'kept' }), incoming('5-9', { etag: '"v1"', 'cache-control': 'max-age=600' }))
    expect(plan?.storedOnly).toEqual({ 'x-old': 'kept' })
  })

  it('takes a single part that is the whole representation as a complete response', () => {
    expect(combineParts(undefined, incoming('0-9'))).toMatchObject({ status: 200, before: undefined, after: undefined, offset: 0 })
    expect(combineParts(undefined, incoming('0-4'))).toBeUndefined()
  })
})
