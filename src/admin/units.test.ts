import { describe, expect, it } from 'vitest'
import { formatBytes, formatCount, formatDuration, formatRelative, formatTime } from '../../views/format.ts'
import { safeNext } from './http.ts'
import { createRateLimiter } from './rate-limit.ts'
import { secretEquals } from '../bearer.ts'
import { createEnrolmentCode, hashToken, normaliseCode, randomToken } from './secrets.ts'
import { enrolmentNotice } from './app.ts'
import { setup } from './test-setup.test-support.ts'

describe('secrets', () => {
  it('make distinct random tokens and stable hashes', () => {
    expect(randomToken()).not.toBe(randomToken())
    expect(randomToken(32)).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(hashToken('a')).toBe(hashToken('a'))
    expect(hashToken('a')).toMatch(/^[0-9a-f]{64}$/)
  })

  it('compare secrets of any length', () => {
    expect(secretEquals('correct horse', 'correct horse')).toBe(true)
    expect(secretEquals('correct hors', 'correct horse')).toBe(false)
    expect(secretEquals('', 'x')).toBe(false)
  })

  it('make readable enrolment codes that tolerate case, spaces and dashes', () => {
    const code = createEnrolmentCode()
    expect(code).toMatch(/^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){3}$/)
    expect(normaliseCode(code.toLowerCase().replace(/-/g, ' '))).toBe(normaliseCode(code))
  })
})

describe('rate limiter', () => {
  it('allows max attempts per window per key', () => {
    let now = 0
    const l = createRateLimiter({ max: 2, windowMs: 10_000, now: () => now })
    expect(l.hit('a')).toBe(0)
    expect(l.hit('a')).toBe(0)
    expect(l.hit('a')).toBe(10)
    expect(l.hit('b')).toBe(0)
    now = 4_000
    expect(l.hit('a')).toBe(6)
    now = 10_000
    expect(l.hit('a')).toBe(0)
  })
})

describe('safeNext', () => {
  it('keeps only admin paths', () => {
    expect(safeNext('/_caje/passkeys', '/_caje/list')).toBe('/_caje/passkeys')
    for (const bad of ['https://evil.example/', '//evil.example/_caje/', '/other', '/_caje/auth', '/_caje\\..', '/_caje/x\r\nSet-Cookie: a=b']) {
      expect(safeNext(bad, '/_caje/list'), bad).toBe('/_caje/list')
    }
  })

  it('checks the path a browser resolves, not the text', () => {
    const escapes = [
      '/_caje/..//evil.example',
      '/_caje/..//evil.example/_caje/list',
      '/_caje/%2e%2e//evil.example',
      '/_caje/%2E%2E/%2e%2E//evil.example',
      '/_caje/./..//evil.example',
      '/_caje/x/../..//evil.example',
      '/_caje/../other',
      '/_caje/../_caje/auth',
      '/_caje/assets/../auth',
      '/_caje/\t/..//evil.example',
      '/_caje/..\\evil.example',
    ]
    for (const bad of escapes) expect(safeNext(bad, '/_caje/list'), bad).toBe('/_caje/list')
    // Dot segments that stay inside /_caje/ are resolved, and the query kept.
    expect(safeNext('/_caje/assets/../list?filter=a%20b', '/_caje/list')).toBe('/_caje/list?filter=a%20b')
    expect(safeNext('/_caje/list?next=//evil.example', '/x')).toBe('/_caje/list?next=//evil.example')
    // An encoded tab is an ordinary segment: removed by the `..` after it, leaving a path on this host.
    expect(safeNext('/_caje/%09/..//evil.example', '/_caje/list')).toBe('/_caje//evil.example')
  })

  it('sends a signed-in visitor of the sign-in page nowhere outside /_caje/', async () => {
    const h = await setup()
    try {
      const c = h.client()
      await c.signInWithPassword()
      for (const next of ['/_caje/..//evil.example', '/_caje/%2e%2e//evil.example/x', '/_caje/..\\evil.example']) {
        const res = await c.request(`/_caje/auth?next=${encodeURIComponent(next)}`)
        expect(res.status, next).toBe(303)
        expect(res.headers.get('location'), next).toBe('/_caje/list')
      }
    } finally {
      await h.close()
    }
  })
})

describe('formatting', () => {
  it('formats sizes, times and durations', () => {
    expect(formatBytes(512)).toBe('512\u00a0B')
    expect(formatBytes(1536)).toBe('1.5\u00a0KiB')
    expect(formatBytes(150 * 1024 * 1024)).toBe('150\u00a0MiB')
    expect(formatTime(Date.UTC(2026, 0, 2, 3, 4, 5))).toBe('2026-01-02 03:04')
    expect(formatTime(null)).toBe('—')
    expect(formatDuration(45_000)).toBe('45s')
    expect(formatDuration(125_000)).toBe('2m 5s')
    expect(formatDuration(3 * 3600_000 + 20 * 60_000)).toBe('3h 20m')
    expect(formatDuration(5 * 86_400_000 + 4 * 3600_000)).toBe('5d 4h')
    expect(formatRelative(1_000, 61_000)).toBe('1m ago')
    expect(formatRelative(121_000, 1_000)).toBe('in 2m')
  })

  it('writes counts as toLocaleString("en") does', () => {
    const counts = [0, 7, 999, 1000, 1234, 99_999, 100_000, 1_234_567, 10_000_000, 2 ** 31, Number.MAX_SAFE_INTEGER - 1, -1, -1234, -1_000_000, 1.5, 1234.25, 0.125, 2.0004, -0.5, 12.3456, Number.NaN, Infinity, -Infinity, 1e21]
    for (const n of counts) expect(formatCount(n), String(n)).toBe(n.toLocaleString('en'))
    expect(formatCount(1_234_567)).toBe('1,234,567')
  })
})

describe('enrolmentNotice', () => {
  it('tells the operator how to enrol while no passkey exists', async () => {
    const h = await setup({ env: { CAJE_ADMIN_PASSWORD: '' } })
    try {
      expect(await enrolmentNotice({ config: h.config, db: h.deps.db, enrolmentCode: 'ABCD-EFGH-JKLM-NPQR' })).toBe(
        'No admin passkey yet: open http://localhost:8080/_caje/auth and enter the one-time enrolment code ABCD-EFGH-JKLM-NPQR to register one.',
      )
      const withPassword = { ...h.config, adminPassword: 'x'.repeat(12) }
      expect(await enrolmentNotice({ config: withPassword, db: h.deps.db })).toMatch(/CAJE_ADMIN_PASSWORD/)
    } finally {
      await h.close()
    }
  })
})
