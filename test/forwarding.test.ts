// What caje tells the origin, through a real caje process: request fields that
// would steer the origin to render something other than the cache key never
// reach it, trusted forwarding fields reach it exactly as keyed, the origin
// cannot set caje's own cookies, and one canonical path serves the key, the
// origin and purge.

import { afterEach, describe, expect, it } from 'vitest'
import { STEERING_REQUEST_HEADERS } from '../src/proxy/forward.ts'
import { startNode, startOrigin, whenReached, type OriginHandler, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'
import { get, rawExchange, statusCodes } from './support/raw.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function setup(handler: OriginHandler, env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin(handler)
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}

async function waitStored(node: TestNode, key: string): Promise<void> {
  await whenReached(node.store, async () => (await node.store.variants(key)).length > 0)
}

/**
 * An origin that honours the steering fields the way IIS, Symfony, Rack and method-override
 * middleware do, and renders what it was steered to into a cacheable page.
 */
const steerable: OriginHandler = (req, res) => {
  const h = req.headers
  const path = h['x-original-url'] ?? h['x-rewrite-url'] ?? h['x-forwarded-prefix'] ?? req.url
  const method = h['x-http-method-override'] ?? h['x-http-method'] ?? h['x-method-override'] ?? req.method
  const scheme = h['x-forwarded-scheme'] ?? h['x-forwarded-proto']
  const host = h['x-host'] ?? h['x-forwarded-host']
  const extra = STEERING_REQUEST_HEADERS.filter((n) => h[n] !== undefined).map((n) => `${n}=${h[n]}`)
  res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' })
  res.end(`${method} ${path} as ${scheme}://${host} ${extra.join(' ')}`)
}

describe('request fields that steer the origin are not forwarded', () => {
  it('X-Original-URL on GET /home does not poison the next plain GET /home', async () => {
    const { origin, node } = await setup(steerable)
    const host = new URL(node.url).host
    const attacker = await get(node.url + '/home', { 'x-original-url': '/admin-evil' })
    expect(attacker.body.toString()).toBe(`GET /home as http://${host} `)
    await node.stored('/home')
    const victim = await get(node.url + '/home')
    expect(victim.headers['cache-status']).toMatch(/^caje; hit/)
    expect(victim.body.toString()).not.toContain('admin-evil')
    expect(origin.requests).toHaveLength(1)
    expect(origin.requests[0]!.headers['x-original-url']).toBeUndefined()
  })

  it.each(STEERING_REQUEST_HEADERS.map((name) => [name]))('%s never reaches the origin, and the stored page is the plain one', async (name) => {
    const { origin, node } = await setup(steerable)
    const host = new URL(node.url).host
    const value = name.includes('method') ? 'DELETE' : name.includes('host') || name.includes('server') ? 'evil.example' : name.includes('scheme') || name.includes('protocol') ? 'https' : name.includes('ssl') || name.includes('https') ? 'on' : '/admin-evil'
    const attacker = await get(node.url + '/page', { [name]: value })
    expect(attacker.body.toString()).toBe(`GET /page as http://${host} `)
    expect(origin.requests[0]!.headers[name]).toBeUndefined()
  })

  it('CAJE_STRIP_REQUEST_HEADERS adds fields to the list; others still pass', async () => {
    const { origin, node } = await setup(steerable, { CAJE_STRIP_REQUEST_HEADERS: 'X-Tenant, X-Debug-Render' })
    await get(node.url + '/page', { 'x-tenant': 'evil', 'x-debug-render': '1', 'x-http-method-override': 'DELETE', 'x-kept': 'yes' })
    const seen = origin.requests[0]!.headers
    expect(seen['x-tenant']).toBeUndefined()
    expect(seen['x-debug-render']).toBeUndefined()
    expect(seen['x-http-method-override']).toBeUndefined()
    expect(seen['x-kept']).toBe('yes')
  })
})

