import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { cleanResponseHeaders, isCajeCookieName, originRequestHeaders, STEERING_REQUEST_HEADERS, storedHeaders, withoutAdminCookies, withoutConditionals, type ForwardContext } from './forward.ts'
import { sameHiddenClass } from '../test-support/hidden-class.ts'

const ctx = (over: Partial<ForwardContext> = {}): ForwardContext => ({
  host: 'site.test',
  scheme: 'https',
  clientIp: '203.0.113.9',
  origin: new URL('http://10.0.0.1:3000'),
  preserveHost: false,
  trustForwarded: false,
  stripHeaders: new Set(STEERING_REQUEST_HEADERS),
  ...over,
})

describe('originRequestHeaders', () => {
  it('drops every steering field and rebuilds X-Forwarded-Host / -Proto from the key', () => {
    const client: Record<string, string> = { host: 'site.test', accept: 'text/html', forwarded: 'host=evil', 'x-forwarded-port': '1', 'x-forwarded-host': 'evil', 'x-forwarded-proto': 'evil' }
    for (const name of STEERING_REQUEST_HEADERS) client[name] = 'evil'
    const out = originRequestHeaders(client, ctx())
    expect(out).toEqual({
      accept: 'text/html',
      host: '10.0.0.1:3000',
      via: '1.1 caje',
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-host': 'site.test',
      'x-forwarded-proto': 'https',
    })
  })

  it('keeps a trusted proxy’s client addresses, never its host or scheme as sent', () => {
    const out = originRequestHeaders({ 'x-forwarded-for': '198.51.100.1', 'x-real-ip': '198.51.100.1', 'x-forwarded-host': 'site.test, evil', 'x-forwarded-proto': 'evil', forwarded: 'for=x' }, ctx({ trustForwarded: true, scheme: 'http' }))
    expect(out['x-forwarded-for']).toBe('198.51.100.1, 203.0.113.9')
    expect(out['x-real-ip']).toBe('198.51.100.1')
    expect(out['x-forwarded-host']).toBe('site.test')
    expect(out['x-forwarded-proto']).toBe('http')
    expect(out.forwarded).toBeUndefined()
  })

  it('strips exactly the list the README documents', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const start = readme.indexOf('**What the origin is sent.**')
    const documented = [...readme.slice(start, readme.indexOf('CAJE_STRIP_REQUEST_HEADERS', start)).matchAll(/`([A-Za-z-]+)`/g)].map((m) => m[1]!.toLowerCase())
    expect(documented.sort()).toEqual([...STEERING_REQUEST_HEADERS].sort())
  })

  it('strips the extra names it is given', () => {
    const out = originRequestHeaders({ 'x-tenant': 'evil', 'x-other': 'kept' }, ctx({ stripHeaders: new Set([...STEERING_REQUEST_HEADERS, 'x-tenant']) }))
    expect(out['x-tenant']).toBeUndefined()
    expect(out['x-other']).toBe('kept')
  })
})

describe("caje's cookie names", () => {
  it.each(['caje_session', 'caje_flash', 'caje_anything', '__Host-caje_session', '__host-CAJE_flash', '__Secure-caje_x', ' caje_session'])('%j is caje’s', (name) => {
    expect(isCajeCookieName(name)).toBe(true)
  })
  it.each(['cajex', 'my_caje_session', '__Host-session', 'caje', 'x__Host-caje_session'])('%j is not', (name) => {
    expect(isCajeCookieName(name)).toBe(false)
  })

  it('are never sent to the origin', () => {
    expect(withoutAdminCookies('a=1; caje_session=s; __Host-caje_flash=f; __Secure-caje_x=2; b=2')).toBe('a=1; b=2')
  })

  it('are never set by the origin; the response still counts as one with Set-Cookie', () => {
    const cleaned = cleanResponseHeaders({ 'set-cookie': ['caje_session=x; Path=/_caje', 'app=1', '__Host-caje_flash=hi; Path=/; Secure', 'caje_session'], 'content-type': 'text/plain' })
    expect(cleaned.setCookie).toEqual(['app=1'])
    expect(cleaned.refusedCookies).toEqual(['caje_session', '__Host-caje_flash', 'caje_session'])
    expect(cleaned.hadSetCookie).toBe(true)
    expect(cleaned.headers).toEqual({ 'content-type': 'text/plain' })
    expect(cleanResponseHeaders({ 'set-cookie': ['caje_session=x'] })).toMatchObject({ setCookie: [], hadSetCookie: true })
    expect(cleanResponseHeaders({})).toMatchObject({ setCookie: [], hadSetCookie: false, refusedCookies: [] })
  })
})

describe('storedHeaders', () => {
  it('keeps what is served, without Age and Cache-Status (RFC 9111 §5.1, RFC 9211)', () => {
    const headers = { 'content-type': 'text/plain', age: '5', 'cache-status': 'origin; fwd=miss', etag: '"a"' }
    expect(storedHeaders(headers)).toEqual({ 'content-type': 'text/plain', etag: '"a"' })
    expect(headers.age).toBe('5')
  })

  it('gives the frozen headers of every stored response of one shape a single hidden class', () => {
    const frozen = Array.from({ length: 50 }, (_, i) => Object.freeze(storedHeaders(cleanResponseHeaders({ 'content-type': 'text/plain', etag: `"${i}"`, age: '1' }).headers)))
    expect(sameHiddenClass(frozen[48]!, frozen[49]!)).toBe(true)
  })
})

describe('withoutConditionals', () => {
  it('drops client conditionals and Range from a copy, leaving the given headers as they were', () => {
    const given = { accept: '*/*', 'if-none-match': '"a"', 'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT', range: 'bytes=0-1', 'if-range': '"a"' }
    const out = withoutConditionals(given)
    expect(out).toEqual({ accept: '*/*' })
    expect(given['if-none-match']).toBe('"a"')
    expect(given.range).toBe('bytes=0-1')
  })

  it('hands back headers without any as they are', () => {
    const given = { accept: '*/*', host: 'a.test' }
    expect(withoutConditionals(given)).toBe(given)
    expect(given).toEqual({ accept: '*/*', host: 'a.test' })
  })
})
