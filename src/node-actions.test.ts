import { describe, expect, it } from 'vitest'
import { normaliseFieldValue } from './proxy/cache-key.ts'
import { variantLabel } from './node-actions.ts'

describe('variantLabel', () => {
  it('names a variant by its Vary values, sorted, without revealing secrets', () => {
    expect(variantLabel({})).toBe('')
    expect(variantLabel({ 'accept-language': 'fr', 'accept-encoding': 'br,gzip' })).toBe('accept-encoding=br,gzip accept-language=fr')
    expect(variantLabel({ 'accept-encoding': '' })).toBe('accept-encoding=(absent)')
    expect(variantLabel({ 'accept-encoding': normaliseFieldValue('accept-encoding', '') })).toBe('accept-encoding=(empty)')
    const cookie = normaliseFieldValue('cookie', 'session=very-secret')
    const label = variantLabel({ cookie })
    expect(label).toMatch(/^cookie=sha256:.{8}…$/)
    expect(label).not.toContain('very-secret')
  })
})
