// Raw-socket helpers for the hardening tests: an origin that can break HTTP in
// any way a test scripts (net server, no HTTP library in between), and clients
// that either read a response leniently (node:http, reporting cuts) or send
// bytes fetch would refuse to send (net.connect).

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

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
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

/**
 * Send raw bytes on a fresh connection and collect everything the server
 * sends until it closes the connection (or `idleMs` pass without data).
 */
export function rawExchange(port: number, bytes: string | Buffer, opts: { idleMs?: number } = {}): Promise<{ text: string; closedByServer: boolean }> {
  const idleMs = opts.idleMs ?? 1000
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let timer: NodeJS.Timeout | undefined
    const finish = (closedByServer: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closedByServer })
    }
    const arm = () => {
      clearTimeout(timer)
      timer = setTimeout(() => finish(false), idleMs)
    }
    socket.on('connect', () => {
      socket.write(bytes)
      arm()
    })
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      arm()
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the server answered still counts as "closed by server".
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true)
      else reject(err)
    })
  })
}

/** Status codes of every response in a raw byte stream, in order. */
export function statusCodes(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]))
}
