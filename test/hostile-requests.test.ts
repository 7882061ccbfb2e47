// Hardening: requests a hostile client sends on purpose. Raw sockets, because
// fetch refuses to send most of these. Each test checks what the client gets,
// what the origin saw (nothing smuggled, nothing spoofed), and what was stored.

import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, whenReached, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'
import { filesUnder } from '../src/cache/test-support.ts'
import { get, rawExchange, statusCodes } from './support/raw.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

/** An origin that echoes what it was asked, so a test can see what reached it; cacheable for a minute. */
async function setup(env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin((req, res, body) => {
    res.writeHead(200, { 'cache-control': 'max-age=60', 'content-type': 'text/plain' })
    res.end(`origin page for ${req.method} ${req.url}${body ? ` body=${body}` : ''}`)
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}

/** Requests the origin saw that a test did not send on purpose. */
const smuggledSeen = (origin: TestOrigin) => origin.requests.filter((r) => r.url.includes('smuggled'))

describe('request smuggling', () => {
  // Each payload ends in a second request that only exists if some parser framed the first one
  // differently from Node: if it ever reaches the origin, caje and its origin disagree on framing.
  const SMUGGLED = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n'
  it.each([
    ['Content-Length with Transfer-Encoding (CL.TE)', `POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG${SMUGGLED}`],
    ['Transfer-Encoding with Content-Length (TE.CL)', `POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n${(SMUGGLED.length + 5).toString(16)}\r\nxxxx ${SMUGGLED}\r\n0\r\n\r\n`],
    ['two differing Content-Length fields', `POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: ${5 + SMUGGLED.length}\r\n\r\nhello${SMUGGLED}`],
    ['a Content-Length list', `POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, ${5 + SMUGGLED.length}\r\n\r\nhello${SMUGGLED}`],
    ['obs-fold in an ordinary field', `GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\n\r\n${SMUGGLED}`],
    ['obs-fold hiding Transfer-Encoding', `POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Foo: bar\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['Transfer-Encoding not ending in chunked', `POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['an unknown Transfer-Encoding (xchunked)', `POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`],
    ['whitespace before the colon', `POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`],
    ['bare LF line endings', `GET /a HTTP/1.1\nHost: x\nContent-Length: 0\n\n${SMUGGLED}`],
    ['an invalid chunk size', `POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n${SMUGGLED}`],
  ])('%s → 400 and the connection is closed; the origin sees nothing', async (_name, payload) => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, payload)
    expect(statusCodes(r.text)).toEqual([400])
    expect(r.closedByServer).toBe(true)
    expect(smuggledSeen(origin)).toEqual([])
    expect(origin.requests).toEqual([])
    expect(node.store.stats().entries).toBe(0)
    // caje is still fine for everyone else.
    expect((await get(node.url + '/after')).status).toBe(200)
  })

  it('a GET with a body: the body is not forwarded, so a request hidden in it never reaches the origin', async () => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, `GET /with-body HTTP/1.1\r\nHost: x\r\nContent-Length: ${SMUGGLED.length}\r\nConnection: close\r\n\r\n${SMUGGLED}`)
    expect(statusCodes(r.text)).toEqual([200])
    expect(r.text).toContain('origin page for GET /with-body')
    expect(origin.requests.map((q) => q.url)).toEqual(['/with-body'])
    expect(origin.requests[0]!.headers['content-length']).toBeUndefined()
    expect(origin.requests[0]!.body).toBe('')
  })

  it('pipelined requests are answered in order, each forwarded once with its own body', async () => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, 'POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    expect(statusCodes(r.text)).toEqual([200, 200])
    expect(r.text.indexOf('POST /one body=abc')).toBeLessThan(r.text.indexOf('GET /two'))
    expect(origin.requests.map((q) => `${q.method} ${q.url} ${q.body}`)).toEqual(['POST /one abc', 'GET /two '])
  })
})

