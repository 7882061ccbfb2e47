// The proxy reached through Hono's fallback route with a web Request (app.request()).

import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createApp, createRequestListener, type AppDeps } from '../app.ts'
import type { BodyLoan } from '../cache/types.ts'
import { silentLogger } from '../log.ts'
import { nodeProxyListener } from './http-adapter.ts'
import type { Proxy, ProxyResult } from './proxy.ts'
import { startNode, startOrigin, whenReached } from '../test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

/** A caje node in front of an origin that answers every request with `body` and `cacheControl`. */
async function nodeInFrontOf(cacheControl: string, body: string): Promise<{ origin: Awaited<ReturnType<typeof startOrigin>>; node: Awaited<ReturnType<typeof startNode>> }> {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'cache-control': cacheControl, 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url)
  cleanups.push(() => node.close())
  return { origin, node }
}

/** A GET to `port` for site.test; resolves with the body, or 'gone' when the connection drops. */
function get(port: number, path: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host: 'site.test', ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve(Buffer.concat(chunks).toString()))
      res.on('error', () => resolve('gone'))
    })
    req.on('error', () => resolve('gone'))
  })
}

describe('proxy behind app.request()', () => {
  it('never takes a client X-Real-IP for the client address', async () => {
    const { origin, node } = await nodeInFrontOf('no-store', 'ok')
    const app = createApp({ config: node.config, store: node.store, proxy: node.proxy, log: silentLogger })
    const res = await app.request('/ip', { headers: { host: 'site.test', 'x-real-ip': '6.6.6.6' } })
    expect(await res.text()).toBe('ok')
    const seen = origin.requests.find((r) => r.url === '/ip')!
    expect(String(seen.headers['x-forwarded-for'] ?? '')).not.toContain('6.6.6.6')
    expect(seen.headers['x-real-ip']).toBeUndefined()
  })
})

describe('an origin body that fails', () => {
  /**
   * A node whose origin sends the head of /fail (and `body`, when given) and holds the rest; it drops the
   * origin's connection once the proxy has its answer (the head is in). `app` reaches the same
   * proxy through app.request().
   */
  async function failingOrigin(body?: string) {
    let held: http.ServerResponse | undefined
    const origin = await startOrigin((req, res) => {
      if (req.url !== '/fail') return res.end('ok')
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': '100' })
      if (body === undefined) res.flushHeaders()
      else res.write(body)
      held = res
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_ORIGIN_TIMEOUT_MS: '600000', CAJE_ORIGIN_BODY_TIMEOUT_MS: '600000' })
    cleanups.push(() => node.close())
    const serve = node.proxy.serve.bind(node.proxy)
    // The proxy has the origin's head (its answer came): only then does the origin drop the connection.
    node.proxy.serve = (req) => {
      const answer = serve(req)
      void Promise.resolve(answer).then(() => {
        held?.destroy()
      })
      return answer
    }
    const app = createApp({ config: node.config, store: node.store, proxy: node.proxy, log: silentLogger })
    return { node, app }
  }

  // RFC 9110 §15.6.3: nothing of the origin's answer reached the client, so it gets a clear 502, not an empty 200.
  it('answers 502 when it fails before its first byte, through app.request()', async () => {
    const { app } = await failingOrigin()
    const res = await app.request('/fail', { headers: { host: 'site.test' } })
    expect(res.status).toBe(502)
    expect(res.headers.get('cache-status')).toMatch(/detail=/)
    expect(await res.text()).toMatch(/^502 Bad Gateway: origin .* closed the connection/)
  })

  it('answers 502 when it fails before its first byte, on the Node listener', async () => {
    const { node } = await failingOrigin()
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: node.port, path: '/fail', headers: { host: 'site.test' }, agent: false }, (r) => {
          const chunks: Buffer[] = []
          r.on('data', (c: Buffer) => chunks.push(c))
          r.on('end', () => resolve({ status: r.statusCode!, body: Buffer.concat(chunks).toString() }))
        })
        .on('error', reject)
    })
    expect(res.status).toBe(502)
    expect(res.body).toMatch(/^502 Bad Gateway: origin .* closed the connection/)
  })

  it('fails the body read when it fails after its first byte, through app.request()', async () => {
    const { app } = await failingOrigin('first bytes')
    const res = await app.request('/fail', { headers: { host: 'site.test' } })
    // The head went out with the first bytes: the status stays, and the body is cut, never complete-looking.
    expect(res.status).toBe(200)
    await expect(res.text()).rejects.toThrow()
  })
})

