// Between the HTTP server and the proxy core. One writer (send) decides what goes out for every
// answer: when its head is written, the 502/504 for a body that fails before its first byte, the
// cut connection for one that fails later, when a lent body goes back, the bytes counted, and the
// metrics and access-log line. It writes to a Node ServerResponse (production: the Node request
// and response used directly, bodies piped as Node streams) or to a WebAnswer, which becomes the
// web Response returned to a web Request (Hono's fallback route under app.request(): tests, other
// runtimes).

import { OutgoingMessage, validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http'
// The module's binding: the global `performance` is a getter, looked up on every call.
import { performance } from 'node:perf_hooks'
import type { Writable } from 'node:stream'
import type { Context, MiddlewareHandler } from 'hono'
import type { BodyLoan } from '../cache/types.ts'
import { normaliseHost } from '../config.ts'
import { logRequest, type Logger } from '../log.ts'
import { canonicalTarget } from '../canonical-url.ts'
import { formatCacheStatus } from './cache-status.ts'
import type { FlatHeaders, HeaderBag } from './headers.ts'
import { writeInterim } from './interim.ts'
import type { AbortSource } from './origin.ts'
import { textResult, type Proxy, type ProxyRequest, type ProxyResult } from './proxy.ts'
import { WebAnswer } from './web-answer.ts'

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
  /** After each exchange (metrics, traffic, hit counts per key); `request` is what the access log names (host and path with query). */
  onServed?: OnServed
}

/**
 * Called for every answered request once its answer is sent, on the request path (served.ts
 * accountServed); `at` is when (epoch ms), read once for all the answers written together.
 */
export type OnServed = (result: ProxyResult, bytes: number, request: ServedRequest, at?: number) => void

function headersFromWeb(headers: Headers): FlatHeaders {
  const out: FlatHeaders = {}
  headers.forEach((value, name) => {
    out[name] = value
  })
  return out
}

/**
 * Node's request headers as caje's flat record. Node already lower-cases names and joins
 * repeated fields; only Set-Cookie stays an array, and a request has no business sending
 * one, so the object is used as it is unless it does.
 */
