import { describe, expect, it } from 'vitest'
import { stripHopByHop } from './headers.ts'

describe('stripHopByHop', () => {
  it('removes the fields Connection names (RFC 9110 §7.6.1), and Connection itself', () => {
    for (const connection of ['keep-alive, X-Trace', 'X-Trace', 'close, x-trace']) {
      const { headers } = stripHopByHop({ connection, 'x-trace': '1', 'keep-alive': 'timeout=5', 'content-type': 'text/plain' })
      expect(headers).toEqual({ 'content-type': 'text/plain' })
    }
  })

  it('keeps every end-to-end field when Connection is a plain keep-alive', () => {
    for (const connection of ['keep-alive', 'Keep-Alive', 'upgrade']) {
      const { headers } = stripHopByHop({ connection, 'keep-alive': 'timeout=5', upgrade: 'h2c', etag: '"a"' })
      expect(headers).toEqual({ etag: '"a"' })
    }
  })
})
