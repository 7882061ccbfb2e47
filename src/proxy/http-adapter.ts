// Between Hono and the proxy core. Under @hono/node-server the Node request
// and response are used directly (bodies piped as Node streams, no web-stream
// conversion on the hot path); under app.request() (tests, other runtimes) a
// web Response is built from the same ProxyResult.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import type { Context, MiddlewareHandler } from 'hono'
import { normaliseHost } from '../config.ts'
import type { Logger } from '../log.ts'
import { formatCacheStatus } from './cache-status.ts'
import type { FlatHeaders } from './headers.ts'
import { textResult, type Proxy, type ProxyRequest, type ProxyResult } from './proxy.ts'

/**
 * The marker that tells @hono/node-server "the response was written already".
 * It must be a *native* Response: the server's lightweight Response (which it
 * installs as the global one) takes a fast path that ignores the marker and
 * writes a second set of headers.
 */
const NativeResponse: typeof Response = (() => {
  const current = globalThis.Response
  const parent = Object.getPrototypeOf(current) as typeof Response | null
  return parent && parent.name === 'Response' ? parent : current
})()
const ALREADY_SENT_HEADER = 'x-hono-already-sent'
// One shared instance: the server only reads its headers, and building a Response per hit is measurable.
const ALREADY_SENT = new NativeResponse(null, { headers: { [ALREADY_SENT_HEADER]: 'true' } })

interface NodeBindings {
  incoming?: IncomingMessage
  outgoing?: ServerResponse
}

export interface ProxyHandlerOptions {
  proxy: Proxy
  log: Logger
  accessLog: boolean
  trustForwarded: boolean
  /** Called with each finished exchange (metrics of bytes by tier). */
  onServed?: (result: ProxyResult, bytes: number) => void
}

function headersFromWeb(headers: Headers): FlatHeaders {
  const out: FlatHeaders = {}
  headers.forEach((value, name) => {
    out[name] = value
  })
  return out
}

function flatten(headers: IncomingMessage['headers']): FlatHeaders {
  const out: FlatHeaders = {}
  for (const name in headers) {
    const v = headers[name]
    if (v !== undefined) out[name] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/** A request caje refuses before it reaches the proxy (RFC 9110 §15.5.1), sent the way every result is. */
function refuse(outgoing: ServerResponse | undefined, message: string): Response | undefined {
  const result = textResult(400, `400 Bad Request: ${message}`, { fwd: 'bypass', detail: 'bad-request' })
  const done = () => {}
  if (!outgoing) return toWebResponse(result, done)
  sendNode(outgoing, result, done)
  return undefined
}

/** The fallback route: every request outside /_caje/ goes through the proxy. */
export function proxyHandler(opts: ProxyHandlerOptions): MiddlewareHandler {
  return async function proxyRoute(c: Context) {
    const env = (c.env ?? {}) as NodeBindings
    if (env.incoming && env.outgoing) {
      await exchange(opts, env.incoming, env.outgoing, undefined)
      return ALREADY_SENT
    }
    return (await exchange(opts, undefined, undefined, c.req.raw))!
  }
}

/**
 * The same exchange as a plain Node request listener, for the server's fast
 * path: requests outside /_caje/ reach the proxy without a trip through the
 * router, whose promise handling costs a hit more than the hit itself.
 */
export function nodeProxyListener(opts: ProxyHandlerOptions): (incoming: IncomingMessage, outgoing: ServerResponse) => void {
  return (incoming, outgoing) => {
    exchange(opts, incoming, outgoing, undefined).catch((err: unknown) => {
      opts.log({ level: 'error', msg: 'proxy exchange failed', error: (err as Error).message })
      if (!outgoing.headersSent) {
        outgoing.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
        outgoing.end('500 Internal Server Error: caje failed to handle this request; see its log.\n')
      } else outgoing.destroy()
    })
  }
}

/** One proxied exchange: from the Node request/response (written directly) or a web Request (a Response is returned). */
async function exchange(opts: ProxyHandlerOptions, incoming: IncomingMessage | undefined, outgoing: ServerResponse | undefined, raw: Request | undefined): Promise<Response | undefined> {
  const started = performance.now()
  const headers = incoming ? flatten(incoming.headers) : headersFromWeb(raw!.headers)

  // RFC 9112 §3.2: a request with more than one Host field line gets a 400. Node keeps the first
  // one; a proxy in front of caje may key on the last, and the two would disagree on the site.
  if (incoming && countHost(incoming.rawHeaders) > 1) return refuse(outgoing, 'the request has more than one Host header; send exactly one')
  const hostRaw = (opts.trustForwarded && headers['x-forwarded-host']?.split(',')[0]?.trim()) || headers.host
  if (!hostRaw) return refuse(outgoing, 'the request has no Host header; send one naming the site you want')
  if (!/^[A-Za-z0-9.\-_[\]:]+$/.test(hostRaw)) return refuse(outgoing, 'the Host header is not a valid host name')
  const protoRaw = opts.trustForwarded ? headers['x-forwarded-proto']?.split(',')[0]?.trim() : undefined
  const scheme = protoRaw === 'https' ? 'https' : 'http'

  const url = incoming?.url ?? new URL(raw!.url).pathname + new URL(raw!.url).search
  const path = url.startsWith('/') ? url : new URL(url).pathname + new URL(url).search
  // Created only when something needs it (origin requests): hits never pay for an AbortController.
  let controller: AbortController | undefined
  const method = incoming?.method ?? raw!.method
  let body: ProxyRequest['body'] = null
  if (method !== 'GET' && method !== 'HEAD') {
    if (incoming) body = incoming
    else if (raw!.body) body = raw!.body as unknown as AsyncIterable<Uint8Array>
  }
  const signal = (): AbortSignal => {
    if (controller) return controller.signal
    const ctrl = (controller = new AbortController())
    if (outgoing) {
      if (outgoing.closed && !outgoing.writableFinished) ctrl.abort()
      else outgoing.once('close', () => {
        if (!outgoing.writableFinished) ctrl.abort()
      })
    } else raw!.signal?.addEventListener('abort', () => ctrl.abort(), { once: true })
    return ctrl.signal
  }

  const req: ProxyRequest = {
    method,
    scheme,
    host: normaliseHost(hostRaw),
    path,
    headers,
    body,
    clientIp: (incoming?.socket.remoteAddress ?? headers['x-real-ip'] ?? '127.0.0.1').replace(/^::ffff:/, ''),
    get signal() {
      return signal()
    },
  }
  const result = await opts.proxy.handle(req)

  const finish = (bytes: number, aborted: boolean, sent: ProxyResult = result) => {
    opts.onServed?.(sent, bytes)
    if (!opts.accessLog) return
    opts.log({
      msg: 'request',
      method,
      url: path,
      host: req.host,
      status: sent.status,
      cache: formatCacheStatus(sent.cacheStatus),
      originMs: result.originMs === undefined ? undefined : Math.round(result.originMs * 10) / 10,
      ms: Math.round((performance.now() - started) * 10) / 10,
      bytes,
      aborted: aborted || undefined,
    })
  }

  if (outgoing) {
    sendNode(outgoing, result, finish)
    return undefined
  }
  return toWebResponse(result, finish)
}

/** Host field lines in a raw header list (names at even indexes). */
function countHost(rawHeaders: readonly string[]): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.length === 4 && rawHeaders[i]!.toLowerCase() === 'host') n++
  return n
}