function flatten(headers: IncomingMessage['headers']): FlatHeaders {
  if (headers['set-cookie'] === undefined) return headers as FlatHeaders
  const out: FlatHeaders = {}
  for (const name in headers) {
    const v = headers[name]
    if (v !== undefined) out[name] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

/** A request caje refuses before it reaches the proxy (RFC 9110 §15.5.1). */
function refusal(message: string): ProxyResult {
  return textResult(400, `400 Bad Request: ${message}`, { fwd: 'bypass', detail: 'bad-request' })
}

/** Host names already normalised: the same few hosts arrive on every request. Bounded, since clients choose them. */
const normalisedHosts = new Map<string, string>()
const NORMALISED_HOSTS_LIMIT = 1024
const lastHost = { raw: '', host: '' }

/** Why a request is refused before it reaches the proxy (refusal()). */
class Refused {
  constructor(readonly message: string) {}
}

/** The site a request is for (Host, or X-Forwarded-Host when trusted), normalised, or why it is refused. */
function hostOf(opts: ProxyHandlerOptions, headers: FlatHeaders): string | Refused {
  const hostRaw = (opts.trustForwarded && headers['x-forwarded-host']?.split(',')[0]?.trim()) || headers.host
  if (!hostRaw) return new Refused('the request has no Host header; send one naming the site you want')
  // The host of the last request first: comparing the field's text is cheaper than hashing it for the map.
  let host = hostRaw === lastHost.raw ? lastHost.host : normalisedHosts.get(hostRaw)
  if (host === undefined) {
    if (!/^[A-Za-z0-9.\-_[\]:]+$/.test(hostRaw)) return new Refused('the Host header is not a valid host name')
    host = normaliseHost(hostRaw)
    if (normalisedHosts.size >= NORMALISED_HOSTS_LIMIT) normalisedHosts.clear()
    normalisedHosts.set(hostRaw, host)
  }
  lastHost.raw = hostRaw
  lastHost.host = host
  return host
}

/** The scheme a request keys as: http, or https when a trusted proxy says the client used it. */
function schemeOf(opts: ProxyHandlerOptions, headers: FlatHeaders): 'http' | 'https' {
  if (!opts.trustForwarded) return 'http'
  // The first value is the one the trusted proxy nearest the client wrote; anything but https
  // (scheme names are case-insensitive, RFC 3986 §3.1) keys as http. The origin is sent this
  // normalised scheme and host (forward.ts), never the raw fields, so key and body agree.
  return headers['x-forwarded-proto']?.split(',')[0]?.trim().toLowerCase() === 'https' ? 'https' : 'http'
}

/**
 * A request arriving on Node's server. A class, not an object literal with closures: the
 * abort signal and client address are worked out only when something asks (origin
 * requests), and a hit allocates nothing for them.
 */
class NodeProxyRequest implements ProxyRequest {
  readonly body: ProxyRequest['body']
  #gone: ClientGone | undefined
  constructor(
    readonly method: string,
    readonly scheme: 'http' | 'https',
    readonly host: string,
    readonly path: string,
    readonly headers: FlatHeaders,
    readonly incoming: IncomingMessage,
    readonly outgoing: ServerResponse,
    readonly started: number,
  ) {
    this.body = method === 'GET' || method === 'HEAD' ? null : incoming
  }

  interim(status: number, headers: HeaderBag): void {
    writeInterim(this.incoming, this.outgoing, status, headers)
  }

  get clientIp(): string {
    return (this.incoming.socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '')
  }

  get signal(): AbortSource {
    return (this.#gone ??= new ClientGone(this.outgoing))
  }
}

/**
 * The client's connection closing before its answer was complete, as the origin sender's
 * cancellation (origin.ts AbortSource): one listener on the response, instead of an
 * AbortController per origin request and EventTarget listeners added and removed on it.
 * Like an AbortSignal's, a listener added after the abort is never called.
 */
class ClientGone implements AbortSource {
  aborted = false
  readonly reason = undefined
  #listeners: (() => void)[] = []

  constructor(outgoing: AnswerTarget) {
    if (outgoing.closed && !outgoing.writableFinished) this.aborted = true
    // `on`, not `once`: a response closes once, and once() wraps each listener in two more objects.
    else
      outgoing.on('close', () => {
        if (!outgoing.writableFinished) this.#abort()
      })
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.aborted) this.#listeners.push(listener)
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.#listeners.indexOf(listener)
    if (i >= 0) this.#listeners.splice(i, 1)
  }

  #abort(): void {
    this.aborted = true
    const listeners = this.#listeners
    this.#listeners = []
    for (const listener of listeners) listener()
  }
}

function nodeRequest(opts: ProxyHandlerOptions, incoming: IncomingMessage, outgoing: ServerResponse, started: number): NodeProxyRequest | Refused {
  // RFC 9112 §3.2: a request with more than one Host field line gets a 400. Node keeps the first
  // one; a proxy in front of caje may key on the last, and the two would disagree on the site.
  if (countHost(incoming.rawHeaders) > 1) return new Refused('the request has more than one Host header; send exactly one')
  const headers = flatten(incoming.headers)
  const host = hostOf(opts, headers)
  if (host instanceof Refused) return host
  const url = incoming.url ?? '/'
  if (!url.startsWith('/')) {
    // RFC 9112 §3.2.2: an absolute-form target's authority is the request's host, not the Host
    // field. One naming another site would have caje and whatever routed the request disagree on
    // the site (as with two Host fields): refused rather than keyed under either.
    const target = targetHost(url)
    if (target !== undefined && headers.host !== undefined && target !== normaliseHost(headers.host)) {
      return new Refused(`the request target names the host "${target}" but the Host header names "${headers.host}"; send the same host in both`)
    }
  }
  // One spelling of the target for the key, the origin and purge (canonical-url.ts).
  const path = canonicalTarget(url.startsWith('/') ? url : pathAndQuery(url))
  return new NodeProxyRequest(incoming.method ?? 'GET', schemeOf(opts, headers), host, path, headers, incoming, outgoing, started)
}

function webRequest(opts: ProxyHandlerOptions, raw: Request, answer: WebAnswer, started: number): (ProxyRequest & Served) | Refused {
  const headers = headersFromWeb(raw.headers)
  const host = hostOf(opts, headers)
  if (host instanceof Refused) return host
  const method = raw.method
  let gone: ClientGone | undefined
  return {
    method,
    scheme: schemeOf(opts, headers),
    host,
    path: canonicalTarget(pathAndQuery(raw.url)),
    headers,
    body: method !== 'GET' && method !== 'HEAD' && raw.body ? (raw.body as unknown as AsyncIterable<Uint8Array>) : null,
    // A web Request carries no peer address (app.request() is a call inside this process), and a
    // client's own X-Real-IP must never stand in for one: X-Forwarded-For would carry its lie on.
    clientIp: '127.0.0.1',
    started,
    // The caller aborting its Request, or cancelling the Response's body, is the client leaving.
    get signal() {
      if (!gone) {
        gone = new ClientGone(answer)
        if (raw.signal?.aborted) answer.destroy()
        else raw.signal?.addEventListener('abort', () => void answer.destroy(), { once: true })
      }
      return gone
    },
  }
}

/** The normalised host of an absolute-form request target, or undefined for any other form. */
function targetHost(url: string): string | undefined {
  if (!/^https?:\/\//i.test(url)) return undefined
  try {
    return normaliseHost(new URL(url).host)
  } catch {
    return undefined
  }
}

function pathAndQuery(url: string): string {
  const u = new URL(url)
  return u.pathname + u.search
}

/** The fallback route: every request outside /_caje/ goes through the proxy. */
export function proxyHandler(opts: ProxyHandlerOptions): MiddlewareHandler {
  const listener = nodeProxyListener(opts)
  return async function proxyRoute(c: Context) {
    const env = (c.env ?? {}) as NodeBindings
    if (env.incoming && env.outgoing) {
      const outgoing = env.outgoing
      listener(env.incoming, outgoing)
      // Settles once the answer is out (or the client left), as a handler that wrote it itself would.
      if (!outgoing.writableEnded) await new Promise<void>((resolve) => outgoing.once('close', resolve).once('finish', resolve))
      return ALREADY_SENT
    }
    return webExchange(opts, c.req.raw)
  }
}

/**
 * The exchange as a plain Node request listener, for the server's fast path:
 * requests outside /_caje/ reach the proxy without a trip through the router.
 * The proxy answers a result or a promise of one (a fresh hit whose body is at
 * hand is answered before this returns, and written at the end of the turn:
 * writeAtTurnEnd); one writer sends either.
 */
export function nodeProxyListener(opts: ProxyHandlerOptions): (incoming: IncomingMessage, outgoing: ServerResponse) => void {
  return (incoming, outgoing) => {
    const started = opts.accessLog ? performance.now() : 0
    const req = nodeRequest(opts, incoming, outgoing, started)
    if (req instanceof Refused) send(opts, outgoing, { method: incoming.method ?? 'GET', path: incoming.url ?? '/', host: '', started }, refusal(req.message))
    else serveInto(opts, req, outgoing)
  }
}

/** One proxied exchange from a web Request (app.request(), other runtimes): the same writer, into a WebAnswer. */
function webExchange(opts: ProxyHandlerOptions, raw: Request): Promise<Response> {
  const started = opts.accessLog ? performance.now() : 0
  const answer = new WebAnswer()
  const req = webRequest(opts, raw, answer, started)
  if (req instanceof Refused) send(opts, answer, { method: raw.method, path: raw.url, host: '', started }, refusal(req.message))
  else serveInto(opts, req, answer)
  return answer.response
}

/** The proxy's answer to `req`, at once or once its promise settles, written to `target`. */
function serveInto(opts: ProxyHandlerOptions, req: ProxyRequest & Served, target: AnswerTarget): void {
  let answer: ProxyResult | Promise<ProxyResult>
  try {
    answer = opts.proxy.serve(req)
  } catch (err) {
    exchangeFailed(opts, target, err)
    return
  }
  if (answer instanceof Promise)
    answer.then(
      (result) => send(opts, target, req, result),
      (err: unknown) => exchangeFailed(opts, target, err),
    )
  else send(opts, target, req, answer)
}

/** The proxy itself failed (a bug, not an origin error): a plain 500, or a cut connection once the head is out. */
function exchangeFailed(opts: ProxyHandlerOptions, outgoing: AnswerTarget, err: unknown): void {
  opts.log({ level: 'error', msg: 'proxy exchange failed', error: (err as Error).message })
  if (!outgoing.headersSent) {
    outgoing.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    outgoing.end('500 Internal Server Error: caje failed to handle this request; see its log.\n')
  } else outgoing.destroy()
}

/** A finished exchange's request; with a scheme when the proxy handled it (not refused), enough to name its cache key (cache-key.ts primaryKey). */
export interface ServedRequest {
  method: string
  host: string
  path: string
  scheme?: ProxyRequest['scheme']
  /** The rules' match, when the request reached the proxy: its key is the one stored. */
  rules?: ProxyRequest['rules']
}

/** What the access log says of a request, whatever became of it. */
interface Served {
  method: string
  path: string
  host: string
  /** performance.now() at arrival; 0 when there is no access log. */
  started: number
}

/** Metrics and the access log for one finished exchange. */
function finished(opts: ProxyHandlerOptions, served: Served, sent: ProxyResult, bytes: number, aborted: boolean, at = Date.now()): void {
  opts.onServed?.(sent, bytes, served, at)
  if (!opts.accessLog) return
  const now = performance.now()
  logRequest(
    opts.log,
    served.method,
    served.path,
    served.host,
    sent.status,
    sent.cacheStatusText ?? formatCacheStatus(sent.cacheStatus),
    sent.originMs === undefined ? undefined : Math.round(sent.originMs * 10) / 10,
    Math.round((now - served.started) * 10) / 10,
    bytes,
    aborted,
    now,
  )
}

/** Host field lines in a raw header list (names at even indexes). */
function countHost(rawHeaders: readonly string[]): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.length === 4 && rawHeaders[i]!.toLowerCase() === 'host') n++
  return n
}