describe('with CAJE_TRUST_FORWARDED the origin is told exactly the scheme and host caje keyed on', () => {
  const reflecting: OriginHandler = (req, res) => {
    const h = req.headers
    res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/html' })
    res.end(`<a href="${h['x-forwarded-proto']}://${h['x-forwarded-host']}/next"> fwd=${h.forwarded ?? ''} port=${h['x-forwarded-port'] ?? ''} ssl=${h['x-forwarded-ssl'] ?? ''}`)
  }

  it('X-Forwarded-Proto: evil is keyed and forwarded as http', async () => {
    const { origin, node } = await setup(reflecting, { CAJE_TRUST_FORWARDED: 'true' })
    const attacker = await get(node.url + '/page', { 'x-forwarded-host': 'site.test', 'x-forwarded-proto': 'evil' })
    expect(attacker.body.toString()).toContain('href="http://site.test/next"')
    expect(origin.requests[0]!.headers['x-forwarded-proto']).toBe('http')
    await waitStored(node, 'http://site.test/page')
    const victim = await get(node.url + '/page', { 'x-forwarded-host': 'site.test', 'x-forwarded-proto': 'http' })
    expect(victim.headers['cache-status']).toMatch(/^caje; hit/)
    expect(victim.body.toString()).not.toContain('evil')
  })

  it('X-Forwarded-Host: site.test, evil.example is keyed and forwarded as site.test; Forwarded and X-Forwarded-Port are dropped', async () => {
    const { origin, node } = await setup(reflecting, { CAJE_TRUST_FORWARDED: 'true' })
    const attacker = await get(node.url + '/page', {
      'x-forwarded-host': 'Site.Test:443, evil.example',
      'x-forwarded-proto': 'HTTPS, http',
      forwarded: 'for=6.6.6.6;host=evil.example;proto=http',
      'x-forwarded-port': '6666',
      'x-forwarded-ssl': 'off',
    })
    const seen = origin.requests[0]!.headers
    expect(seen['x-forwarded-host']).toBe('site.test')
    expect(seen['x-forwarded-proto']).toBe('https')
    expect(seen.forwarded).toBeUndefined()
    expect(seen['x-forwarded-port']).toBeUndefined()
    expect(seen['x-forwarded-ssl']).toBeUndefined()
    expect(attacker.body.toString()).toBe('<a href="https://site.test/next"> fwd= port= ssl=')
    await waitStored(node, 'https://site.test/page')
  })
})

describe("the origin cannot set caje's own cookies", () => {
  const CAJE_COOKIES = [
    'caje_session=fixed; Path=/_caje; HttpOnly',
    '__Host-caje_session=fixed; Path=/; Secure; HttpOnly',
    'caje_flash=You%20were%20signed%20out; Path=/_caje',
    '__Secure-caje_other=1; Secure',
    '__HOST-CAJE_SESSION=fixed; Path=/; Secure',
    ' caje_session =fixed',
    'caje_session',
  ]
  const cookieOrigin =
    (cacheControl: string): OriginHandler =>
    (_req, res) => {
      res.setHeader('set-cookie', [...CAJE_COOKIES, 'app=1; Path=/', 'mycaje_x=2'])
      res.writeHead(200, { 'cache-control': cacheControl, 'content-type': 'text/plain' })
      res.end('page')
    }

  it('Set-Cookie for caje_session, __Host-caje_session, caje_flash and any caje_* is dropped (and logged by name); the origin’s own cookies pass', async () => {
    const origin = await startOrigin(cookieOrigin('no-store'))
    cleanups.push(() => origin.close())
    const logs: Record<string, unknown>[] = []
    const node = await startNode(origin.url, {}, { log: (l) => logs.push(l) })
    cleanups.push(() => node.close())
    const res = await get(node.url + '/page')
    expect(res.status).toBe(200)
    expect(res.headers['set-cookie']).toEqual(['app=1; Path=/', 'mycaje_x=2'])
    const warning = logs.find((l) => String(l.msg).includes("caje's own cookie"))
    expect(warning).toMatchObject({ level: 'warn', url: `http://${new URL(node.url).host}/page` })
    expect(warning!.names).toEqual(['caje_session', '__Host-caje_session', 'caje_flash', '__Secure-caje_other', '__HOST-CAJE_SESSION', 'caje_session', 'caje_session'])
    expect(JSON.stringify(warning)).not.toContain('fixed')
  })

  it('a response that only tried to set caje cookies is still a response with Set-Cookie: not stored by default', async () => {
    const origin = await startOrigin((_req, res) => {
      res.setHeader('set-cookie', 'caje_session=fixed; Path=/_caje')
      res.writeHead(200, { 'cache-control': 'public, max-age=60' })
      res.end('page')
    })
    cleanups.push(() => origin.close())
    const node = await startNode(origin.url)
    cleanups.push(() => node.close())
    const res = await get(node.url + '/page')
    expect(res.headers['set-cookie']).toBeUndefined()
    expect(res.headers['cache-status']).toMatch(/detail=set-cookie/)
    expect((await get(node.url + '/page')).headers['cache-status']).toMatch(/fwd=uri-miss/)
  })

  it('with CAJE_CACHE_SET_COOKIE=true the stored copy carries no Set-Cookie at all', async () => {
    const { node } = await setup(cookieOrigin('public, max-age=60'), { CAJE_CACHE_SET_COOKIE: 'true' })
    const first = await get(node.url + '/page')
    expect(first.headers['set-cookie']).toEqual(['app=1; Path=/', 'mycaje_x=2'])
    await node.stored('/page')
    const hit = await get(node.url + '/page')
    expect(hit.headers['cache-status']).toMatch(/^caje; hit/)
    expect(hit.headers['set-cookie']).toBeUndefined()
  })
})