describe('answers without a body, through app.request()', () => {
  it('answers a client conditional on a stored entry with a 304 and no body', async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=600', etag: '"v1"', 'content-length': '5' })
      res.end('hello')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const app = createApp({ config: node.config, store: node.store, proxy: node.proxy, log: silentLogger })
    expect(await (await app.request('/c', { headers: { host: 'site.test' } })).text()).toBe('hello')
    await whenReached(node.store, async () => (await node.store.variants('http://site.test/c')).length === 1)
    const res = await app.request('/c', { headers: { host: 'site.test', 'if-none-match': '"v1"' } })
    expect(res.status).toBe(304)
    expect(res.body).toBeNull()
    expect(res.headers.get('cache-status')).toMatch(/hit/)
  })
})

describe('a client that leaves before its answer', () => {
  it('ends the origin request at once, for a cache miss and for a pass-through', async () => {
    // The origin never answers: only the client's leaving can end its requests (the timeouts are far away).
    const arrived = new Map<string, () => void>()
    const closed = new Map<string, Promise<void>>()
    const origin = await startOrigin((req, res) => {
      // The response is never ended, so it closes only when caje drops the connection.
      closed.set(req.url!, new Promise((resolve) => res.once('close', () => resolve())))
      arrived.get(req.url!)?.()
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, { CAJE_ORIGIN_TIMEOUT_MS: '600000', CAJE_ORIGIN_BODY_TIMEOUT_MS: '600000' })
    cleanups.push(() => node.close())
    for (const path of ['/miss', '/pass']) {
      const atOrigin = new Promise<void>((resolve) => arrived.set(path, resolve))
      const client = http.request({ host: '127.0.0.1', port: node.port, path, method: path === '/pass' ? 'POST' : 'GET', headers: { host: 'site.test' } })
      client.on('error', () => {})
      client.end()
      await atOrigin
      client.destroy()
      await closed.get(path)
    }
    expect(origin.requests.map((r) => r.url)).toEqual(['/miss', '/pass'])
  })
})

describe('answers whole in memory, written at the end of the turn', () => {
  it('writes nothing to a client that left while its hit waited, and logs it as cut', async () => {
    const { node } = await nodeInFrontOf('max-age=600', 'hello')
    const lines: Record<string, unknown>[] = []
    let threeLogged!: () => void
    const logged = new Promise<void>((resolve) => (threeLogged = resolve))
    const deps: AppDeps = {
      config: { ...node.config, accessLog: true },
      store: node.store,
      proxy: node.proxy,
      log: (entry) => {
        lines.push(entry)
        if (lines.filter((l) => l.msg === 'request').length === 3) threeLogged()
      },
    }
    const server = http.createServer(createRequestListener(createApp(deps), deps))
    // Runs after caje's listener, in the same turn: the client is gone before its answer is written.
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.headers['x-leave'] !== undefined) res.destroy()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())))
    const port = (server.address() as AddressInfo).port

    expect(await get(port, '/a')).toBe('hello')
    await whenReached(node.store, async () => (await node.store.variants('http://site.test/a')).length === 1)
    expect(await get(port, '/a', { 'x-leave': '1' })).toBe('gone')
    expect(await get(port, '/a')).toBe('hello')
    // A line is logged once its exchange has closed.
    await logged
    const requests = lines.filter((l) => l.msg === 'request')
    expect(requests.map((l) => [l.cache, l.bytes, l.aborted])).toEqual([
      [expect.stringContaining('fwd=uri-miss'), 5, undefined],
      [expect.stringContaining('hit'), 0, true],
      [expect.stringContaining('hit'), 5, undefined],
    ])
  })
})