/**
 * Where an answer is written: Node's ServerResponse, or a WebAnswer (the same calls, ending in a
 * web Response). Only send, writeWhole and exchangeFailed write to one.
 */
interface AnswerTarget extends Writable {
  readonly headersSent: boolean
  writeHead(status: number, headers: ProxyResult['headers']): unknown
  /** The request being answered, on Node (settleRead). */
  readonly req?: IncomingMessage
}

/**
 * Answers whose body is whole in memory, waiting for the end of this turn's I/O (writeAtTurnEnd):
 * four slots each (options, target, request, result), in one array kept from turn to turn, so
 * that queueing an answer allocates nothing.
 */
const wholeAnswers: (ProxyHandlerOptions | AnswerTarget | Served | ProxyResult | undefined)[] = []
let queuedAnswers = 0

/**
 * Answers ready at once (hits from memory, 304s, caje's own errors) are written together, after
 * every request that arrived in the same turn of the event loop has been answered (setImmediate
 * runs after the I/O phase). Each answer is still its own write on its own socket; what changes is
 * that they go out back to back. A client on this host (the benchmark's load generator, a proxy
 * in front) sleeping until its next response is then woken once for a burst of them instead of
 * once per response; on this 2-core machine each wake-up cost more than all of caje's own code on
 * a hit, and the load generator slept before nearly every response (0.95 times per request).
 * A lone request waits only for the end of its own turn.
 */
