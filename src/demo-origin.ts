// The built-in demo origin, started when no CAJE_ORIGIN / CAJE_SITES is set,
// so `npm start` shows caje doing its job on a fresh machine. It listens on
// loopback only and answers slowly, so hits are visibly faster than misses.

import { createHash } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'

const DELAY_MS = 300

function page(title: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}<p>Served by the caje demo origin at ${new Date().toISOString()}.</p></body></html>\n`
}

const INDEX = `<p>This is the built-in demo origin behind caje. Try these, twice each, and watch the <code>Cache-Status</code> header:</p>
<ul>
<li><a href="/cacheable">/cacheable</a>: public, max-age=60 (a miss, then hits)</li>
<li><a href="/revalidate">/revalidate</a>: max-age=5 with an ETag (refreshed with a 304 when stale)</li>
<li><a href="/swr">/swr</a>: max-age=5, stale-while-revalidate=60</li>
<li><a href="/private">/private</a>: Cache-Control: private (never shared)</li>
<li><a href="/cookie">/cookie</a>: sets a cookie (never stored)</li>
<li><a href="/uncacheable">/uncacheable</a>: no-store</li>
<li><a href="/no-headers">/no-headers</a>: an ETag and no caching headers, like many frameworks by default (passed through, not stored: <code>detail=no-explicit-freshness</code>)</li>
<li><a href="/vary">/vary</a>: Vary: Accept-Language</li>
</ul>`

export interface DemoOrigin {
  url: string
  close(): Promise<void>
}

export async function startDemoOrigin(): Promise<DemoOrigin> {
  let counter = 0
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://demo')
    counter++
    const send = (status: number, headers: Record<string, string | string[]>, body: string) => {
      const buf = Buffer.from(body)
      const etag = `"${createHash('sha1').update(buf).digest('hex').slice(0, 16)}"`
      if (headers.etag === undefined && status === 200) headers.etag = etag
      if (req.headers['if-none-match'] === headers.etag) {
        res.writeHead(304, { etag: headers.etag as string, 'cache-control': String(headers['cache-control'] ?? '') })
        res.end()
        return
      }
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': String(buf.length), ...headers })
      res.end(req.method === 'HEAD' ? undefined : buf)
    }
    setTimeout(() => {
      switch (url.pathname) {
        case '/':
          return send(200, { 'cache-control': 'public, max-age=30' }, page('caje demo origin', INDEX))
        case '/cacheable':
          return send(200, { 'cache-control': 'public, max-age=60' }, page('Cacheable', '<p>Cached for 60 seconds.</p>'))
        case '/revalidate':
          return send(200, { 'cache-control': 'max-age=5', etag: '"demo-v1"' }, page('Revalidate', '<p>Fresh for 5 s, then revalidated with If-None-Match.</p>'))
        case '/swr':
          return send(200, { 'cache-control': 'max-age=5, stale-while-revalidate=60' }, page('Stale while revalidate', `<p>Render #${counter}.</p>`))
        case '/private':
          return send(200, { 'cache-control': 'private, max-age=60' }, page('Private', '<p>For one user only.</p>'))
        case '/cookie':
          return send(200, { 'cache-control': 'max-age=60', 'set-cookie': `demo=${counter}; Path=/; HttpOnly` }, page('Cookie', '<p>Sets a cookie.</p>'))
        case '/uncacheable':
          return send(200, { 'cache-control': 'no-store' }, page('Uncacheable', `<p>Render #${counter}.</p>`))
        case '/no-headers':
          // Only the ETag send() adds: caje stores responses only when the origin gives them a lifetime.
          return send(200, {}, page('No caching headers', `<p>Render #${counter}. caje passes this through: add Cache-Control: max-age (or CDN-Cache-Control) to cache it.</p>`))
        case '/vary': {
          const lang = (req.headers['accept-language'] ?? 'en').split(',')[0]!.trim()
          return send(200, { 'cache-control': 'public, max-age=60', vary: 'Accept-Language' }, page('Vary', `<p>Language: ${lang.replace(/[<>&"]/g, '')}</p>`))
        }
        default:
          return send(404, { 'cache-control': 'public, max-age=10' }, page('Not found', '<p>No such demo page.</p>'))
      }
    }, DELAY_MS)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    }),
  }
}
