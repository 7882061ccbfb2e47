// Talking to the origin: one keep-alive pool per origin (undici Agent), no
// redirects followed, no decompression (undici's dispatch hands us the raw bytes),
// and every failure classified so the client gets a clear 502 or 504. This is
// the one sender: every origin request (fill, pass, revalidation, populate)
// goes through send(), which counts its latency or its failure.

import { Agent, errors as undiciErrors, util as undiciUtil, type Dispatcher } from '../undici-core.ts'
import { Readable } from 'node:stream'
import type { OriginErrorKind } from '../vocabulary.ts'
import type { HeaderBag } from './headers.ts'

export interface OriginOptions {
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  /** Where every origin exchange is counted: fills, pass-through, revalidations, populate. */
  metrics?: OriginMetrics
}

/** What the origin sender reports (src/metrics.ts implements it). */
export interface OriginMetrics {
  originLatency(seconds: number, status: number): void
  originError(kind: OriginFailureKind): void
}

/**
 * What the sender needs of a cancellation: whether it happened, and one listener at a time.
 * An AbortSignal is one; so is the adapter's cheaper watch on the client's connection
 * (http-adapter.ts), since an AbortController per miss, with its EventTarget listeners,
 * cost more than anything else the sender does for the request.
 */
export interface AbortSource {
  readonly aborted: boolean
  readonly reason?: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

export interface OriginRequest {
  /** Origin base URL, e.g. http://127.0.0.1:3000 (a path prefix is honoured). */
  origin: URL
  method: string
  /** Path and query exactly as the client sent them. */
  path: string
  headers: Record<string, string | string[]>
  body?: Readable | AsyncIterable<Uint8Array> | Buffer | null
  signal?: AbortSource
  /** Each interim (1xx) response the origin sends before its final one (RFC 9110 §15.2). */
  onInterim?: (status: number, headers: HeaderBag) => void
}

export interface OriginResponse {
  status: number
  headers: HeaderBag
  /** The body as a stream; for a body read whole (`whole`), a stream of it made on first use. */
  readonly body: Readable
  /**
   * The whole body, when it came in the same socket read as the head (most small responses):
   * the proxy then answers and stores it in one piece, without a stream in between.
   */
  whole?: Buffer
  /** ms from sending until the response headers arrived. */
  headersMs: number
}


export type OriginFailureKind = OriginErrorKind

/** A failed origin exchange, already mapped to the status the client should see. */
export class OriginError extends Error {
  /** The status of the origin's response head, when the exchange failed after it (in a body read whole). */
  responseStatus?: number

  constructor(
    readonly kind: OriginFailureKind,
    readonly status: 502 | 504,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'OriginError'
  }
}

/** Map undici / socket errors to what went wrong, in words an operator can act on. */
export function classifyOriginError(err: unknown, origin: URL): OriginError {
  if (err instanceof OriginError) return err
  const e = err as { code?: string; name?: string; message?: string }
  const code = e?.code ?? ''
  const where = origin.host
  if (e?.name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR') {
    return new OriginError('aborted', 502, `request to origin ${where} was aborted`, { cause: err })
  }
  if (err instanceof undiciErrors.ConnectTimeoutError || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new OriginError('timeout', 504, `origin ${where} did not accept the connection in time`, { cause: err })
  }
  if (err instanceof undiciErrors.HeadersTimeoutError || code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new OriginError('timeout', 504, `origin ${where} did not answer in time`, { cause: err })
  }
  if (err instanceof undiciErrors.BodyTimeoutError || code === 'UND_ERR_BODY_TIMEOUT') {
    return new OriginError('timeout', 504, `origin ${where} stopped sending the body`, { cause: err })
  }
  if (code === 'ECONNREFUSED') return new OriginError('connect', 502, `origin ${where} refused the connection`, { cause: err })
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new OriginError('dns', 502, `origin host ${origin.hostname} could not be resolved`, { cause: err })
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') {
    return new OriginError('reset', 502, `origin ${where} closed the connection unexpectedly`, { cause: err })
  }
  // undici's HTTPParserError often has no code (it looks the llhttp error number up in a
  // name → number table, which yields undefined): recognise the class, not only HPE_* codes.
  if (err instanceof undiciErrors.HTTPParserError || e?.name === 'HTTPParserError' || code.startsWith('HPE_') || code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_HEADERS_OVERFLOW' || code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') {
    return new OriginError('protocol', 502, `origin ${where} sent an invalid HTTP response`, { cause: err })
  }
  return new OriginError('other', 502, `request to origin ${where} failed`, { cause: err })
}

export interface OriginClient {
  send(req: OriginRequest): Promise<OriginResponse>
  close(): Promise<void>
}

export function createOriginClient(opts: OriginOptions): OriginClient {
  const agent = new Agent({
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.headersTimeoutMs,
    bodyTimeout: opts.bodyTimeoutMs,
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 60_000,
    // Pipelining would let one slow response hold up others on the socket.
    pipelining: 1,
    connections: 256,
  })

  return {
    send(req) {
      return new Promise<OriginResponse>((resolve, reject) => {
        // The agent itself, with a handler of our own: no URL parsing per request (undici's
        // request() helper parses origin and path into URL objects and back), and no body stream
        // for a small body. The path goes out exactly as caje keyed it (canonical-url.ts), after
        // the origin's own path prefix. No redirect interceptor is installed: a 3xx goes back to
        // the client as it is.
        agent.dispatch(
          {
            origin: req.origin.origin,
            method: req.method as Dispatcher.HttpMethod,
            path: basePath(req.origin) + req.path,
            headers: req.headers,
            body: (req.body ?? null) as Dispatcher.DispatchOptions['body'],
          },
          new OriginExchange(req, opts.metrics, resolve, reject),
        )
      })
    },
    async close() {
      await agent.close()
    },
  }
}

