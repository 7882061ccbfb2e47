// Talking to the origin: one keep-alive pool per origin (undici Agent), no
// redirects followed, no decompression (undici.request hands us raw bytes),
// and every failure classified so the client gets a clear 502 or 504. This is
// the one sender: every origin request (fill, pass, revalidation, populate)
// goes through send(), which counts its latency or its failure.

import { Agent, errors as undiciErrors, type Dispatcher } from 'undici'
import type { Readable } from 'node:stream'
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

export interface OriginRequest {
  /** Origin base URL, e.g. http://127.0.0.1:3000 (a path prefix is honoured). */
  origin: URL
  method: string
  /** Path and query exactly as the client sent them. */
  path: string
  headers: Record<string, string | string[]>
  body?: Readable | AsyncIterable<Uint8Array> | Buffer | null
  signal?: AbortSignal
  /** Each interim (1xx) response the origin sends before its final one (RFC 9110 §15.2). */
  onInterim?: (status: number, headers: HeaderBag) => void
}

export interface OriginResponse {
  status: number
  headers: HeaderBag
  body: Readable
  /** ms from sending until the response headers arrived. */
  headersMs: number
}

export type OriginFailureKind = OriginErrorKind

/** A failed origin exchange, already mapped to the status the client should see. */
export class OriginError extends Error {
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
    async send(req) {
      const started = performance.now()
      try {
        // The agent itself, not undici's request(url, opts) helper, which parses the origin and
        // the path into URL objects and back on every request. The path goes out exactly as
        // caje keyed it (canonical-url.ts), after the origin's own path prefix.
        const res = await agent.request({
          origin: req.origin.origin,
          method: req.method as Dispatcher.HttpMethod,
          path: basePath(req.origin) + req.path,
          headers: req.headers,
          body: req.body ?? null,
          signal: req.signal,
          onInfo: req.onInterim && ((info: { statusCode: number; headers: HeaderBag }) => req.onInterim!(info.statusCode, info.headers)),
          // No redirect interceptor is installed: a 3xx goes back to the client as it is.
        } as Dispatcher.RequestOptions)
        const headersMs = performance.now() - started
        opts.metrics?.originLatency(headersMs / 1000, res.statusCode)
        return { status: res.statusCode, headers: res.headers as HeaderBag, body: res.body as unknown as Readable, headersMs }
      } catch (err) {
        const e = classifyOriginError(err, req.origin)
        // A client that went away is not the origin's failure.
        if (e.kind !== 'aborted') opts.metrics?.originError(e.kind)
        throw e
      }
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
