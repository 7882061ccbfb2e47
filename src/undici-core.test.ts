import * as undici from 'undici'
import { describe, expect, it } from 'vitest'
import { Agent, errors, util } from './undici-core.ts'

describe('undici-core', () => {
  it("is undici's own Agent, errors and header parser, as the package's index exports them", () => {
    expect(Agent).toBe(undici.Agent)
    expect(errors).toBe(undici.errors)
    expect(util.parseHeaders).toBe(undici.util.parseHeaders)
  })
})