/** The origin URL's path prefix without its trailing slash ('' for most origins). */
function basePath(origin: URL): string {
  const p = origin.pathname
  return p === '/' ? '' : p.replace(/\/$/, '')
}

const EMPTY = Buffer.alloc(0)

/**
 * One origin exchange as an undici dispatch handler. It answers (resolves) as soon as the head is
 * in, never later: when the whole body came in the same socket read as the head (undici parses a
 * read in one go), the answer carries it as one buffer (`whole`), and the proxy sends and stores
 * it without a stream; otherwise the body streams as it arrives, paced by its reader. A failure
 * before the answer rejects with a classified OriginError. Counts the latency or the failure.
 */
class OriginExchange implements Dispatcher.DispatchHandler {
  private readonly started = performance.now()
  private abort: ((reason?: Error) => void) | undefined
  private resumeOrigin: (() => void) | undefined
  private answered = false
  private done = false
  private status = 0
  private headers: HeaderBag = {}
  private headersMs = 0
  /** Chunks that came in the same read as the head, until the answer. */
  private chunks: Buffer[] = []
  private stream: Readable | undefined

  constructor(
    private readonly req: OriginRequest,
    private readonly metrics: OriginMetrics | undefined,
    private readonly resolve: (res: OriginResponse) => void,
    private readonly reject: (err: OriginError) => void,
  ) {}

  private readonly onSignal = () => this.abort?.(abortReason(this.req.signal!))

  onConnect(abort: (reason?: Error) => void): void {
    this.abort = abort
    const signal = this.req.signal
    if (!signal) return
    if (signal.aborted) abort(abortReason(signal))
    else signal.addEventListener('abort', this.onSignal, { once: true })
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    const headers = undiciUtil.parseHeaders(rawHeaders) as HeaderBag
    if (statusCode < 200) {
      // Interim responses (RFC 9110 §15.2) are relayed; the final response follows.
      this.req.onInterim?.(statusCode, headers)
      return true
    }
    this.status = statusCode
    this.headers = headers
    this.resumeOrigin = resume
    this.headersMs = performance.now() - this.started
    this.metrics?.originLatency(this.headersMs / 1000, statusCode)
    // After undici has parsed the rest of this read: answer with what there is by then.
    queueMicrotask(() => this.answerStreaming())
    return true
  }

  onData(chunk: Buffer): boolean {
    if (!this.answered) {
      this.chunks.push(chunk)
      return true
    }
    // false pauses the origin socket until the reader asks for more (read() below).
    return this.stream!.push(chunk)
  }

  onComplete(): void {
    this.finish()
    if (this.answered) {
      this.stream?.push(null)
      return
    }
    const chunks = this.chunks
    this.chunks = []
    this.answerWhole(chunks.length === 0 ? EMPTY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
  }

  onError(err: Error): void {
    this.finish()
    if (!this.answered) {
      this.answered = true
      const e = classifyOriginError(err, this.req.origin)
      // A client that went away is not the origin's failure.
      if (e.kind !== 'aborted') this.metrics?.originError(e.kind)
      this.reject(e)
      return
    }
    // Mid-body: the reader sees the error (the client's response is cut, never completed).
    this.stream?.destroy(err)
  }

  private finish(): void {
    this.done = true
    this.req.signal?.removeEventListener('abort', this.onSignal)
  }

  /** The body is still coming: answer with a stream that starts with the chunks read so far. */
  private answerStreaming(): void {
    if (this.answered) return
    this.answered = true
    const stream = new Readable({
      read: () => this.resumeOrigin?.(),
      destroy: (err, cb) => {
        // A reader that gives up (client gone) frees the origin connection at once.
        if (!this.done) this.abort?.(err ?? new undiciErrors.RequestAbortedError())
        cb(err)
      },
    })
    this.stream = stream
    for (const chunk of this.chunks) stream.push(chunk)
    this.chunks = []
    this.resolve({ status: this.status, headers: this.headers, body: stream, headersMs: this.headersMs })
  }

  private answerWhole(whole: Buffer): void {
    this.answered = true
    this.resolve(new WholeResponse(this.status, this.headers, whole, this.headersMs))
  }
}

/** An origin response whose body came whole with its head; its stream is made only when asked for. */
class WholeResponse implements OriginResponse {
  #stream: Readable | undefined

  constructor(
    readonly status: number,
    readonly headers: HeaderBag,
    readonly whole: Buffer,
    readonly headersMs: number,
  ) {}

  get body(): Readable {
    if (!this.#stream) {
      const stream = (this.#stream = new Readable({ read() {} }))
      if (this.whole.length) stream.push(this.whole)
      stream.push(null)
    }
    return this.#stream
  }
}

function abortReason(signal: AbortSource): Error {
  return signal.reason instanceof Error ? signal.reason : new undiciErrors.RequestAbortedError()
}
