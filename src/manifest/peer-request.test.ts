import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Agent } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { HIGH_WATER_BYTES, peerRequest } from './peer-request.ts'

describe('peer request', () => {
  const closers: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const close of closers.splice(0)) await close()
  })

  it('reads at most a little past its high-water mark ahead of the reader, and loses nothing', async () => {
    // Read ahead without bound, sixteen responses at once were parsed megabytes at a time, in one
    // poll phase of the receiving node's event loop.
    const total = 16 * 1024 * 1024
    const body = Buffer.alloc(total)
    for (let i = 0; i < total; i += 4) body.writeUInt32BE(i, i)
    // Settles when the sender has to wait for the reader, or has sent everything.
    let blocked!: () => void
    const senderBlockedOrDone = new Promise<void>((resolve) => (blocked = resolve))
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
      let at = 0
      const more = () => {
        while (at < total) {
          const ok = res.write(body.subarray(at, at + 64 * 1024))
          at += 64 * 1024
          // The sender waits: the kernel's buffers are full, so the reader stopped reading.
          if (!ok) {
            blocked()
            res.once('drain', more)
            return
          }
        }
        res.end()
        blocked()
      }
      more()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const agent = new Agent()
    closers.push(async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await agent.close()
    })
    const res = await peerRequest(agent, {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
      method: 'GET',
      headers: {},
      signal: new AbortController().signal,
      idleTimeoutMs: 30_000,
    })
    // Nothing read yet: what is buffered is what the request read ahead. The sender only blocks once
    // the reader stops reading (without a bound it takes all 16 MiB and the sender never blocks).
    await senderBlockedOrDone
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
    const buffered = (res.body as unknown as { buffered: number }).buffered
    // One socket read (64 KiB) may land past the mark before the request pauses.
    expect(buffered).toBeLessThanOrEqual(HIGH_WATER_BYTES + 64 * 1024)
    const got = Buffer.alloc(total)
    for (let at = 0; at < total; ) {
      const next = res.body.upTo(total - at, 'inside the body')
      const chunk = next instanceof Promise ? await next : next
      got.set(chunk, at)
      at += chunk.length
    }
    expect(got.equals(body)).toBe(true)
  })
})
