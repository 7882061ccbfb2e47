import { createHash, randomBytes } from 'node:crypto'

/** A random URL-safe token (session ids, invite and API tokens, challenge ids). */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url')
}

/** What we store instead of a bearer secret: its SHA-256, hex. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

const CODE_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789' // no 0/O, 1/I

/** A one-time enrolment code such as `K7QF-2MZX-9RTA-WB4C` (80 bits). */
export function createEnrolmentCode(): string {
  const bytes = randomBytes(16)
  let out = ''
  for (let i = 0; i < 16; i++) {
    if (i > 0 && i % 4 === 0) out += '-'
    out += CODE_ALPHABET[bytes[i]! % CODE_ALPHABET.length]
  }
  return out
}

/** Codes are compared without dashes, spaces or case, so they can be typed loosely. */
export function normaliseCode(code: string): string {
  return code.replace(/[\s-]/g, '').toUpperCase()
}