describe('a body lent by the store', () => {
  /** A counter of giveBack() calls, and a promise of the first. */
  function spyLoan(inner?: BodyLoan): BodyLoan & { given: number; back: Promise<void> } {
    let resolve!: () => void
    const back = new Promise<void>((r) => (resolve = r))
    const loan = {
      given: 0,
      back,
      giveBack() {
        loan.given++
        inner?.giveBack()
        resolve()
      },
    }
    return loan
  }

  it('is given back once its answer is written, for a memory hit', async () => {
    const { node } = await nodeInFrontOf('max-age=600', 'hello')
    const loans: ReturnType<typeof spyLoan>[] = []
    const proxy: Proxy = {
      ...node.proxy,
      serve: (req) => {
        const lend = (result: ProxyResult): ProxyResult => {
          if (result.loan) {
            const loan = spyLoan(result.loan)
            loans.push(loan)
            result.loan = loan
          }
          return result
        }
        const result = node.proxy.serve(req)
        return result instanceof Promise ? result.then(lend) : lend(result)
      },
    }
    const deps: AppDeps = { config: node.config, store: node.store, proxy, log: silentLogger }
    const server = http.createServer(createRequestListener(createApp(deps), deps))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())))
    const port = (server.address() as AddressInfo).port

    expect(await get(port, '/a')).toBe('hello')
    await whenReached(node.store, async () => (await node.store.variants('http://site.test/a')).length === 1)
    // Written to disk, the body stays in the memory tier: the next request is a memory hit.
    await node.store.drain()
    expect(await get(port, '/a')).toBe('hello')
    expect(loans.length).toBeGreaterThan(0)
    await Promise.all(loans.map((l) => l.back))
    expect(loans.every((l) => l.given === 1)).toBe(true)
  })

  it('is given back once copied into the Response, for a memory hit reached through app.request()', async () => {
    const body = Buffer.from('lent bytes')
    const loan = spyLoan()
    const proxy = { serve: (): ProxyResult => ({ status: 200, headers: { 'content-length': String(body.length) }, body, cacheStatus: { hit: true }, tier: 'memory', loan }) } as unknown as Proxy
    const { node } = await nodeInFrontOf('max-age=600', 'unused')
    const res = await createApp({ config: node.config, store: node.store, proxy, log: silentLogger }).request('/lent', { headers: { host: 'site.test' } })
    // The store may reuse the bytes once given back: the Response holds its own copy.
    expect(loan.given).toBe(1)
    body.fill(0)
    expect(await res.text()).toBe('lent bytes')
  })

  it('is kept while a slow client still reads it, and given back when it leaves', async () => {
    // Far more than the socket buffers of both ends take: the answer is still being written.
    const body = Buffer.alloc(64 * 1024 * 1024, 7)
    const loan = spyLoan()
    const proxy = { serve: (): ProxyResult => ({ status: 200, headers: { 'content-length': String(body.length) }, body, cacheStatus: { hit: true }, tier: 'memory', loan }) } as unknown as Proxy
    const server = http.createServer(nodeProxyListener({ proxy, log: silentLogger, accessLog: false, trustForwarded: false }))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())))
    const client = net.connect((server.address() as AddressInfo).port, '127.0.0.1')
    client.on('error', () => {})
    client.write('GET /big HTTP/1.1\r\nHost: site.test\r\n\r\n')
    // The first bytes arrive once the answer was handed to the socket; then the client stops reading.
    await new Promise((resolve) => client.once('data', resolve))
    client.pause()
    expect(loan.given).toBe(0)
    client.destroy()
    await loan.back
    expect(loan.given).toBe(1)
  })
})