function writeAtTurnEnd(opts: ProxyHandlerOptions, outgoing: AnswerTarget, served: Served, result: ProxyResult): void {
  if (queuedAnswers === 0) setImmediate(writeWholeAnswers)
  const i = queuedAnswers * 4
  wholeAnswers[i] = opts
  wholeAnswers[i + 1] = outgoing
  wholeAnswers[i + 2] = served
  wholeAnswers[i + 3] = result
  queuedAnswers++
}

function writeWholeAnswers(): void {
  // One clock reading for the answers written together (accounting names the minute they were sent in).
  const at = Date.now()
  try {
    // An answer queued while these are written is written in this same loop.
    for (let i = 0; i < queuedAnswers * 4; i += 4) {
      const opts = wholeAnswers[i] as ProxyHandlerOptions
      const outgoing = wholeAnswers[i + 1] as AnswerTarget
      const served = wholeAnswers[i + 2] as Served
      const result = wholeAnswers[i + 3] as ProxyResult
      wholeAnswers[i] = wholeAnswers[i + 1] = wholeAnswers[i + 2] = wholeAnswers[i + 3] = undefined
      try {
        writeWhole(opts, outgoing, served, result, at)
      } catch (err) {
        // One answer failing (a header Node refuses) must not keep the others of the turn unsent.
        exchangeFailed(opts, outgoing, err)
      }
    }
  } finally {
    queuedAnswers = 0
  }
}

