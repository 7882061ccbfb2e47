import { describe, expect, it } from 'vitest'
import { parseHttpDate } from './http-date.ts'

const NOW = Date.parse('2026-12-01T00:00:00Z')
const at = (iso: string) => Date.parse(iso)

describe('parseHttpDate (RFC 9110 §5.6.7)', () => {
  it('reads the three forms a recipient must accept', () => {
    expect(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(at('1994-11-06T08:49:37Z'))
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW)).toBe(at('1994-11-06T08:49:37Z'))
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994')).toBe(at('1994-11-06T08:49:37Z'))
    expect(parseHttpDate('Thu Aug 18 02:01:18 2050')).toBe(at('2050-08-18T02:01:18Z'))
    expect(parseHttpDate('Thu Aug 08 02:01:18 2050')).toBe(at('2050-08-08T02:01:18Z'))
    expect(parseHttpDate('Tue, 19 Jan 2038 03:14:08 GMT')).toBe(2 ** 31 * 1000)
    expect(parseHttpDate('Sun, 21 Nov 2286 04:46:39 GMT')).toBe(at('2286-11-21T04:46:39Z'))
    // A leap second is a valid second (60).
    expect(parseHttpDate('Wed, 31 Dec 2008 23:59:60 GMT')).toBe(at('2009-01-01T00:00:00Z'))
  })

  it('resolves an RFC 850 two-digit year to at most 50 years ahead', () => {
    expect(parseHttpDate('Thursday, 18-Aug-50 02:01:18 GMT', NOW)).toBe(at('2050-08-18T02:01:18Z'))
    expect(parseHttpDate('Thursday, 18-Aug-76 02:01:18 GMT', NOW)).toBe(at('2076-08-18T02:01:18Z'))
    expect(parseHttpDate('Wednesday, 18-Aug-77 02:01:18 GMT', NOW)).toBe(at('1977-08-18T02:01:18Z'))
    expect(parseHttpDate('Saturday, 01-Jan-00 00:00:00 GMT', NOW)).toBe(at('2000-01-01T00:00:00Z'))
  })

  it('reads names without regard to case', () => {
    expect(parseHttpDate('THU, 18 Aug 2050 02:01:18 GMT')).toBe(at('2050-08-18T02:01:18Z'))
    expect(parseHttpDate('Thu, 18 AUG 2050 02:01:18 GMT')).toBe(at('2050-08-18T02:01:18Z'))
    expect(parseHttpDate('Thu, 18 Aug 2050 02:01:18 gMT')).toBe(at('2050-08-18T02:01:18Z'))
  })

  it.each([
    ['UTC for GMT', 'Thu, 18 Aug 2050 02:01:18 UTC'],
    ['another zone', 'Thu, 18 Aug 2050 02:01:18 AEST'],
    ['no zone', 'Thu, 18 Aug 2050 02:01:18'],
    ['a two-digit year in IMF-fixdate', 'Thu, 18 Aug 50 02:01:18 GMT'],
    ['no comma after the day name', 'Thu 18 Aug 2050 02:01:18 GMT'],
    ['two spaces', 'Thu, 18  Aug  2050 02:01:18 GMT'],
    ['dashes in an IMF-fixdate', 'Thu, 18-Aug-2050 02:01:18 GMT'],
    ['periods in the time', 'Thu, 18 Aug 2050 02.01.18 GMT'],
    ['a one-digit hour', 'Thu, 18 Aug 2050 2:01:18 GMT'],
    ['a one-digit day', 'Thu, 8 Aug 2050 02:01:18 GMT'],
    ['two dates', 'Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:19 GMT'],
    ['a full day name in IMF-fixdate', 'Thursday, 18 Aug 2050 02:01:18 GMT'],
    ['a short day name in the RFC 850 form', 'Thu, 18-Aug-50 02:01:18 GMT'],
    ['an unknown day name', 'Xyz, 18 Aug 2050 02:01:18 GMT'],
    ['an unknown month', 'Thu, 18 Foo 2050 02:01:18 GMT'],
    ['31 February', 'Thu, 31 Feb 2050 02:01:18 GMT'],
    ['hour 24', 'Thu, 18 Aug 2050 24:00:00 GMT'],
    ['minute 60', 'Thu, 18 Aug 2050 02:60:00 GMT'],
    ['day 00', 'Thu, 00 Aug 2050 02:01:18 GMT'],
    ['asctime with a zone', 'Thu Aug 18 02:01:18 2050 GMT'],
    ['asctime with a two-space gap before a two-digit day', 'Thu Aug  18 02:01:18 2050'],
    ['ISO 8601', '2050-08-18T02:01:18Z'],
    ['a number', '0'],
    ['a negative number', '-1'],
    ['nothing', ''],
  ])('rejects %s', (_name, value) => {
    expect(parseHttpDate(value, NOW)).toBeUndefined()
  })

  it('reads each value as its own when the same ones come again and again, in turn', () => {
    // The last IMF-fixdate is remembered (a run of misses reads the same Date): never another's.
    const a = 'Thu, 18 Aug 2050 02:01:18 GMT'
    const b = 'Thu, 18 Aug 2050 02:01:19 GMT'
    for (let i = 0; i < 3; i++) {
      expect(parseHttpDate(a, NOW)).toBe(at('2050-08-18T02:01:18Z'))
      expect(parseHttpDate(a, NOW)).toBe(at('2050-08-18T02:01:18Z'))
      expect(parseHttpDate(b, NOW)).toBe(at('2050-08-18T02:01:19Z'))
      expect(parseHttpDate('Thu, 31 Feb 2050 02:01:18 GMT', NOW)).toBeUndefined()
      expect(parseHttpDate('Thu, 31 Feb 2050 02:01:18 GMT', NOW)).toBeUndefined()
      expect(parseHttpDate('Thursday, 18-Aug-50 02:01:18 GMT', NOW)).toBe(at('2050-08-18T02:01:18Z'))
      expect(parseHttpDate('Thursday, 18-Aug-50 02:01:18 GMT', NOW)).toBe(at('2050-08-18T02:01:18Z'))
    }
  })
})