describe('a connection kept alive across memory hits', () => {
  /** Everything the node sends on `socket` until `count` responses have begun. */
  function responses(socket: net.Socket, count: number): Promise<string> {
    return new Promise((resolve, reject) => {
      let text = ''
      const onData = (chunk: Buffer) => {
        text += chunk.toString('latin1')
        if (text.split('HTTP/1.1 200 OK').length - 1 >= count) {
          socket.off('data', onData)
          resolve(text)
        }
      }
      socket.on('data', onData)
      socket.once('close', () => reject(new Error(`connection closed after: ${text}`)))
    })
  }

  it('reads the next request after a hit answered before its request body had arrived', async () => {
    const { node } = await nodeInFrontOf('max-age=600', 'stored body')
    expect(await get(node.port, '/hit')).toBe('stored body')
    const socket = net.connect(node.port, '127.0.0.1')
    cleanups.push(async () => void socket.destroy())
    await new Promise<void>((resolve) => socket.once('connect', resolve))
    // A GET may carry a body (RFC 9110 §9.3.1); the hit is answered from memory before it has
    // arrived. It is larger than a request stream buffers unread: unless it is drained, Node stops
    // reading the connection and the next request is never seen.
    const body = Buffer.alloc(1024 * 1024, 'x')
    const first = responses(socket, 1)
    socket.write(`GET /hit HTTP/1.1\r\nHost: site.test\r\nContent-Length: ${body.length}\r\n\r\n`)
    expect(await first).toContain('cache-status: caje; hit')
    const second = responses(socket, 1)
    socket.write(body)
    socket.write('GET /hit HTTP/1.1\r\nHost: site.test\r\n\r\n')
    expect(await second).toContain('stored body')
  })

  it('reads the next request after a hit whose request body came with its head', async () => {
    const { node } = await nodeInFrontOf('max-age=600', 'stored body')
    expect(await get(node.port, '/hit')).toBe('stored body')
    const socket = net.connect(node.port, '127.0.0.1')
    cleanups.push(async () => void socket.destroy())
    // More body than a request stream buffers unread: Node stops reading the connection until
    // the body is drained, and the request behind it is seen only then.
    const body = Buffer.alloc(1024 * 1024, 'x')
    const answers = responses(socket, 2)
    socket.write(Buffer.concat([Buffer.from(`GET /hit HTTP/1.1\r\nHost: site.test\r\nContent-Length: ${body.length}\r\n\r\n`), body, Buffer.from('GET /hit HTTP/1.1\r\nHost: site.test\r\n\r\n')]))
    expect((await answers).split('stored body').length - 1).toBe(2)
  })

  it('answers hits one after another on the same connection', async () => {
    const { node } = await nodeInFrontOf('max-age=600', 'stored body')
    expect(await get(node.port, '/hit')).toBe('stored body')
    const socket = net.connect(node.port, '127.0.0.1')
    cleanups.push(async () => void socket.destroy())
    for (let i = 0; i < 3; i++) {
      const answer = responses(socket, 1)
      socket.write('GET /hit HTTP/1.1\r\nHost: site.test\r\n\r\n')
      expect(await answer).toContain('stored body')
    }
  })
})

