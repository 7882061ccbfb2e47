// HTTP-date (RFC 9110 §5.6.7), parsed exactly. Date.parse accepts almost
// anything ("UTC" for "GMT", a missing comma, dashes, a one-digit hour), and a
// cache that reads a malformed Expires as a future date serves a response long
// after its origin meant it to expire: RFC 9111 §5.3 says an invalid Expires
// means "already expired". So only the three forms a recipient must accept are
// read here; anything else is invalid (undefined) and the caller decides what
// that means.

const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']
const LONG_DAY_NAMES = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']

// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT` (the form senders must use).
const IMF_FIXDATE = /^([a-z]{3}), (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) gmt$/i
// Obsolete RFC 850 form: `Sunday, 06-Nov-94 08:49:37 GMT`.
const RFC850_DATE = /^([a-z]{6,9}), (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) gmt$/i
// Obsolete ANSI C asctime() form: `Sun Nov  6 08:49:37 1994` (a one-digit day is padded with a space).
const ASCTIME_DATE = /^([a-z]{3}) ([a-z]{3}) ( \d|\d{2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/i

/**
 * The last IMF-fixdate read and its value: an origin stamps every response of the same second
 * with the same Date, so a run of misses reads one value over and over. Only this form is kept:
 * its value does not depend on `now`, as the RFC 850 form's two-digit year does.
 */
let lastFixdate: string | undefined
let lastFixdateMs: number | undefined

/**
 * Epoch ms of an HTTP-date, or undefined when the value is not one. Names of days and months
 * are matched without regard to case: the grammar is case-sensitive, but reading `THU` or
 * `gMT` as the date they plainly are loses nothing. Whitespace must be exactly as the grammar
 * has it. `now` resolves the two-digit year of the RFC 850 form.
 */
export function parseHttpDate(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined
  if (value === lastFixdate) return lastFixdateMs
  const v = value.trim()
  let m = IMF_FIXDATE.exec(v)
  if (m) {
    if (!DAY_NAMES.includes(m[1]!.toLowerCase())) return undefined
    const ms = build(Number(m[4]), m[3]!, m[2]!, m[5]!, m[6]!, m[7]!)
    lastFixdate = value
    lastFixdateMs = ms
    return ms
  }
  m = RFC850_DATE.exec(v)
  if (m) {
    if (!LONG_DAY_NAMES.includes(m[1]!.toLowerCase())) return undefined
    return build(fullYear(Number(m[4]), now), m[3]!, m[2]!, m[5]!, m[6]!, m[7]!)
  }
  m = ASCTIME_DATE.exec(v)
  if (m) {
    if (!DAY_NAMES.includes(m[1]!.toLowerCase())) return undefined
    return build(Number(m[7]), m[2]!, m[3]!.trim(), m[4]!, m[5]!, m[6]!)
  }
  return undefined
}

/**
 * RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in the future is the
 * most recent past year with the same last two digits.
 */
function fullYear(twoDigits: number, now: number): number {
  const current = new Date(now).getUTCFullYear()
  const year = current - (current % 100) + twoDigits
  return year > current + 50 ? year - 100 : year
}

function build(year: number, monthName: string, day: string, hour: string, minute: string, second: string): number | undefined {
  const month = MONTHS.indexOf(monthName.toLowerCase())
  const d = Number(day)
  const h = Number(hour)
  const min = Number(minute)
  // 60 is a leap second (RFC 9110 §5.6.7 allows it).
  const s = Number(second)
  if (month < 0 || d < 1 || h > 23 || min > 59 || s > 60) return undefined
  const day0 = new Date(0)
  // setUTCFullYear, not Date.UTC: that maps the years 0-99 to 1900-1999.
  day0.setUTCFullYear(year, month, d)
  // 31 Feb and the like roll over into the next month: not a date.
  if (day0.getUTCDate() !== d) return undefined
  return day0.getTime() + ((h * 60 + min) * 60 + s) * 1000
}