function writeWhole(opts: ProxyHandlerOptions, outgoing: AnswerTarget, served: Served, result: ProxyResult, at: number): void {
  const body = result.body as Buffer | null
  // The client left while its answer waited: nothing to write, and the log says it was cut.
  if (outgoing.destroyed) {
    result.loan?.giveBack()
    finished(opts, served, result, 0, true, at)
    return
  }
  // The whole answer is handed to the socket here: account for it now, without a listener per request.
  settleRead(outgoing.req)
  writeHead(outgoing, result.status, result.headers)
  outgoing.end(body ?? undefined)
  if (result.loan !== undefined) giveBackWhenSent(outgoing, result.loan)
  finished(opts, served, result, body?.length ?? 0, false, at)
}

/**
 * Once a request is answered, Node "dumps" it when its handler did not read it: resume, flow,
 * end, destroy, close, a chain of process.nextTick calls per request. Under load, V8 often ends up
 * building nextTick's tick object (an object literal with computed symbol keys) in its runtime
 * (Runtime_DefineKeyedOwnPropertyInLiteral and map transitions each time, about 190 ns instead of
 * 25 ns a call), and that chain then cost a memory hit about 2 of its 17 µs of main-thread time. A request with nothing
 * buffered unread is marked dumped instead: Node then drops whatever of its body is still to
 * arrive (parserOnBody) and goes on reading the connection. A request with bytes buffered is left
 * to Node: the buffer may have paused the connection, and only the dump's resume reads it again.
 * `_dumped` is Node's own flag (IncomingMessage._dump); where it does not exist, nothing changes.
 */
function settleRead(incoming: IncomingMessage | undefined): void {
  const node = incoming as (IncomingMessage & { _dumped?: unknown }) | undefined
  if (typeof node?._dumped === 'boolean' && node.readableLength === 0) node._dumped = true
}

/**
 * Node's slot for the fields of a response set before its head (OutgoingMessage[kOutHeaders]:
 * lower-case name → [name, value]). writeHead() with no fields of its own writes the ones there as
 * they are: setHeader() checked each when it put it there. Undefined where Node keeps them
 * otherwise; every head then goes through writeHead() with its fields.
 */
