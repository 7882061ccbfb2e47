import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'
import { rawExchange } from './support/raw.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

interface Exchange {
  interim: Array<{ status: number; headers: http.IncomingHttpHeaders }>
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** GET through Node's client, recording every interim response before the final one. */
function get(url: string, headers: Record<string, string> = {}): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const interim: Exchange['interim'] = []
    const req = http.get(url, { headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ interim, status: res.statusCode!, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('information', (info) => interim.push({ status: info.statusCode, headers: info.headers }))
    req.on('error', reject)
  })
}

const HINT = '</style.css>; rel=preload; as=style'

/** An origin that sends 102 and 103, then its final response once `release` resolves (at once by default). */
async function setup(release: () => Promise<void> = async () => {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin((req, res) => {
    res.writeProcessing()
    res.writeEarlyHints({ link: HINT, 'x-hint': 'early', connection: 'x-hop', 'x-hop': 'dropped' })
    void release().then(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' })
      res.end(`final for ${req.url}`)
    })
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url)
  cleanups.push(() => node.close())
  return { origin, node }
}

describe('interim responses (RFC 9110 §15.2)', () => {
  it('passes 102 and 103 on to the client as they come, and never stores them', async () => {
    const { origin, node } = await setup()
    const miss = await get(node.url + '/page')
    expect(miss.interim.map((i) => i.status)).toEqual([102, 103])
    const hints = miss.interim[1]!.headers
    expect(hints.link).toBe(HINT)
    expect(hints['x-hint']).toBe('early')
    expect(hints.via).toBe('1.1 caje')
    // Hop-by-hop fields of the hint stay on the origin's connection (RFC 9110 §7.6.1).
    expect(hints['x-hop']).toBeUndefined()
    expect(hints.connection).not.toBe('x-hop')
    expect(miss.status).toBe(200)
    expect(miss.body).toBe('final for /page')
    expect(miss.headers['cache-status']).toContain('stored')
    // Nothing of the interim responses was merged into the stored final response.
    expect(miss.headers.link).toBeUndefined()
    expect(miss.headers['x-hint']).toBeUndefined()

    await node.stored('/page')
    const hit = await get(node.url + '/page')
    expect(hit.headers['cache-status']).toMatch(/^caje; hit/)
    expect(hit.interim).toEqual([])
    expect(hit.headers.link).toBeUndefined()
    expect(hit.headers['x-hint']).toBeUndefined()
    expect(hit.body).toBe('final for /page')
    expect(origin.count('/page')).toBe(1)
  })

  it('passes a hint on while the origin is still working on the final response', async () => {
    let hinted!: () => void
    const hintSeen = new Promise<void>((resolve) => (hinted = resolve))
    // The origin answers only once the client has seen the hint: were caje to hold hints back
    // until the final response, this exchange would never finish.
    const { node } = await setup(() => hintSeen)
    const done = new Promise<number>((resolve, reject) => {
      const req = http.get(node.url + '/slow', { agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode!))
      })
      req.on('information', (info) => {
        if (info.statusCode === 103) hinted()
      })
      req.on('error', reject)
    })
    expect(await done).toBe(200)
  })

  it('sends no interim response to an HTTP/1.0 client', async () => {
    const { node } = await setup()
    const r = await rawExchange(node.port, 'GET /old HTTP/1.0\r\nHost: x\r\n\r\n')
    expect(r.text).toMatch(/^HTTP\/1\.1 200 /)
    expect(r.text).not.toContain(' 103 ')
    expect(r.text).not.toContain(' 102 ')
    expect(r.text).toContain('final for /old')
  })
})
