import path from 'node:path'
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { algorithmOf, contentPath, integrityOfBytes, matches } from './content-file.ts'

describe('contentPath', () => {
  const integrity = `sha256-${createHash('sha256').update('a body').digest('base64')}`
  const hex = createHash('sha256').update('a body').digest('hex')
  const old = `sha512-${createHash('sha512').update('a body').digest('base64')}`
  const oldHex = createHash('sha512').update('a body').digest('hex')

  it("is cacache's place for a digest: content-v2/<algorithm>/ab/cd/<rest of the hex>", () => {
    expect(contentPath('/var/cache/caje', integrity)).toBe(path.join('/var/cache/caje', 'content-v2', 'sha256', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)))
    // Bodies an older version stored.
    expect(contentPath('/var/cache/caje', old)).toBe(path.join('/var/cache/caje', 'content-v2', 'sha512', oldHex.slice(0, 2), oldHex.slice(2, 4), oldHex.slice(4)))
  })

  it('is the same path for a cache dir spelled with dots and trailing slashes', () => {
    expect(contentPath('cache/./nodes/../caje/', integrity)).toBe(path.join('cache', 'caje', 'content-v2', 'sha256', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)))
  })

  it('has no path for a digest that is neither sha256 nor sha512, nor for several', () => {
    expect(contentPath('/var/cache/caje', 'sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=')).toBeUndefined()
    expect(contentPath('/var/cache/caje', `${integrity} ${old}`)).toBeUndefined()
    expect(contentPath('/var/cache/caje', 'pending-1')).toBeUndefined()
  })
})

describe('content integrity', () => {
  it('names new bodies by sha256 and checks a body by the algorithm its integrity names', () => {
    const body = Buffer.from('a body')
    expect(integrityOfBytes(body)).toBe(`sha256-${createHash('sha256').update(body).digest('base64')}`)
    expect(algorithmOf(integrityOfBytes(body))).toBe('sha256')
    const old = integrityOfBytes(body, 'sha512')
    expect(old).toBe(`sha512-${createHash('sha512').update(body).digest('base64')}`)
    expect(matches(body, old)).toBe(true)
    expect(matches(body, integrityOfBytes(body))).toBe(true)
    expect(matches(Buffer.from('another'), old)).toBe(false)
    expect(matches(body, 'sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=')).toBe(false)
  })
})