describe('a field set shared by many answers', () => {
  /** A Node server whose proxy answers every request with `headers` and `body`. */
  async function serving(headers: Record<string, string>, body: Buffer): Promise<number> {
    const proxy = { serve: (): ProxyResult => ({ status: 200, headers, body, cacheStatus: { hit: true }, tier: 'memory' }) } as unknown as Proxy
    const server = http.createServer(nodeProxyListener({ proxy, log: silentLogger, accessLog: false, trustForwarded: false }))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())))
    return (server.address() as AddressInfo).port
  }

  /** The raw bytes of one answer to GET /x on a new connection. */
  function raw(port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1')
      let text = ''
      socket.on('data', (c: Buffer) => {
        text += c.toString('latin1')
        if (text.endsWith('body')) socket.end()
      })
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
      socket.write('GET /x HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n')
    })
  }

  it('writes the same head as its own fields would, on every answer', async () => {
    const fields = { 'content-type': 'text/plain', 'content-length': '4', age: '3', 'cache-status': 'caje; hit; ttl=5', date: 'Mon, 01 Jan 2024 00:00:00 GMT' }
    const shared = await serving(Object.freeze({ ...fields }), Buffer.from('body'))
    const own = await serving({ ...fields }, Buffer.from('body'))
    const expected = await raw(own)
    expect(expected).toContain('\r\nage: 3\r\ncache-status: caje; hit; ttl=5\r\n')
    expect(await raw(shared)).toBe(expected)
    expect(await raw(shared)).toBe(expected)
  })

  it('is refused like any field set when Node refuses one of its values: a 500, never the value on the wire', async () => {
    const port = await serving(Object.freeze({ 'content-length': '4', 'x-bad': 'a\u0001b' }), Buffer.from('body'))
    for (let i = 0; i < 2; i++) {
      const answer = await raw(port)
      expect(answer).toMatch(/^HTTP\/1\.1 500 /)
      expect(answer).not.toContain('x-bad')
    }
  })
})

describe('requests refused before the proxy', () => {
  /** The raw answer to `request` on a new connection. */
  function exchange(port: number, request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1')
      let text = ''
      socket.on('data', (c: Buffer) => void (text += c.toString('latin1')))
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
      socket.write(request)
    })
  }

  it('answers 400 to two Host fields and to a Host that is no host name (RFC 9112 §3.2)', async () => {
    const { origin, node } = await nodeInFrontOf('max-age=600', 'never sent')
    const twice = await exchange(node.port, 'GET /a HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\nConnection: close\r\n\r\n')
    expect(twice).toMatch(/^HTTP\/1\.1 400 /)
    expect(twice).toContain('more than one Host header')
    const bad = await exchange(node.port, 'GET /a HTTP/1.1\r\nHost: site.test/evil\r\nConnection: close\r\n\r\n')
    expect(bad).toMatch(/^HTTP\/1\.1 400 /)
    expect(bad).toContain('not a valid host name')
    expect(origin.requests).toEqual([])
  })

  it('refuses an absolute-form target naming another host than Host, and serves one naming the same (RFC 9112 §3.2.2)', async () => {
    const { origin, node } = await nodeInFrontOf('max-age=600', 'the body')
    const other = await exchange(node.port, 'GET http://other.test/a HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n')
    expect(other).toMatch(/^HTTP\/1\.1 400 /)
    expect(other).toContain('the request target names the host "other.test" but the Host header names "site.test"')
    expect(origin.requests).toEqual([])
    const same = await exchange(node.port, 'GET http://SITE.test:80/a HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n')
    expect(same).toMatch(/^HTTP\/1\.1 200 /)
    expect(same).toContain('the body')
    expect(origin.requests.map((r) => r.url)).toEqual(['/a'])
  })
})

describe('accounting of answers written at the end of the turn', () => {
  it('names the time they were sent', async () => {
    const seen: number[] = []
    const proxy = { serve: (): ProxyResult => ({ status: 200, headers: { 'content-length': '2' }, body: Buffer.from('ok'), cacheStatus: { hit: true }, tier: 'memory' }) } as unknown as Proxy
    const server = http.createServer(nodeProxyListener({ proxy, log: silentLogger, accessLog: false, trustForwarded: false, onServed: (_r, _b, _q, at) => void seen.push(at ?? NaN) }))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())))
    const before = Date.now()
    await Promise.all([get((server.address() as AddressInfo).port, '/a'), get((server.address() as AddressInfo).port, '/b')])
    const after = Date.now()
    expect(seen).toHaveLength(2)
    for (const at of seen) {
      expect(at).toBeGreaterThanOrEqual(before)
      expect(at).toBeLessThanOrEqual(after)
    }
  })
})