const OUT_HEADERS: symbol | undefined = (() => {
  const probe = new OutgoingMessage()
  probe.setHeader('x-probe', 'y')
  for (const symbol of Object.getOwnPropertySymbols(probe)) {
    const slot = (probe as unknown as Record<symbol, unknown>)[symbol] as Record<string, unknown> | null
    const entry = slot?.['x-probe']
    if (symbol.description === 'kOutHeaders' && Array.isArray(entry) && entry[0] === 'x-probe' && entry[1] === 'y') return symbol
  }
  return undefined
})()

type OutFields = Record<string, [string, string | string[]]>
/** A shared field set's entries for Node's slot, checked once; null when Node refuses one of them. */
const outFields = new WeakMap<object, OutFields | null>()
/**
 * The prototype of those entries: empty, with nothing above it, as Node's own slot has (a field
 * named `__proto__` is then a field, and nothing inherited is ever enumerated). Node's slot has
 * no prototype at all, which V8 keeps as a hash table: enumerated without a cache, looked up by
 * hashing, on every head written. One with a prototype is an ordinary object.
 */
const NO_FIELDS: object = Object.freeze(Object.create(null))

/** A frozen (shared) set's entries for Node's slot (see outFields); undefined for a set not frozen. */
function checkedOutFields(headers: ProxyResult['headers']): OutFields | null | undefined {
  let out = outFields.get(headers)
  // A set seen before is answered by the map alone; Object.isFrozen() is a call into V8's
  // runtime, made once per set (and for every set of an answer's own, which the map never holds).
  if (out === undefined && Object.isFrozen(headers)) {
    out = Object.create(NO_FIELDS) as OutFields
    try {
      for (const name in headers) {
        const value = headers[name]!
        validateHeaderName(name)
        if (Array.isArray(value)) for (const v of value) validateHeaderValue(name, v)
        else validateHeaderValue(name, value)
        out[name] = [name, value]
      }
      Object.freeze(out)
    } catch {
      // writeHead() with the fields themselves throws the same error, answered as any other.
      out = null
    }
    outFields.set(headers, out)
  }
  return out
}

/**
 * The head of an answer. A frozen field set is one that many answers share (a plain hit's fields
 * within a second, proxy.ts storedAnswer): Node's checks of every name and value (two regular
 * expressions per field, ten fields on a hit) are then made once for all those answers, when it is
 * first written, and each answer's head is written from Node's own slot without them.
 */
function writeHead(outgoing: AnswerTarget, status: number, headers: ProxyResult['headers']): void {
  if (OUT_HEADERS !== undefined) {
    const node = outgoing as unknown as ServerResponse & Record<symbol, unknown>
    // null: a ServerResponse with no field set (setHeader) before this head.
    if (node[OUT_HEADERS] === null) {
      const out = checkedOutFields(headers)
      if (out != null) {
        node[OUT_HEADERS] = out
        node.writeHead(status)
        return
      }
    }
  }
  outgoing.writeHead(status, headers)
}

/**
 * A lent body (StoredBody.loan) goes back once nothing reads it: at once when the socket took
 * the whole answer (what almost every hit sees, so no listener per request), else when the
 * response closes (written out, or its connection gone: then Node holds no write of it).
 */
function giveBackWhenSent(outgoing: AnswerTarget, loan: BodyLoan): void {
  if (outgoing.writableFinished) loan.giveBack()
  else outgoing.once('close', () => loan.giveBack())
}

/** The one writer of an answer, whole or streamed, to either target. */
function send(opts: ProxyHandlerOptions, outgoing: AnswerTarget, served: Served, result: ProxyResult): void {
  const body = result.body
  if (body === null || Buffer.isBuffer(body)) {
    writeAtTurnEnd(opts, outgoing, served, result)
    return
  }
  let bytes = 0
  let sent = result
  outgoing.once('close', () => finished(opts, served, sent, bytes, !outgoing.writableFinished))
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
  if (result.loan !== undefined) giveBackWhenSent(outgoing, result.loan)
  body.pipe(outgoing)
}
