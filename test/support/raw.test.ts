// The raw client knows where an answer ends from its HTTP/1.1 framing, never from a silence:
// each case below keeps the connection open after the answer, so only the framing can end it.

import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { rawExchange, responseFraming, statusCodes } from './raw.ts'

const servers: Array<{ server: net.Server; sockets: Set<net.Socket> }> = []
afterEach(async () => {
  for (const { server, sockets } of servers.splice(0)) {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
})

/**
 * A server that, once it has a request head, writes `parts` (one write each, each after the
 * last was flushed), then keeps the connection open, or ends it with `close`.
 */
async function scripted(parts: string[], opts: { close?: boolean } = {}): Promise<number> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let seen = ''
    socket.on('data', (c: Buffer) => {
      const started = seen.includes('\r\n\r\n')
      seen += c.toString('latin1')
      if (started || !seen.includes('\r\n\r\n')) return
      const next = (i: number) => {
        if (i < parts.length) socket.write(parts[i]!, () => next(i + 1))
        else if (opts.close) socket.end()
      }
      next(0)
    })
  })
  servers.push({ server, sockets })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
}

const GET = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'

describe('rawExchange', () => {
  it.each([
    ['Content-Length, in pieces', ['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello', ' worl', 'd']],
    ['chunked, with trailers', ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', '6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n', '\r\n']],
    ['interim responses before the final one', ['HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']],
    ['204 with no body', ['HTTP/1.1 204 No Content\r\n\r\n']],
    ['304 with a Content-Length but no body', ['HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: "e"\r\n\r\n']],
  ])('ends a kept-alive answer by its framing: %s', async (_name, parts) => {
    const port = await scripted(parts)
    const r = await rawExchange(port, GET)
    expect(r.text).toBe(parts.join(''))
    expect(r.closedByServer).toBe(false)
  })

  it('reads no body after a response to HEAD, whatever its Content-Length says', async () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n'
    const port = await scripted([head])
    const r = await rawExchange(port, 'HEAD / HTTP/1.1\r\nHost: x\r\n\r\n')
    expect(r).toEqual({ text: head, closedByServer: false })
  })

  it('waits for one response per pipelined request', async () => {
    const parts = ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo']
    const port = await scripted(parts)
    const r = await rawExchange(port, GET + GET)
    expect(statusCodes(r.text)).toEqual([200, 200])
    expect(r.text).toBe(parts.join(''))
  })

  it.each([
    ['Connection: close', 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'],
    ['HTTP/1.0 without keep-alive', 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['no length: the body runs to the close', 'HTTP/1.1 200 OK\r\n\r\nuntil the close'],
  ])('follows a response to the close when it says so: %s', async (_name, answer) => {
    // Complete by its length or not, the answer ends only when the server closes (then closedByServer).
    expect(responseFraming(Buffer.from(answer), ['GET']).closes).toBe(true)
    const port = await scripted([answer], { close: true })
    expect(await rawExchange(port, GET)).toEqual({ text: answer, closedByServer: true })
  })

  it('fails past its guard when the answer never ends, with what arrived', async () => {
    const port = await scripted(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf'])
    await expect(rawExchange(port, GET, { guardMs: 200 })).rejects.toThrow(/no end to the exchange.*half/)
  })
})
