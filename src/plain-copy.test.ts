import { describe, expect, it } from 'vitest'
import { plainCopy } from './plain-copy.ts'
import { sameHiddenClass } from './test-support/hidden-class.ts'

/** A record as one arrives from the network: fresh strings, fields added one by one. */
function received(i: number): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of ['content-type', 'content-length', 'cache-control', 'etag', 'date']) out[Buffer.from(name).toString()] = `${name}-${i}`
  return out
}

describe('plainCopy', () => {
  it('copies own fields, then the extra ones, keeping the order of fields already there', () => {
    const source = { a: 1, b: 'two', c: undefined }
    const copy = plainCopy(source, { b: 'three', d: 4 })
    expect(copy).toEqual({ a: 1, b: 'three', c: undefined, d: 4 })
    expect(Object.keys(copy)).toEqual(['a', 'b', 'c', 'd'])
    expect(copy).not.toBe(source)
    expect(source.b).toBe('two')
    expect(Object.keys(plainCopy(Object.create({ inherited: 1 }) as object))).toEqual([])
  })

  it('gives frozen copies of records of one shape a single hidden class', () => {
    // Many copies: a copy made by spread shares its hidden class with the others only until
    // V8's inline cache for it has warmed up, and freezing one then gives it a class of its own.
    const copies = Array.from({ length: 50 }, (_, i) => Object.freeze(plainCopy(received(i), { size: i })))
    expect(sameHiddenClass(copies[48]!, copies[49]!)).toBe(true)
  })
})
