// Hardening: an origin that misbehaves in every way a socket allows. For each
// fault the client gets a clear 502/504 (or a stale copy where stale-if-error
// allows it, or a visibly cut response when the headers were already sent),
// caje stays up, and nothing partial or wrong is stored.

import type net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, type TestNode } from '../src/test-support/servers.ts'
import { closedPort, get, startRawOrigin, writeResponse, type ClientResult, type RawOrigin } from './support/raw.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})


/**
 * Timeouts small enough that a stalled origin fails well inside a test's budget: only for the
 * faults that stall, since they are undici's timers on the real clock and every request of the
 * node has them (a loaded machine could hold a good answer that long).
 */
const FAST_TIMEOUTS = { CAJE_ORIGIN_TIMEOUT_MS: '600', CAJE_ORIGIN_BODY_TIMEOUT_MS: '300', CAJE_ORIGIN_CONNECT_TIMEOUT_MS: '2000' }

const OK_BODY = 'fine, thanks'

type Fault = (socket: net.Socket) => void

/**
 * A raw origin: `/ok` is a normal cacheable page; `/fault` runs `fault`;
 * `/sie` is a page allowed stale-if-error, served normally until `mode` is 'fault'.
 */
async function setup(fault: Fault, env: Record<string, string> = {}): Promise<{ origin: RawOrigin; node: TestNode; mode: { current: 'good' | 'fault' } }> {
  const mode = { current: 'good' as 'good' | 'fault' }
  const origin = await startRawOrigin((req, socket) => {
    if (req.path === '/ok') return writeResponse(socket, 200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' }, OK_BODY)
    if (req.path === '/sie' && mode.current === 'good') {
      return writeResponse(socket, 200, { 'cache-control': 'max-age=0, stale-if-error=60', etag: '"v1"', 'content-type': 'text/plain' }, 'stale but good')
    }
    fault(socket)
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node, mode }
}

/**
 * Fetch and store `/ok`, a normal page, and wait until it is stored: a commit
 * begun before it (a partial body wrongly kept) has had its turn by then.
 */
async function landedAfter(node: TestNode): Promise<void> {
  const ok = await get(node.url + '/ok')
  expect(ok.status).toBe(200)
  await node.stored('/ok')
}

/** After a fault: caje still answers a normal request (and stores it), and the faulty URL left nothing behind. */
async function expectStillServingAndNothingStored(node: TestNode, origin: RawOrigin, faultPath = '/fault'): Promise<void> {
  const key = `http://${new URL(node.url).host}${faultPath}`
  expect(await node.store.variants(key)).toEqual([])
  const ok = await get(node.url + '/ok')
  expect(ok.status).toBe(200)
  expect(ok.body.toString()).toBe(OK_BODY)
  expect(ok.cut).toBe(false)
  await node.stored('/ok')
  expect(node.store.stats().entries).toBe(1)
  expect(await node.store.variants(key)).toEqual([])
  // Nothing stored for the faulty URL: a second request reaches the origin again.
  const before = origin.count(faultPath)
  await get(node.url + faultPath).catch(() => undefined)
  expect(origin.count(faultPath)).toBe(before + 1)
}

/** A response that was cut must look cut: never a complete-looking 200. */
function expectCutOrGatewayError(r: ClientResult, fullLength: number): void {
  if (r.status === 200) {
    expect(r.cut).toBe(true)
    expect(r.body.length).toBeLessThan(fullLength)
  } else {
    expect([502, 504]).toContain(r.status)
  }
}

function expectGatewayError(r: ClientResult, status: 502 | 504, detail: string): void {
  expect(r.status).toBe(status)
  expect(r.cut).toBe(false)
  expect(r.headers['cache-status']).toContain(`detail=${detail}`)
  expect(r.headers['cache-control']).toBe('no-store')
  const text = r.body.toString()
  expect(text).toMatch(status === 502 ? /^502 Bad Gateway: / : /^504 Gateway Timeout: /)
  // A short, clear line for people; no stack traces or library internals.
  expect(text.split('\n').filter(Boolean)).toHaveLength(1)
  expect(text).not.toMatch(/UND_ERR|HPE_|at .*\.js/)
}

const LONG_HEADERS = 'x-filler: ' + 'a'.repeat(8_000) + '\r\n'

/** Faults that happen before the response head is complete: caje can still choose the status. */
/** `env`: what the node needs for the fault to end (FAST_TIMEOUTS for one that stalls). */
const HEAD_FAULTS: Array<{ name: string; fault: Fault; status: 502 | 504; detail: string; env?: Record<string, string> }> = [
  {
    name: 'resets the connection mid-headers',
    fault: (s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Con', () => s.resetAndDestroy())
    },
    status: 502,
    detail: 'reset',
  },
  {
    name: 'closes the connection without answering',
    fault: (s) => s.end(),
    status: 502,
    detail: 'reset',
  },
  {
    name: 'sends a malformed status line',
    fault: (s) => s.end('HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\nhi'),
    status: 502,
    detail: 'protocol',
  },
  {
    name: 'does not speak HTTP at all',
    fault: (s) => s.write('SSH-2.0-OpenSSH_9.6\r\n\r\n'),
    status: 502,
    detail: 'protocol',
  },
  {
    name: 'sends an invalid Content-Length',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\nCache-Control: max-age=60\r\n\r\nhello world!'),
    status: 502,
    detail: 'protocol',
  },
  {
    name: 'sends a negative Content-Length',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: -5\r\nCache-Control: max-age=60\r\n\r\nhello'),
    status: 502,
    detail: 'protocol',
  },
  {
    // RFC 9112 §6.3 (5): differing Content-Length values are unrecoverable; a proxy answers 502.
    name: 'sends two differing Content-Length fields',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\nCache-Control: max-age=60\r\n\r\nhello world'),
    status: 502,
    detail: 'protocol',
  },
  {
    name: 'sends headers over the size limit',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n' + LONG_HEADERS.repeat(12) + 'Content-Length: 2\r\n\r\nhi'),
    status: 502,
    detail: 'protocol',
  },
  {
    name: 'is too slow to send its headers (CAJE_ORIGIN_TIMEOUT_MS)',
    fault: () => {
      /* never answers */
    },
    status: 504,
    detail: 'timeout',
    env: FAST_TIMEOUTS,
  },
]

describe('origin faults before the response head', () => {
  it.each(HEAD_FAULTS)('origin $name → $status, caje stays up, nothing stored', async ({ fault, status, detail, env }) => {
    const { origin, node } = await setup(fault, env)
    const r = await get(node.url + '/fault')
    expectGatewayError(r, status, detail)
    await expectStillServingAndNothingStored(node, origin)
  })

  it.each(HEAD_FAULTS)('origin $name while a stale-if-error copy exists → the stale copy', async ({ fault, env }) => {
    const { origin, node, mode } = await setup(fault, env)
    expect((await get(node.url + '/sie')).body.toString()).toBe('stale but good')
    await node.stored('/sie')
    mode.current = 'fault'
    const r = await get(node.url + '/sie')
    expect(r.status).toBe(200)
    expect(r.cut).toBe(false)
    expect(r.body.toString()).toBe('stale but good')
    expect(r.headers['cache-status']).toMatch(/^caje; fwd=stale; .*detail=stale-if-error/)
    expect(origin.count('/sie')).toBe(2)
  })

  it('origin refuses connections → 502 connect; other sites on the node keep working', async () => {
    const port = await closedPort()
    const { origin, node } = await setup(() => {}, { CAJE_SITES: `down.test=http://127.0.0.1:${port}` })
    const r = await get(node.url + '/fault', { host: 'down.test' })
    expectGatewayError(r, 502, 'connect')
    expect(r.body.toString()).toMatch(/refused the connection/)
    expect(await node.store.variants('http://down.test/fault')).toEqual([])
    const again = await get(node.url + '/fault', { host: 'down.test' })
    expect(again.status).toBe(502)
    const ok = await get(node.url + '/ok')
    expect(ok.body.toString()).toBe(OK_BODY)
    expect(origin.count('/ok')).toBe(1)
  })

  it('origin refuses connections while a stale-if-error copy exists → the stale copy', async () => {
    const { origin, node } = await setup(() => {})
    expect((await get(node.url + '/sie')).body.toString()).toBe('stale but good')
    await node.stored('/sie')
    await origin.close()
    const r = await get(node.url + '/sie')
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('stale but good')
    expect(r.headers['cache-status']).toContain('detail=stale-if-error')
  })

  it('origin host does not resolve (DNS failure) → 502 dns', async () => {
    const { node } = await setup(() => {}, { CAJE_SITES: 'nx.test=http://caje-hardening-test.invalid:8080' })
    const r = await get(node.url + '/anything', { host: 'nx.test' })
    expectGatewayError(r, 502, 'dns')
    expect(r.body.toString()).toMatch(/could not be resolved/)
    expect(node.store.stats().entries).toBe(0)
    expect((await get(node.url + '/ok')).body.toString()).toBe(OK_BODY)
  })
})

describe('origin answers 5xx', () => {
  it.each([500, 502, 503, 504])('passes a %i without caching headers through without storing it', async (status) => {
    const { origin, node } = await setup((s) => writeResponse(s, status, { 'content-type': 'text/plain', etag: '"e"' }, `origin says ${status}`))
    const r = await get(node.url + '/fault')
    expect(r.status).toBe(status)
    expect(r.body.toString()).toBe(`origin says ${status}`)
    expect(r.headers['cache-status']).toBe(`caje; fwd=uri-miss; fwd-status=${status}; detail=no-explicit-freshness`)
    await expectStillServingAndNothingStored(node, origin)
  })

  it.each([500, 503])('stores a %i the origin gave a lifetime, like any final status (RFC 9111 §3)', async (status) => {
    const { origin, node } = await setup((s) => writeResponse(s, status, { 'cache-control': 'public, max-age=600', 'content-type': 'text/plain' }, `origin says ${status}`))
    const first = await get(node.url + '/fault')
    expect(first.headers['cache-status']).toBe(`caje; fwd=uri-miss; fwd-status=${status}; stored`)
    await node.stored('/fault')
    const again = await get(node.url + '/fault')
    expect(again.status).toBe(status)
    expect(again.body.toString()).toBe(`origin says ${status}`)
    expect(again.headers['cache-status']).toMatch(/^caje; hit/)
    expect(origin.count('/fault')).toBe(1)
  })

  it('serves the stale copy for a 503 when stale-if-error allows it', async () => {
    const { node, mode } = await setup((s) => writeResponse(s, 503, { 'content-type': 'text/plain' }, 'down for maintenance'))
    await get(node.url + '/sie')
    await node.stored('/sie')
    mode.current = 'fault'
    const r = await get(node.url + '/sie')
    expect(r.status).toBe(200)
    expect(r.body.toString()).toBe('stale but good')
    expect(r.headers['cache-status']).toMatch(/^caje; fwd=stale; fwd-status=503; ttl=-?\d+; detail=stale-if-error$/)
  })
})

/** Faults after the first body bytes have gone to the client: the client must see the cut. */
const BODY_FAULTS: Array<{ name: string; fault: Fault; env?: Record<string, string> }> = [
  {
    name: 'resets the connection mid-body (Content-Length)',
    fault: (s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n' + 'x'.repeat(10), () => s.resetAndDestroy())
    },
  },
  {
    name: 'resets the connection mid-body (chunked)',
    fault: (s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n', () => s.resetAndDestroy())
    },
  },
  {
    name: 'closes cleanly with a body shorter than its Content-Length',
    fault: (s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n' + 'x'.repeat(10), () => s.end())
    },
  },
  {
    name: 'closes cleanly before the last chunk',
    fault: (s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n', () => s.end())
    },
  },
  {
    name: 'hangs mid-body (CAJE_ORIGIN_BODY_TIMEOUT_MS)',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n'),
    env: FAST_TIMEOUTS,
  },
  {
    // RFC 9112 §6.3 (3): Transfer-Encoding overrides Content-Length; such a message "ought to be handled as an error".
    name: 'sends both Transfer-Encoding and a Content-Length that disagrees with the body',
    fault: (s) => s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n0\r\n\r\n'),
  },
]

/**
 * The timeout of the tests where only a timeout ends the exchange: half caje's 30 s defaults,
 * so such a test fails unless the configured 300 ms body timeout is what ended it.
 */
const BELOW_DEFAULT_TIMEOUTS_MS = 15_000

describe('origin faults after the response head', () => {
  it('origin hangs after a 200 head, before any body byte → 504 (nothing had reached the client yet)', async () => {
    const { origin, node } = await setup((s) => s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n'), FAST_TIMEOUTS)
    const r = await get(node.url + '/fault')
    expect(r.headers['cache-status']).toBe('caje; fwd=uri-miss; fwd-status=200; detail=timeout')
    expectGatewayError(r, 504, 'timeout')
    expect(r.body.toString()).toMatch(/stopped sending the body/)
    await expectStillServingAndNothingStored(node, origin)
  }, BELOW_DEFAULT_TIMEOUTS_MS)

  it('origin closes after a 200 head, before any body byte → 502', async () => {
    const { origin, node } = await setup((s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n', () => s.end())
    })
    const r = await get(node.url + '/fault')
    expect(r.status).toBe(502)
    expect(r.cut).toBe(false)
    expect(r.body.toString()).toMatch(/^502 Bad Gateway: /)
    await expectStillServingAndNothingStored(node, origin)
  })

  it.each(BODY_FAULTS)('origin $name → the client sees a cut response, nothing stored', async ({ fault, env }) => {
    const { origin, node } = await setup(fault, env)
    const r = await get(node.url + '/fault')
    expectCutOrGatewayError(r, 100)
    await expectStillServingAndNothingStored(node, origin)
  }, BELOW_DEFAULT_TIMEOUTS_MS)

  it.each(BODY_FAULTS)('origin $name while revalidating → the stored copy is not replaced by a partial one', async ({ fault, env }) => {
    const { origin, node, mode } = await setup(fault, env)
    await get(node.url + '/sie')
    await node.stored('/sie')
    const key = `http://${new URL(node.url).host}/sie`
    const [before] = await node.store.variants(key)
    mode.current = 'fault'
    const r = await get(node.url + '/sie')
    // The fault may also surface before the head (undici checks framing as it parses); then
    // stale-if-error answers with the whole old copy, which is as good.
    if (r.status === 200 && !r.cut && r.headers['cache-status']?.includes('detail=stale-if-error')) expect(r.body.toString()).toBe('stale but good')
    else expectCutOrGatewayError(r, 100)
    // A later response stored: a commit of the partial body, begun before it, would have landed too.
    await landedAfter(node)
    // Either the old entry is still there, whole, or nothing is: never the partial body.
    const after = await node.store.variants(key)
    for (const v of after) {
      expect(v.size).toBe(before!.size)
      const body = await node.store.read(v.key, v.variant)
      const bytes = body!.kind === 'buffer' ? body!.buffer : Buffer.concat(await body!.stream.toArray())
      expect(bytes.toString()).toBe('stale but good')
    }
    // With the origin gone, stale-if-error still has the whole old copy to offer.
    await origin.close()
    const stale = await get(node.url + '/sie')
    if (after.length) {
      expect(stale.status).toBe(200)
      expect(stale.body.toString()).toBe('stale but good')
    } else expect(stale.status).toBe(502)
  })

  it('origin ends its body by closing the connection (no Content-Length, not chunked) → passed through whole or cut, never stored', async () => {
    // RFC 9112 §6.3 rule 8: such a body ends where the connection ends, so a connection reset
    // halfway is indistinguishable from the end of the body. caje must not keep either.
    const { origin, node } = await setup((s) => {
      s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Type: text/plain\r\n\r\nfirst half', () => s.resetAndDestroy())
    })
    const r = await get(node.url + '/fault')
    if (r.status === 200) expect(r.body.toString()).toBe('first half')
    expect(r.headers['cache-status']).toContain('detail=no-length')
    await expectStillServingAndNothingStored(node, origin)
  })

  it('a chunked body without Content-Length is stored: its end is marked in the stream', async () => {
    const { origin, node } = await setup((s) => s.write('HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'))
    const r = await get(node.url + '/fault')
    expect(r.body.toString()).toBe('hello world')
    await node.stored('/fault')
    const again = await get(node.url + '/fault')
    expect(again.body.toString()).toBe('hello world')
    expect(again.headers['cache-status']).toMatch(/^caje; hit/)
    expect(origin.count('/fault')).toBe(1)
  })

  it('origin sends more bytes than its Content-Length → the extra bytes reach no one and are not stored', async () => {
    // The surplus is a whole second response: if caje's origin connection took it as the answer to
    // the next request, one URL's body would be served (and cached) for another (response desync).
    const smuggled = 'HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 8\r\n\r\nsmuggled'
    const { origin, node } = await setup((s) => s.write(`HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello${smuggled}`))
    const r = await get(node.url + '/fault')
    if (r.status === 200 && !r.cut) expect(r.body.toString()).toBe('hello')
    else expectCutOrGatewayError(r, 5)
    for (let i = 0; i < 3; i++) {
      const ok = await get(node.url + '/ok')
      expect(ok.body.toString()).toBe(OK_BODY)
      const other = await get(node.url + `/other-${i}`)
      expect(other.body.toString()).not.toContain('smuggled')
    }
    await node.stored('/ok')
    const key = `http://${new URL(node.url).host}/fault`
    for (const v of await node.store.variants(key)) expect(v.size).toBe(5)
    const again = await get(node.url + '/fault')
    expect(again.body.toString()).not.toContain('smuggled')
    expect(origin.count('/ok')).toBe(1)
  })
})
