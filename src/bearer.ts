// Bearer secrets (`Authorization: Bearer <token>`, RFC 6750 §2.1): one parser and one
// constant-time comparison for the admin API tokens, the metrics token and the
// cluster secret, so none of them can drift into a weaker check.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { Context } from 'hono'

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(c: Context): string | undefined {
  const h = c.req.header('authorization')
  if (!h) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
  return m ? m[1] : undefined
}

/**
 * Compare two secrets in constant time. Both sides are hashed first so that
 * neither the content nor the length of the expected value leaks through timing.
 */
export function secretEquals(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest()
  const b = createHash('sha256').update(expected, 'utf8').digest()
  return timingSafeEqual(a, b)
}
