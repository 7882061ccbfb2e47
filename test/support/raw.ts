// Raw-socket helpers for the hardening tests: an origin that can break HTTP in
// any way a test scripts (net server, no HTTP library in between), and clients
// that either read a response leniently (node:http, reporting cuts) or send
// bytes fetch would refuse to send (net.connect).

import { readFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'

export interface RawRequest {
  method: string
  /** Request target exactly as sent. */
  path: string
  /** Lower-case names; repeated fields joined with ", ". */
  headers: Record<string, string>
  body: Buffer
}

/** Called once per parsed request; it owns the socket (answer, stall, cut...). */
export type RawHandler = (req: RawRequest, socket: net.Socket) => void

export interface RawOrigin {
  url: string
  port: number
  requests: RawRequest[]
  count(path?: string): number
  close(): Promise<void>
}

/** An origin on 127.0.0.1:0 that parses request heads (and Content-Length bodies) and hands each to `handler`. */
export async function startRawOrigin(handler: RawHandler): Promise<RawOrigin> {
  const requests: RawRequest[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buf = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n')
        const [method = '', path = ''] = lines[0]!.split(' ')
        const headers: Record<string, string> = {}
        for (const line of lines.slice(1)) {
          const i = line.indexOf(':')
          const name = line.slice(0, i).trim().toLowerCase()
          const value = line.slice(i + 1).trim()
          headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
        }
        const length = Number(headers['content-length'] ?? 0)
        if (buf.length < end + 4 + length) return
        const req: RawRequest = { method, path, headers, body: buf.subarray(end + 4, end + 4 + length) }
        buf = buf.subarray(end + 4 + length)
        requests.push(req)
        handler(req, socket)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    count: (path) => requests.filter((r) => path === undefined || r.path === path).length,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** A well-formed keep-alive response. */
export function writeResponse(socket: net.Socket, status: number, headers: Record<string, string>, body: string | Buffer = ''): void {
  const b = typeof body === 'string' ? Buffer.from(body) : body
  const head = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Status'}`, ...Object.entries({ 'content-length': String(b.length), ...headers }).map(([k, v]) => `${k}: ${v}`)]
  socket.write(head.join('\r\n') + '\r\n\r\n')
  socket.write(b)
}

/**
 * A port nothing listens on, checked by connecting to it. Taken below the system's range of
 * ephemeral ports: one released from listen(0) could be handed to the next server any test
 * starts on port 0 (it was, once in a full run, and the request meant to be refused hung).
 */
export async function closedPort(): Promise<number> {
  const range = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '32768')
  const low = Math.max(2048, Number(range.trim().split(/\s+/)[0]) || 32768)
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 1024 + Math.floor(Math.random() * (low - 1024))
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => (socket.destroy(), resolve(false)))
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
    })
    if (refused) return port
  }
  throw new Error('no closed port found below the ephemeral range in 50 tries')
}

export interface ClientResult {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
  /** The response was cut (connection closed before the framed end, or an error mid-body). */
  cut: boolean
}

/**
 * GET through node:http without keep-alive, never decompressing. Resolves with
 * `cut: true` when the connection dies after the headers; rejects only when no
 * response head arrived at all. No time limit of its own: an answer that never
 * comes fails the test at its timeout.
 */
export function get(url: string, headers: Record<string, string> = {}): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      let settled = false
      const done = (cut: boolean) => {
        if (settled) return
        settled = true
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), cut: cut || !res.complete })
      }
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => done(false))
      res.on('error', () => done(true))
      res.on('close', () => done(true))
    })
    req.on('error', reject)
  })
}

/** A generous bound on one exchange: only a guard, so a server that never finishes fails the test with what it sent. */
const EXCHANGE_GUARD_MS = 20_000

/** Where the responses in a byte stream end, as far as their HTTP/1.1 framing (RFC 9112 §6) tells. */
export interface ResponseFraming {
  /** Final (non-1xx) responses complete so far. */
  complete: number
  /** A complete response said the connection closes after it (or its body runs until the close). */
  closes: boolean
}

/**
 * Read the responses in `buf` by their framing, for requests with the given methods in order:
 * 1xx interim responses (except 101) come before a final one; a response to HEAD, a 204, a 304
 * and any 1xx have no body; otherwise chunked (Transfer-Encoding ending in chunked: chunks, the
 * last one, trailers), Content-Length, or a body delimited by the connection's close (RFC 9112
 * §6.3). `closes` is set by a final response with `Connection: close`, an HTTP/1.0 response
 * without keep-alive, a 101, a 2xx to CONNECT, or a close-delimited body.
 */
