// Real servers for tests: an origin on port 0 whose behaviour each test
// scripts, and a full caje node on port 0 with its own temp cache dir.

import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import path from 'node:path'
import { startCaje, type RunningCaje } from '../caje.ts'
import { loadConfig } from '../config.ts'
import { silentLogger, type Logger } from '../log.ts'
import { whenReached } from './when-reached.ts'
import { tempDir } from './temp-dirs.ts'
import { WAIT_GUARD_MS } from './wait-guard.ts'

export interface TestOrigin {
  url: string
  port: number
  /** Every request the origin saw, in order. */
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }>
  count(pathname?: string): number
  close(): Promise<void>
}

export type OriginHandler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void

export async function startOrigin(handler: OriginHandler, port = 0): Promise<TestOrigin> {
  const requests: TestOrigin['requests'] = []
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString()
      requests.push({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body })
      handler(req, res, body)
    })
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  const actual = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    requests,
    count: (pathname) => requests.filter((r) => pathname === undefined || r.url === pathname).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export { tempDir, whenReached }

export interface TestNode extends RunningCaje {
  dir: string
  /** fetch() a path on this node. */
  get(pathname: string, init?: RequestInit): Promise<Response>
  /** Wait until `variants` variants of a path are stored and on disk (commits finish after the response). */
  stored(pathname: string, variants?: number): Promise<void>
}

/**
 * Poll `check` until it returns true, failing after `timeoutMs` (WAIT_GUARD_MS at least). For
 * state no event announces (another process, a worker thread, SQLite); where there is an event,
 * wait for it instead (whenReached, untilPrinted).
 */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = WAIT_GUARD_MS): Promise<void> {
  timeoutMs = Math.max(timeoutMs, WAIT_GUARD_MS)
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Start a caje node in front of `origin` with a fresh temp dir; env overrides are CAJE_* variables. */
export async function startNode(origin: string, env: Record<string, string> = {}, opts: { dir?: string; log?: Logger } = {}): Promise<TestNode> {
  const dir = opts.dir ?? (await tempDir())
  const config = loadConfig({
    PORT: '0',
    CAJE_LISTEN_HOST: '127.0.0.1',
    CAJE_ORIGIN: origin,
    CAJE_CACHE_DIR: path.join(dir, 'cache'),
    CAJE_DATABASE_PATH: path.join(dir, 'manifest.db'),
    CAJE_NODE_ID: 'test-node',
    CAJE_ACCESS_LOG: 'false',
    CAJE_POPULATE_INTERVAL: '0',
    CAJE_SHUTDOWN_TIMEOUT_MS: '2000',
    ...env,
  })
  const node = await startCaje(config, opts.log ?? silentLogger)
  return {
    ...node,
    dir,
    get: (pathname, init) => fetch(node.url + pathname, init),
    stored: (pathname, variants = 1) => {
      const key = `http://${new URL(node.url).host}${pathname}`
      // Stored bodies are written behind: wait for the disk writer too, so the files are there.
      return whenReached(node.store, async () => (await node.store.variants(key)).length >= variants).then(() => node.store.drain())
    },
  }
}

/** A free loopback port: listen on 0, read it, close. The caller binds it next (the gap is microseconds). */
export async function freePort(): Promise<number> {
  const probe = net.createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', resolve)
  })
  const { port } = probe.address() as AddressInfo
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  return port
}

/** All of a response body, whether it came whole (a Buffer) or as a stream. */
export async function bodyBytes(body: NodeJS.ReadableStream | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(body)) return body
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** How many times the event loop turns while `work` runs (a synchronous stall lets it turn about once). */
export async function turnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0
  let counting = true
  const count = () => {
    turns++
    if (counting) setImmediate(count)
  }
  setImmediate(count)
  try {
    return { result: await work(), turns }
  } finally {
    counting = false
  }
}