describe('one canonical path for the key, the origin and purge', () => {
  const TOKEN = 'api-token-for-canonical-path-tests'
  const echo: OriginHandler = (req, res) => {
    res.writeHead(200, { 'cache-control': 'public, max-age=60', 'content-type': 'text/plain' })
    res.end(`page ${req.url}`)
  }
  const rawGet = async (node: TestNode, target: string) => {
    const r = await rawExchange(node.port, `GET ${target} HTTP/1.1\r\nHost: ${new URL(node.url).host}\r\nConnection: close\r\n\r\n`)
    return { status: statusCodes(r.text)[0], cacheStatus: /\r\ncache-status: ([^\r]*)/i.exec(r.text)?.[1] ?? '', body: r.text.slice(r.text.indexOf('\r\n\r\n') + 4) }
  }
  const purge = async (node: TestNode, url: string, kind: 'url' | 'prefix' = 'url') => {
    const res = await fetch(node.url + '/_caje/purge', {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ [kind]: url }),
    })
    expect(res.status).toBe(200)
    return ((await res.json()) as { removed: number }).removed
  }

  it('GET /docs/%2e%2e/legal/old is keyed as /legal/old, the origin sees /legal/old, and a purge of /legal/old removes it', async () => {
    const { origin, node } = await setup(echo, { CAJE_API_TOKEN: TOKEN })
    const host = new URL(node.url).host
    const first = await rawGet(node, '/docs/%2e%2e/legal/old')
    expect(first.status).toBe(200)
    expect(first.body).toContain('page /legal/old')
    expect(origin.requests.map((r) => r.url)).toEqual(['/legal/old'])
    await node.stored('/legal/old')
    expect((await node.store.variants(`http://${host}/docs/%2e%2e/legal/old`)).length).toBe(0)

    // Every spelling of the same path is the same entry.
    for (const spelling of ['/legal/old', '/legal/./old', '/%6cegal/%6Fld', '/x/../legal/old?']) {
      const again = await rawGet(node, spelling)
      expect(again.cacheStatus, spelling).toMatch(/^caje; hit/)
      expect(again.body).toContain('page /legal/old')
    }
    expect(origin.requests).toHaveLength(1)

    expect(await purge(node, `http://${host}/legal/old`)).toBe(1)
    expect(await node.store.variants(`http://${host}/legal/old`)).toEqual([])
    expect((await rawGet(node, '/docs/%2e%2e/legal/old')).cacheStatus).toMatch(/fwd=uri-miss/)
  })

  it('a purge naming the URL in another spelling removes the entry too', async () => {
    const { node } = await setup(echo, { CAJE_API_TOKEN: TOKEN })
    const host = new URL(node.url).host
    await rawGet(node, '/~user/a%2fb?q=%7e')
    await node.stored('/~user/a%2Fb?q=~')
    expect(await purge(node, `http://${host.toUpperCase()}/docs/%2E%2E/%7Euser/a%2fb?q=~`)).toBe(1)
    expect(await node.store.variants(`http://${host}/~user/a%2Fb?q=~`)).toEqual([])
  })

  it('a purge by prefix in another spelling covers the entries under it', async () => {
    const { node } = await setup(echo, { CAJE_API_TOKEN: TOKEN })
    const host = new URL(node.url).host
    await rawGet(node, '/%7Euser/a')
    await rawGet(node, '/~user/b/../c')
    await rawGet(node, '/other')
    await node.stored('/~user/a')
    await node.stored('/~user/c')
    await node.stored('/other')
    expect(await purge(node, `http://${host.toUpperCase()}/%7euser/`, 'prefix')).toBe(2)
    expect(await node.store.variants(`http://${host}/other`)).toHaveLength(1)
  })
})
