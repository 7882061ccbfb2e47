// The benchmark origin: plain node:http, deterministic bodies (bench/content.ts),
// ETag/If-None-Match support so caches can revalidate, and a request counter at
// /__origin/stats so the runner can tell how many requests got past a cache.
//
// Run alone: node --import tsx bench/origin.ts --port 0 [--delay-ms 0]
// It prints one JSON line {"port":N} once it listens.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { contentFor, type Content } from './content.ts'

export const ORIGIN_STATS_PATH = '/__origin/stats'

/**
 * Any content path under this prefix is the same bytes and headers, but `Cache-Control:
 * no-store`: a cache forwards it exactly as it would a miss, without storing it, so a miss's
 * cost can be split into proxying and storing.
 */
export const NO_STORE_PREFIX = '/nostore'

export interface OriginStats {
  /** Requests for benchmark content (everything but the stats path). */
  requests: number
  /** Of those, answered 304 Not Modified. */
  notModified: number
}

export interface OriginServerOptions {
  /** Added before every content response (a slow origin makes misses expensive). */
  delayMs?: number
}

export function createOriginServer(options: OriginServerOptions = {}): http.Server {
  const delayMs = options.delayMs ?? 0
  const stats: OriginStats = { requests: 0, notModified: 0 }
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/'
    if (url === ORIGIN_STATS_PATH) {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end(JSON.stringify(stats))
      return
    }
    stats.requests++
    const answer = () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-length': '0' })
        res.end()
        return
      }
      const content = contentAt(url)
      if (!content) {
        res.writeHead(404, { 'content-type': 'text/plain', 'content-length': '10', 'cache-control': 'no-store' })
        res.end('not found\n')
        return
      }
      // RFC 9110 §13.1.2: a matching If-None-Match on GET/HEAD is answered 304.
      const inm = req.headers['if-none-match']
      if (inm && (inm === '*' || inm.split(',').some((t) => t.trim().replace(/^W\//, '') === content.etag))) {
        stats.notModified++
        const { 'content-length': _length, 'content-type': _type, ...rest } = content.headers
        res.writeHead(304, rest)
        res.end()
        return
      }
      res.writeHead(200, content.headers)
      res.end(req.method === 'HEAD' ? undefined : content.body)
    }
    if (delayMs > 0) setTimeout(answer, delayMs)
    else answer()
  })
  server.keepAliveTimeout = 65_000
  return server
}

/** The content for a request target, the no-store copy under NO_STORE_PREFIX (a new object: fixed paths' content is shared). */
function contentAt(url: string): Content | undefined {
  if (!url.startsWith(`${NO_STORE_PREFIX}/`)) return contentFor(url)
  const content = contentFor(url.slice(NO_STORE_PREFIX.length))
  return content && { ...content, headers: { ...content.headers, 'cache-control': 'no-store' } }
}

/** Start a server on host:port (0 = any free port) and print {"port":N} on stdout. */
export async function serveFromCli(server: http.Server, argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } }, strict: false })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(values.port), String(values.host), resolve)
  })
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`)
  const stop = () => {
    server.close()
    server.closeAllConnections()
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

/** True when this module is the process entry point (node --import tsx bench/x.ts). */
export function isMain(moduleUrl: string): boolean {
  const entry = process.argv[1]
  return entry !== undefined && moduleUrl === pathToFileURL(entry).href
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { 'delay-ms': { type: 'string', default: '0' } }, strict: false })
  await serveFromCli(createOriginServer({ delayMs: Number(values['delay-ms']) }), process.argv.slice(2))
}