export function responseFraming(buf: Buffer, methods: readonly string[]): ResponseFraming {
  let at = 0
  let complete = 0
  for (;;) {
    const headEnd = buf.indexOf('\r\n\r\n', at)
    if (headEnd < 0) return { complete, closes: false }
    const lines = buf.subarray(at, headEnd).toString('latin1').split('\r\n')
    const status = /^HTTP\/(1\.[01]) (\d{3})/.exec(lines[0]!)
    // Not a response head: nothing more can be framed; wait for the close.
    if (!status) return { complete, closes: true }
    const version = status[1]!
    const code = Number(status[2])
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':')
      const name = line.slice(0, i).trim().toLowerCase()
      const value = line.slice(i + 1).trim()
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value)
    }
    at = headEnd + 4
    if (code >= 100 && code < 200 && code !== 101) continue
    const method = (methods[complete] ?? 'GET').toUpperCase()
    const tokens = (name: string) => (headers.get(name) ?? '').toLowerCase().split(',').map((t) => t.trim())
    const closes = tokens('connection').includes('close') || (version === '1.0' && !tokens('connection').includes('keep-alive'))
    if (code === 101 || (method === 'CONNECT' && code >= 200 && code < 300)) return { complete: complete + 1, closes: true }
    if (method !== 'HEAD' && code !== 204 && code !== 304) {
      const codings = tokens('transfer-encoding').filter((t) => t !== '')
      if (codings.length > 0 && codings[codings.length - 1] === 'chunked') {
        const end = chunkedEnd(buf, at)
        if (end < 0) return { complete, closes: false }
        at = end
      } else if (codings.length > 0 || !headers.has('content-length')) {
        // RFC 9112 §6.3 (6, 8): the body runs until the server closes the connection.
        return { complete, closes: true }
      } else {
        const length = Number(headers.get('content-length'))
        if (buf.length < at + length) return { complete, closes: false }
        at += length
      }
    }
    complete++
    if (closes) return { complete, closes: true }
  }
}

/** The offset just past a chunked body starting at `at` (its last chunk and trailers), or -1 while it is incomplete. */
function chunkedEnd(buf: Buffer, at: number): number {
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', at)
    if (lineEnd < 0) return -1
    const size = parseInt(buf.subarray(at, lineEnd).toString('latin1').split(';')[0]!.trim(), 16)
    if (!Number.isFinite(size)) return -1
    at = lineEnd + 2
    if (size === 0) {
      // Trailer fields, then the empty line.
      for (;;) {
        const end = buf.indexOf('\r\n', at)
        if (end < 0) return -1
        if (end === at) return end + 2
        at = end + 2
      }
    }
    if (buf.length < at + size + 2) return -1
    at += size + 2
  }
}

/** The request methods in raw request bytes, in order (request lines at the start of a line). */
function requestMethods(bytes: string | Buffer): string[] {
  const text = typeof bytes === 'string' ? bytes : bytes.toString('latin1')
  return [...text.matchAll(/^([A-Za-z]+) \S+ HTTP\/\d(?:\.\d)?\r?$/gm)].map((m) => m[1]!)
}

/**
 * Send raw bytes on a fresh connection and collect everything the server sends, reading the
 * responses by their framing (responseFraming): done when the server closes the connection
 * (`closedByServer`), or, on a connection kept alive, once `responses` final responses are
 * complete (default: one per request line in `bytes`, at least one). A response that says the connection closes is followed to the close,
 * so bytes sent after it are seen too. `methods` are those of the requests in order, when the
 * bytes do not show them plainly (HEAD and CONNECT change the framing). Fails after a generous
 * guard (EXCHANGE_GUARD_MS) with what arrived, rather than guessing the end from a silence.
 */
export function rawExchange(port: number, bytes: string | Buffer, opts: { responses?: number; methods?: string[]; guardMs?: number } = {}): Promise<{ text: string; closedByServer: boolean }> {
  const methods = opts.methods ?? requestMethods(bytes)
  const wanted = opts.responses ?? Math.max(1, methods.length)
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let settled = false
    const text = () => Buffer.concat(chunks).toString('latin1')
    const finish = (closedByServer: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(guard)
      socket.destroy()
      resolve({ text: text(), closedByServer })
    }
    const guard = setTimeout(() => {
      if (settled) return
      settled = true
      socket.destroy()
      reject(new Error(`no end to the exchange after ${opts.guardMs ?? EXCHANGE_GUARD_MS} ms; received ${JSON.stringify(text().slice(0, 2000))}`))
    }, opts.guardMs ?? EXCHANGE_GUARD_MS)
    socket.on('connect', () => socket.write(bytes))
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      const framing = responseFraming(Buffer.concat(chunks), methods)
      if (!framing.closes && framing.complete >= wanted) finish(false)
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the server answered still counts as "closed by server".
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true)
      else if (!settled) {
        settled = true
        clearTimeout(guard)
        reject(err)
      }
    })
  })
}

/** Status codes of every response in a raw byte stream, in order. */
export function statusCodes(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]))
}
