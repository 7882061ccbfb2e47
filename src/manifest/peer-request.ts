// One request to a peer's internal route for populate, through undici's
// dispatch API with a handler of our own (as proxy/origin.ts does for the
// origin): the body's chunks arrive in onData and are handed out as exact byte
// counts (PeerBody), without fetch's web streams in between. A populate reads
// thousands of frames a second this way, and fetch's stream machinery was a
// sixth of the receiving node's time.
//
// Backpressure: past HIGH_WATER_BYTES unread, onData answers false and
// undici stops reading the socket until the reader has taken the backlog
// down below LOW_WATER_BYTES. A peer that sends nothing for `idleTimeoutMs`
// is given up on; an abort of `signal` ends the request at once.

import { type Dispatcher, util as undiciUtil } from '../undici-core.ts'

/**
 * Unread bytes at which reading from the socket pauses. Once resumed, undici
 * parses what the socket has, up to this, in the poll phase that reads it, for
 * each of a populate's requests at once: at 1 MiB (resuming under 256 KiB)
 * sixteen requests parsed and copied megabytes between two turns of the loop's
 * timers, 50-130 ms of the main thread's CPU in the profiles.
 */
export const HIGH_WATER_BYTES = 128 * 1024
/** Unread bytes under which it resumes. */
export const LOW_WATER_BYTES = 32 * 1024

export interface PeerRequest {
  url: string
  method: 'GET' | 'POST'
  headers: Record<string, string>
  body?: string
  signal: AbortSignal
  idleTimeoutMs: number
}

export interface PeerResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: PeerBody
}

/** The response body stopped before the bytes asked for: the connection failed, or the peer ended it early. */
export class PeerStreamError extends Error {}

/** Sends `req` through `dispatcher`; resolves once the response head is in. */
export function peerRequest(dispatcher: Dispatcher, req: PeerRequest): Promise<PeerResponse> {
  return new Promise((resolve, reject) => {
    const url = new URL(req.url)
    const handler = new PeerExchange(req, resolve, reject)
    dispatcher.dispatch({ origin: url.origin, path: `${url.pathname}${url.search}`, method: req.method, headers: req.headers, body: req.body ?? null }, handler)
  })
}

/**
 * Reads exact byte counts from a peer's response body. Bytes are handed out as views of the
 * chunks they arrived in: only a piece that straddles two chunks (a frame's head, at most) is
 * copied. What is already here is handed out at once, not through a promise.
 */
export class PeerBody {
  /** Unread bytes: the rest of the current chunk, then any chunks read ahead. */
  private pending: Buffer[] = []
  private buffered = 0
  private ended = false
  private failure: Error | undefined
  private waiting: (() => void) | undefined
  private paused = false

  constructor(private readonly exchange: { resume(): void; cancel(reason: Error): void }) {}

  /** @internal From the handler: a chunk arrived. False asks undici to stop reading for now. */
  push(chunk: Buffer): boolean {
    if (chunk.length > 0) {
      this.pending.push(chunk)
      this.buffered += chunk.length
    }
    this.wake()
    if (this.buffered < HIGH_WATER_BYTES) return true
    this.paused = true
    return false
  }

  /** @internal From the handler: the body is complete, or failed. */
  finish(error?: Error): void {
    this.ended = true
    this.failure ??= error
    this.wake()
  }

  private wake(): void {
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.()
  }

  /** Waits for more bytes; rejects when none will come, saying where in the stream it stopped. */
  private more(where: string): Promise<void> {
    if (this.failure) return Promise.reject(new PeerStreamError(`the peer connection failed ${where}: ${this.failure.message}`))
    if (this.ended) return Promise.reject(new PeerStreamError(`the peer closed the connection ${where}`))
    this.resumeIfLow()
    return new Promise((resolve) => (this.waiting = resolve))
  }

  private resumeIfLow(): void {
    if (this.paused && this.buffered < LOW_WATER_BYTES) {
      this.paused = false
      this.exchange.resume()
    }
  }

  /** Up to n bytes from the front, as one view of the first chunk. */
  private take(n: number): Buffer {
    const first = this.pending[0]!
    let out: Buffer
    if (first.length <= n) {
      this.pending.shift()
      out = first
    } else {
      this.pending[0] = first.subarray(n)
      out = first.subarray(0, n)
    }
    this.buffered -= out.length
    this.resumeIfLow()
    return out
  }

  /** The next n bytes; at once when they are here. */
  exact(n: number, where: string): Buffer | Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0)
    if (this.buffered < n) return this.exactLater(n, where)
    if (this.pending[0]!.length >= n) return this.take(n)
    const out = Buffer.allocUnsafe(n)
    for (let at = 0; at < n; ) {
      const piece = this.take(n - at)
      out.set(piece, at)
      at += piece.length
    }
    return out
  }

  private async exactLater(n: number, where: string): Promise<Buffer> {
    while (this.buffered < n) await this.more(where)
    return this.exact(n, where)
  }

  /** Between 1 and n of the next bytes; at once when some are here. */
  upTo(n: number, where: string): Buffer | Promise<Buffer> {
    if (this.buffered > 0) return this.take(n)
    return this.more(where).then(() => this.upTo(n, where))
  }

  /** Unread bytes are not wanted: end the request so the connection is freed (or closed). */
  cancel(): void {
    this.pending = []
    this.buffered = 0
    if (!this.ended) this.exchange.cancel(new Error('populate stopped reading the response'))
  }
}

class PeerExchange implements Dispatcher.DispatchHandler {
  private abort: ((reason?: Error) => void) | undefined
  private resumeSocket: (() => void) | undefined
  private body: PeerBody | undefined
  private done = false
  private readonly idle: NodeJS.Timeout

  constructor(
    private readonly req: PeerRequest,
    private readonly resolve: (res: PeerResponse) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.idle = setTimeout(() => this.cut(new Error(`peer sent nothing for ${req.idleTimeoutMs} ms`)), req.idleTimeoutMs)
    if (req.signal.aborted) this.onSignal()
    else req.signal.addEventListener('abort', this.onSignal, { once: true })
  }

  /** Set when the request is to end before undici has handed over its abort function. */
  private cutBefore: Error | undefined

  private cut(reason: Error): void {
    if (this.abort) this.abort(reason)
    else this.cutBefore ??= reason
  }

  private readonly onSignal = () => this.cut(this.req.signal.reason instanceof Error ? this.req.signal.reason : new Error('populate was stopped'))

  onConnect(abort: (reason?: Error) => void): void {
    this.abort = abort
    if (this.cutBefore) abort(this.cutBefore)
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true
    this.idle.refresh()
    this.resumeSocket = resume
    this.body = new PeerBody({
      resume: () => this.resumeSocket?.(),
      cancel: (reason) => {
        if (!this.done) this.cut(reason)
      },
    })
    this.resolve({ status: statusCode, headers: undiciUtil.parseHeaders(rawHeaders) as PeerResponse['headers'], body: this.body })
    return true
  }

  onData(chunk: Buffer): boolean {
    this.idle.refresh()
    return this.body!.push(chunk)
  }

  onComplete(): void {
    this.finish()
    this.body?.finish()
  }

  onError(err: Error): void {
    this.finish()
    if (this.body) this.body.finish(err)
    else this.reject(err)
  }

  private finish(): void {
    this.done = true
    clearTimeout(this.idle)
    this.req.signal.removeEventListener('abort', this.onSignal)
  }
}