describe('absurd headers', () => {
  it('a pathological Cache-Control request header is parsed in linear time: caje does not stall', async () => {
    // An unterminated quoted-string full of backslashes once sent the directive parser into
    // exponential backtracking (26 pairs: a second of blocked event loop per request, doubling
    // with each pair). 34 pairs would block for minutes, far past the test's timeout; parsed
    // linearly, both requests are answered.
    const { node } = await setup()
    const r = await get(node.url + '/cc', { 'cache-control': `no-cache, x="${'a\\'.repeat(34)}` })
    expect(r.status).toBe(200)
    const big = await get(node.url + '/cc', { 'cache-control': `x="${'\\"'.repeat(7_000)}` })
    expect(big.status).toBe(200)
  })

  it.each([
    ['one 100 KB header', `GET /big HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`],
    ['5,000 header fields', `GET /big HTTP/1.1\r\nHost: x\r\n${'X-A: b\r\n'.repeat(5_000)}\r\n`],
    ['a 20 KB query string', `GET /q?${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['a 1 MB query string', `GET /q?${'a'.repeat(1_000_000)} HTTP/1.1\r\nHost: x\r\n\r\n`],
  ])('%s → 431, closed, nothing forwarded', async (_name, payload) => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, payload)
    expect(statusCodes(r.text)).toEqual([431])
    expect(r.closedByServer).toBe(true)
    expect(origin.requests).toEqual([])
  })

  it('an 8 KB query string is forwarded whole and keyed whole: one character apart is another entry', async () => {
    const { origin, node } = await setup()
    const q = 'a'.repeat(8_000)
    const one = await get(`${node.url}/q?${q}1`)
    expect(one.status).toBe(200)
    expect(one.body.toString()).toBe(`origin page for GET /q?${q}1`)
    await node.stored(`/q?${q}1`)
    const two = await get(`${node.url}/q?${q}2`)
    expect(two.body.toString()).toBe(`origin page for GET /q?${q}2`)
    expect((await get(`${node.url}/q?${q}1`)).headers['cache-status']).toMatch(/^caje; hit/)
    expect(origin.requests.map((r) => r.url.slice(-1))).toEqual(['1', '2'])
  })
})

describe('methods', () => {
  it.each([
    ['characters outside token', 'G@T / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['an unknown method', 'FOO / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a lower-case method', 'get / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a NUL in the method', 'GE\0T / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['an HTTP version that does not exist', 'GET / HTTP/7.3\r\nHost: x\r\n\r\n'],
  ])('%s → 400, nothing forwarded', async (_name, payload) => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, payload)
    expect(statusCodes(r.text)[0]).toBeGreaterThanOrEqual(400)
    expect(statusCodes(r.text)[0]).toBeLessThan(500)
    expect(r.closedByServer).toBe(true)
    expect(origin.requests).toEqual([])
  })

  it('CONNECT is not tunnelled anywhere', async () => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n\r\n`)
    expect(r.closedByServer).toBe(true)
    expect(r.text).not.toMatch(/^HTTP\/1\.1 2/)
    expect(origin.requests).toEqual([])
  })

  it('an unusual but valid method is forwarded and never stored', async () => {
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, 'PROPFIND /dav HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    expect(statusCodes(r.text)).toEqual([200])
    expect(r.text).toContain('cache-status: caje; fwd=method; fwd-status=200')
    expect(origin.requests.map((q) => q.method)).toEqual(['PROPFIND'])
    expect(node.store.stats().entries).toBe(0)
  })

  it('a POST with Expect: 100-continue gets 100 Continue and then the origin answer', async () => {
    // curl sends Expect: 100-continue for bodies over 1 MB; Node answers the 100 itself.
    const { origin, node } = await setup()
    const r = await rawExchange(node.port, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello')
    expect(statusCodes(r.text)).toEqual([100, 200])
    expect(r.text).toContain('origin page for POST /upload body=hello')
    expect(origin.requests).toHaveLength(1)
    expect(origin.requests[0]!.headers.expect).toBeUndefined()
  })
})

describe("caje's own namespace cannot be reached around its prefix", () => {
  const TOKEN = 'metrics-token-for-hardening-tests'
  /** Must stay inside caje: the origin never sees them, they are never stored, and never answered with admin content. */
  const INSIDE = [
    '/../_caje/list',
    '/%2e%2e/_caje/list',
    '/%2E%2E/_caje/list',
    '/x/../_caje/list',
    '/_caje/./list',
    '/%5Fcaje/list',
    '/%5fcaje/list',
    '/_caje/%6cist',
    '/../_caje/metrics',
    '/%5Fcaje/metrics',
    '/_caje/./metrics',
    '/_caje/x/../metrics',
  ]
  /** Not caje's namespace (different paths under RFC 3986 §6.2.2): ordinary resources, forwarded in their canonical spelling. */
  const OUTSIDE = [
    ['//_caje/list', '//_caje/list'],
    ['/_CAJE/list', '/_CAJE/list'],
    ['/_Caje/metrics', '/_Caje/metrics'],
    ['/_caje%2flist', '/_caje%2Flist'],
    ['/%2F_caje/list', '/%2F_caje/list'],
    ['/_cajex/list', '/_cajex/list'],
    ['/x/_caje/list', '/x/_caje/list'],
  ]

  /** Status and Location path (the sign-in redirect's ?next= echoes the path as sent, which may be spelled differently). */
  const head = (text: string) => ({ status: statusCodes(text)[0], location: /\r\nlocation: ([^\r?]*)/i.exec(text)?.[1] })

  it.each(INSIDE)('%s is handled by caje like its canonical path: no admin content without credentials, not forwarded, not stored', async (path) => {
    const { origin, node } = await setup({ CAJE_METRICS_TOKEN: TOKEN })
    const canonical = path.toLowerCase().includes('metrics') ? '/_caje/metrics' : '/_caje/list'
    const r = await rawExchange(node.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    const expected = await rawExchange(node.port, `GET ${canonical} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    expect(head(r.text)).toEqual(head(expected.text))
    const { status, location } = head(r.text)
    // 401/403 (credentials needed), 404 (no such route), or a redirect to sign-in under /_caje.
    expect([301, 302, 303, 307, 308, 401, 403, 404]).toContain(status)
    if (status! >= 300 && status! < 400) expect(location).toMatch(/^(https?:\/\/[^/]+)?\/_caje\/auth/)
    expect(r.text).not.toMatch(/# HELP|# TYPE|caje_requests|origin page/)
    expect(r.text.toLowerCase()).toContain('cache-control: no-store')
    expect(origin.requests).toEqual([])
    expect(node.store.stats().entries).toBe(0)
  })

  it.each(['/../_caje/clear_fs', '/%5Fcaje/clear_fs', '/_caje/./clear_fs', '/%2e%2e/_caje/clear_fs'])('POST %s without a session changes nothing', async (path) => {
    const { origin, node } = await setup({ CAJE_METRICS_TOKEN: TOKEN })
    await get(node.url + '/keep-me')
    await node.stored('/keep-me')
    const r = await rawExchange(node.port, `POST ${path} HTTP/1.1\r\nHost: ${new URL(node.url).host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    expect([303, 401, 403, 404]).toContain(statusCodes(r.text)[0])
    expect(node.store.stats().entries).toBe(1)
    expect(origin.requests.map((q) => q.url)).toEqual(['/keep-me'])
  })

  it('absolute-form targets are routed by their path too', async () => {
    const { origin, node } = await setup({ CAJE_METRICS_TOKEN: TOKEN })
    const r = await rawExchange(node.port, 'GET http://elsewhere.test/_caje/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    expect(statusCodes(r.text)).toEqual([401])
    expect(r.text).not.toMatch(/# HELP/)
    expect(origin.requests).toEqual([])
  })

  it.each(OUTSIDE)('%s is an ordinary path: forwarded to the origin as %s', async (path, canonical) => {
    const { origin, node } = await setup({ CAJE_METRICS_TOKEN: TOKEN })
    const r = await rawExchange(node.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    expect(statusCodes(r.text)).toEqual([200])
    expect(r.text).toContain(`origin page for GET ${canonical}`)
    expect(r.text).not.toMatch(/# HELP/)
    expect(origin.requests.map((q) => q.url)).toEqual([canonical])
  })

  it('the real admin route still answers (sanity check of the token)', async () => {
    const { node } = await setup({ CAJE_METRICS_TOKEN: TOKEN })
    const r = await get(node.url + '/_caje/metrics', { authorization: `Bearer ${TOKEN}` })
    expect(r.status).toBe(200)
    expect(r.body.toString()).toMatch(/# HELP/)
  })
})

describe('Host and X-Forwarded-* spoofing', () => {
  /** An origin that renders the forwarding fields into a cacheable body: the classic cache-poisoning target. */
  async function reflecting(env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
    const origin = await startOrigin((req, res) => {
      const h = req.headers
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' })
      res.end(`<a href="${h['x-forwarded-proto']}://${h['x-forwarded-host']}/next"> host=${h.host} fwd=${h.forwarded ?? ''} xff=${h['x-forwarded-for']} real=${h['x-real-ip'] ?? ''} port=${h['x-forwarded-port'] ?? ''}`)
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, env)
    cleanups.push(() => node.close())
    return { origin, node }
  }
  const SPOOF = {
    'x-forwarded-host': 'evil.example',
    'x-forwarded-proto': 'https',
    'x-forwarded-port': '6666',
    'x-forwarded-for': '6.6.6.6',
    'x-real-ip': '6.6.6.6',
    forwarded: 'for=6.6.6.6;host=evil.example;proto=https',
  }

  it('drops client X-Forwarded-* / Forwarded, so the cached body another user gets is clean', async () => {
    const { origin, node } = await reflecting()
    const host = new URL(node.url).host
    const attacker = await get(node.url + '/page', SPOOF)
    expect(attacker.body.toString()).not.toMatch(/evil|6\.6\.6\.6|6666/)
    expect(attacker.body.toString()).toContain(`href="http://${host}/next"`)
    await node.stored('/page')
    const victim = await get(node.url + '/page')
    expect(victim.headers['cache-status']).toMatch(/^caje; hit/)
    expect(victim.body.toString()).toBe(attacker.body.toString())
    expect(origin.requests).toHaveLength(1)
    expect(origin.requests[0]!.headers['x-forwarded-for']).toBe('127.0.0.1')
  })

  it('with CAJE_TRUST_FORWARDED the forwarded host is part of the key, so it still cannot poison another host', async () => {
    const { origin, node } = await reflecting({ CAJE_TRUST_FORWARDED: 'true' })
    const host = new URL(node.url).host
    const attacker = await get(node.url + '/page', { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' })
    expect(attacker.body.toString()).toContain('href="https://evil.example/next"')
    await waitStored(node, 'https://evil.example/page')
    const victim = await get(node.url + '/page')
    expect(victim.body.toString()).toContain(`href="http://${host}/next"`)
    expect(victim.headers['cache-status']).toMatch(/fwd=uri-miss/)
    expect(origin.requests).toHaveLength(2)
  })

  it('naming a Vary’d field in Connection cannot store a page the origin rendered without it under that field’s variant', async () => {
    // RFC 9110 §7.6.1 makes caje drop fields listed in Connection before forwarding, so the origin
    // renders the default page; that page must not become the variant for the value the client sent.
    const origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'X-Lang' })
      res.end(req.headers['x-lang'] === 'fr' ? 'bonjour' : 'hello')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const attacker = await get(node.url + '/greeting', { 'x-lang': 'fr', connection: 'close, x-lang' })
    expect(attacker.body.toString()).toBe('hello')
    expect(origin.requests[0]!.headers['x-lang']).toBeUndefined()
    // The attacker's page is stored (under whichever variant): then the French request comes.
    await waitStored(node, `http://${new URL(node.url).host}/greeting`)
    const french = await get(node.url + '/greeting', { 'x-lang': 'fr' })
    expect(french.body.toString()).toBe('bonjour')
    const english = await get(node.url + '/greeting')
    expect(english.body.toString()).toBe('hello')
  })

  it('header names that are Object.prototype members are ordinary fields, also when Vary names them', async () => {
    const origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60', vary: 'Constructor, __proto__, toString' })
      res.end(`constructor=${req.headers.constructor === Object ? '' : String(req.headers.constructor)}`)
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const host = new URL(node.url).host
    const r = await rawExchange(node.port, `GET /proto HTTP/1.1\r\nHost: ${host}\r\nConstructor: a\r\n__proto__: b\r\ntoString: c\r\nhasOwnProperty: d\r\nConnection: close\r\n\r\n`)
    expect(statusCodes(r.text)).toEqual([200])
    expect(r.text).toContain('constructor=a')
    await node.stored('/proto')
    const plain = await get(node.url + '/proto')
    expect(plain.status).toBe(200)
    expect(plain.body.toString()).toBe('constructor=')
    const again = await rawExchange(node.port, `GET /proto HTTP/1.1\r\nHost: ${host}\r\nConstructor: a\r\n__proto__: b\r\ntoString: c\r\nConnection: close\r\n\r\n`)
    expect(again.text).toMatch(/cache-status: caje; hit/)
    expect(again.text).toContain('constructor=a')
  })

  it('a spoofed Host is its own key: it never fills the entry of the real host', async () => {
    const { origin, node } = await reflecting()
    const attacker = await get(node.url + '/page', { host: 'evil.example' })
    expect(attacker.status).toBe(200)
    await waitStored(node, 'http://evil.example/page')
    const victim = await get(node.url + '/page')
    expect(victim.body.toString()).not.toContain('evil')
    expect(victim.headers['cache-status']).toMatch(/fwd=uri-miss/)
    expect(origin.requests).toHaveLength(2)
  })

  it('equivalent spellings of one Host share one entry (case, default port, trailing dot)', async () => {
    const { origin, node } = await reflecting()
    const bodies: string[] = []
    for (const host of ['site.test', 'SITE.Test', 'site.test:80', 'site.test.']) {
      const r = await get(node.url + '/page', { host })
      bodies.push(r.body.toString())
      await waitStored(node, 'http://site.test/page')
    }
    expect(new Set(bodies).size).toBe(1)
    expect(origin.requests).toHaveLength(1)
  })

  it.each([
    ['two Host fields', 'Host: site.test\r\nHost: evil.example\r\n'],
    ['a Host with a space', 'Host: site.test evil.example\r\n'],
    ['a Host with userinfo', 'Host: evil.example@site.test\r\n'],
    ['a Host with a path', 'Host: site.test/evil\r\n'],
  ])('%s → 400, nothing forwarded (RFC 9112 §3.2)', async (_name, hostLines) => {
    const { origin, node } = await reflecting()
    const r = await rawExchange(node.port, `GET /page HTTP/1.1\r\n${hostLines}Connection: close\r\n\r\n`)
    expect(statusCodes(r.text)).toEqual([400])
    expect(origin.requests).toEqual([])
    expect(node.store.stats().entries).toBe(0)
  })

  it('an absolute-form target naming another site cannot put one site’s page under another’s key', async () => {
    const a = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('site A')
    })
    const b = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('site B')
    })
    cleanups.push(() => a.close(), () => b.close())
    const node = await startNode('', { CAJE_ORIGIN: '', CAJE_SITES: `a.test=${a.url},b.test=${b.url}` })
    cleanups.push(() => node.close())
    await rawExchange(node.port, 'GET http://b.test/page HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n')
    await rawExchange(node.port, 'GET http://a.test/page HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n')
    expect((await get(node.url + '/page', { host: 'a.test' })).body.toString()).toBe('site A')
    expect((await get(node.url + '/page', { host: 'b.test' })).body.toString()).toBe('site B')
  })
})

/** Wait until a key (full URL) has a stored variant. */
async function waitStored(node: TestNode, key: string): Promise<void> {
  await whenReached(node.store, async () => (await node.store.variants(key)).length > 0)
}

describe('Set-Cookie with CAJE_CACHE_SET_COOKIE=true', () => {
  /** An origin that hands every request a cookie of its own on a cacheable page. */
  async function cookieOrigin(env: Record<string, string>): Promise<{ origin: TestOrigin; node: TestNode; cookies: string[] }> {
    const cookies: string[] = []
    const origin = await startOrigin((_req, res) => {
      const cookie = `session=secret-${cookies.length}-${Math.random().toString(36).slice(2)}`
      cookies.push(cookie)
      res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain', 'set-cookie': [`${cookie}; HttpOnly`, 'theme=dark'] })
      res.end('the same page for everyone')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url, env)
    cleanups.push(() => node.close())
    return { origin, node, cookies }
  }

  it('the page is stored and served to the next client without the first client’s Set-Cookie; the cookie is nowhere on disk', async () => {
    const { origin, node, cookies } = await cookieOrigin({ CAJE_CACHE_SET_COOKIE: 'true' })
    const first = await node.get('/page')
    expect(first.headers.get('cache-status')).toMatch(/fwd=uri-miss; fwd-status=200; stored/)
    // The client that caused the fill gets its own cookies.
    expect(first.headers.getSetCookie()).toEqual([`${cookies[0]}; HttpOnly`, 'theme=dark'])
    expect(await first.text()).toBe('the same page for everyone')
    await node.stored('/page')

    const second = await node.get('/page')
    expect(second.headers.get('cache-status')).toMatch(/^caje; hit/)
    expect(second.headers.getSetCookie()).toEqual([])
    expect(await second.text()).toBe('the same page for everyone')
    expect(origin.count('/page')).toBe(1)
    // What is stored: the page's headers without Set-Cookie, in the index and in every file of the cache dir.
    const [meta] = await node.store.variants(`http://${new URL(node.url).host}/page`)
    expect(Object.keys(meta!.headers)).not.toContain('set-cookie')
    const files = await filesUnder(node.config.cacheDir)
    expect(files.length).toBeGreaterThan(0)
    for (const file of files) {
      const bytes = await fs.readFile(path.join(node.config.cacheDir, file), 'latin1')
      expect(bytes, file).not.toContain(cookies[0]!)
      expect(bytes, file).not.toContain('theme=dark')
    }
  })

  it('concurrent misses never hand one client’s cookie to another', async () => {
    const { node, cookies } = await cookieOrigin({ CAJE_CACHE_SET_COOKIE: 'true' })
    const responses = await Promise.all(Array.from({ length: 20 }, () => node.get('/shared').then(async (r) => ({ setCookie: r.headers.getSetCookie(), body: await r.text() }))))
    const handed = responses.flatMap((r) => r.setCookie.filter((c) => c.startsWith('session=')))
    // Every session cookie a client got came from an origin answer to a request made for it: none twice.
    expect(new Set(handed).size).toBe(handed.length)
    for (const c of handed) expect(cookies.map((k) => `${k}; HttpOnly`)).toContain(c)
    expect(responses.every((r) => r.body === 'the same page for everyone')).toBe(true)
  })

  it('without it (the default) a page with Set-Cookie is not stored', async () => {
    const { origin, node } = await cookieOrigin({})
    const first = await node.get('/page')
    expect(first.headers.get('cache-status')).not.toMatch(/stored/)
    await first.text()
    const second = await node.get('/page')
    expect(second.headers.get('cache-status')).toMatch(/fwd=uri-miss/)
    expect(second.headers.getSetCookie()).toHaveLength(2)
    expect(origin.count('/page')).toBe(2)
    expect(node.store.stats().entries).toBe(0)
  })
})

describe('slow and many clients', () => {
  // Node's defaults are 20 s (headers) and 300 s (whole request): each test's timeout, shorter
  // than the default it stands for, fails it unless the configured 1 s cut the client off.
  it('slowloris: a client trickling its headers is cut off by CAJE_HEADERS_TIMEOUT_MS, others are served meanwhile', async () => {
    const { origin, node } = await setup({ CAJE_HEADERS_TIMEOUT_MS: '1000' })
    const socket = net.connect(node.port, '127.0.0.1')
    socket.on('error', () => {})
    let received = ''
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')))
    socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n')
    const trickle = setInterval(() => socket.writable && socket.write('X-Slow: y\r\n'), 100)
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    try {
      expect((await get(node.url + '/meanwhile')).status).toBe(200)
      await closed
      // Cut by the server's timeout, which answers 408 as it closes (RFC 9110 §15.5.9).
      expect(received).toMatch(/^HTTP\/1\.1 408 /)
    } finally {
      clearInterval(trickle)
      socket.destroy()
    }
    expect(origin.requests.map((q) => q.url)).toEqual(['/meanwhile'])
  }, 15_000)

  it('a trickled request body is cut off by CAJE_REQUEST_TIMEOUT_MS and nothing is stored', async () => {
    const { origin, node } = await setup({ CAJE_REQUEST_TIMEOUT_MS: '1000', CAJE_HEADERS_TIMEOUT_MS: '1000' })
    const socket = net.connect(node.port, '127.0.0.1')
    socket.on('error', () => {})
    let received = ''
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')))
    socket.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n')
    const trickle = setInterval(() => socket.writable && socket.write('x'), 100)
    try {
      await new Promise<void>((resolve) => socket.on('close', () => resolve()))
      expect(received).toMatch(/^HTTP\/1\.1 408 /)
    } finally {
      clearInterval(trickle)
      socket.destroy()
    }
    // The origin never received a complete request.
    expect(origin.requests).toEqual([])
    expect(node.store.stats().entries).toBe(0)
  }, 15_000)

  it('500 concurrent connections are all answered, with the right body each', async () => {
    const { origin, node } = await setup()
    const agentless = (i: number) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        http
          .get(`${node.url}/many/${i % 50}`, { agent: false }, (res) => {
            let body = ''
            res.setEncoding('utf8')
            res.on('data', (c: string) => (body += c))
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
          })
          .on('error', reject)
      })
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) => agentless(i)))
    results.forEach((r, i) => {
      expect(r.status).toBe(200)
      expect(r.body).toBe(`origin page for GET /many/${i % 50}`)
    })
    // Coalescing: about one origin request per URL, never one per client.
    expect(origin.requests.length).toBeGreaterThanOrEqual(50)
    expect(origin.requests.length).toBeLessThan(150)
  })
})
