import { describe, expect, it } from 'vitest'
import { newEntry } from './test-support.ts'
import { type EntryMeta, pendingIntegrity, sameStoredBody } from './types.ts'

const DIGEST = `sha512-${'a'.repeat(86)}==`

function stored(overrides: Partial<EntryMeta>): EntryMeta {
  return { ...newEntry('https://a.test/x'), storedAt: 1000, size: 10, integrity: DIGEST, ...overrides }
}

describe('sameStoredBody', () => {
  it('is the same body when the integrity is unchanged, or a placeholder gave way to the digest of the same commit', () => {
    expect(sameStoredBody(stored({}), stored({}))).toBe(true)
    expect(sameStoredBody(stored({ integrity: pendingIntegrity(1) }), stored({}))).toBe(true)
  })

  it('is another body when the variant was committed again or is gone', () => {
    expect(sameStoredBody(stored({}), undefined)).toBe(false)
    expect(sameStoredBody(stored({}), stored({ integrity: pendingIntegrity(2) }))).toBe(false)
    expect(sameStoredBody(stored({ integrity: pendingIntegrity(1) }), stored({ integrity: pendingIntegrity(2) }))).toBe(false)
    expect(sameStoredBody(stored({ integrity: pendingIntegrity(1) }), stored({ storedAt: 1001 }))).toBe(false)
    expect(sameStoredBody(stored({ integrity: pendingIntegrity(1) }), stored({ size: 11 }))).toBe(false)
  })
})
