import path from 'node:path'
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { contentPath } from './content-file.ts'

describe('contentPath', () => {
  const integrity = `sha512-${createHash('sha512').update('a body').digest('base64')}`
  const hex = createHash('sha512').update('a body').digest('hex')

  it("is cacache's place for a digest: content-v2/sha512/ab/cd/<rest of the hex>", () => {
    expect(contentPath('/var/cache/caje', integrity)).toBe(path.join('/var/cache/caje', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)))
  })

  it('is the same path for a cache dir spelled with dots and trailing slashes', () => {
    expect(contentPath('cache/./nodes/../caje/', integrity)).toBe(path.join('cache', 'caje', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)))
  })

  it('has no path for a digest that is not sha512', () => {
    expect(contentPath('/var/cache/caje', 'sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=')).toBeUndefined()
  })
})