function sendNode(outgoing: ServerResponse, result: ProxyResult, finish: (bytes: number, aborted: boolean, sent?: ProxyResult) => void): void {
  let bytes = 0
  let sent = result
  outgoing.once('close', () => finish(bytes, !outgoing.writableFinished, sent))
  const body = result.body
  if (body === null || Buffer.isBuffer(body)) {
    outgoing.writeHead(result.status, result.headers)
    bytes = body?.length ?? 0
    outgoing.end(body ?? undefined)
    return
  }
  // Node puts the head on the wire with the first body chunk anyway. Writing it only then means an
  // origin that fails before its first body byte (stalls past the body timeout, closes) still gets
  // the client a clear 502/504 (RFC 9110 §15.6.3, §15.6.5) instead of an empty reply.
  let headSent = false
  const sendHead = () => {
    if (headSent) return
    headSent = true
    outgoing.writeHead(result.status, result.headers)
  }
  // Registered before pipe() so the head goes out before pipe writes the first chunk or ends.
  body.on('data', (chunk: Buffer) => {
    sendHead()
    bytes += chunk.length
  })
  body.once('end', sendHead)
  body.once('error', (err: unknown) => {
    if (!headSent && result.bodyFailure && !outgoing.destroyed) {
      headSent = true
      sent = result.bodyFailure(err)
      outgoing.writeHead(sent.status, sent.headers)
      outgoing.end(Buffer.isBuffer(sent.body) ? sent.body : undefined)
      return
    }
    // Once the head is out, an error mid-body (origin died, corrupt disk read) cannot change the status:
    // cut the connection so the client sees a truncated response, never a complete-looking wrong one.
    outgoing.destroy()
  })
  outgoing.once('close', () => {
    if (!body.destroyed && !body.readableEnded) body.destroy()
  })
  body.pipe(outgoing)
}

function toWebResponse(result: ProxyResult, finish: (bytes: number, aborted: boolean) => void): Response {
  const headers = new Headers()
  for (const [name, value] of Object.entries(result.headers)) {
    if (Array.isArray(value)) for (const v of value) headers.append(name, v)
    else headers.set(name, value)
  }
  const body = result.body
  if (body === null || Buffer.isBuffer(body)) {
    finish(body?.length ?? 0, false)
    return new Response(body === null ? null : new Uint8Array(body), { status: result.status, headers })
  }
  let bytes = 0
  body.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  body.once('end', () => finish(bytes, false))
  body.once('error', () => finish(bytes, true))
  return new Response(Readable.toWeb(body) as unknown as ReadableStream, { status: result.status, headers })
}
