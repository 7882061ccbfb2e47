// A web Response written to the way Node's ServerResponse is. The proxy's one writer
// (http-adapter.ts) decides every answer and writes it to either; this one becomes the
// Response that a web Request (app.request(), other runtimes) gets back.

import { Writable } from 'node:stream'
import type { ProxyResult } from './proxy.ts'

/** Bytes queued for the reader before a write waits for it to pull (backpressure). */
const QUEUED_BYTES = 64 * 1024
/** Fetch's null body statuses: a Response with one has no body (as Node sends none for a 204 or a 304, RFC 9110 §15.3.5, §15.4.5). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304])

/**
 * writeHead() names the status and fields; the Response exists once the first body byte is
 * written, or the answer ends without one (a 304, a HEAD, an empty body: a Response with no body
 * at all), so an answer whose body fails before its first byte can still get a different head, as
 * on Node. Destroyed before its end (the writer cut it, or the reader cancelled the body), its
 * body fails: never a complete-looking short one.
 */
export class WebAnswer extends Writable {
  /** The Response, once its head is decided; rejects when the answer is cut before it has one. */
  readonly response: Promise<Response>
  headersSent = false
  #resolve!: (response: Response) => void
  #reject!: (err: unknown) => void
  #head: { status: number; headers: Headers } | undefined
  #controller: ReadableStreamDefaultController<Uint8Array> | undefined
  /** A write's callback, held until the reader pulls. */
  #waiting: (() => void) | undefined

  constructor() {
    super()
    this.response = new Promise<Response>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  writeHead(status: number, fields: ProxyResult['headers']): this {
    const headers = new Headers()
    for (const name in fields) {
      const value = fields[name]!
      if (Array.isArray(value)) for (const v of value) headers.append(name, v)
      else headers.set(name, value)
    }
    this.#head = { status, headers }
    this.headersSent = true
    return this
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (NULL_BODY_STATUSES.has(this.#requireHead().status)) {
      this.#settle(null)
      callback()
      return
    }
    const controller = this.#open()
    const room = (controller.desiredSize ?? 0) > 0
    // A copy: the chunk may be a store's lent bytes, given back once the answer is finished.
    controller.enqueue(new Uint8Array(chunk))
    if (room) callback()
    else this.#waiting = callback
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.#controller) this.#controller.close()
    else this.#settle(null)
    callback()
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.writableFinished) {
      const reason = err ?? new Error('the answer was cut before its end')
      if (this.#head) this.#open().error(reason)
      else this.#reject(reason)
    }
    this.#release()
    callback(err)
  }

  #requireHead(): { status: number; headers: Headers } {
    if (!this.#head) throw new Error('an answer\'s body was written before its head')
    return this.#head
  }

  #open(): ReadableStreamDefaultController<Uint8Array> {
    if (this.#controller) return this.#controller
    let controller!: ReadableStreamDefaultController<Uint8Array>
    const body = new ReadableStream<Uint8Array>(
      {
        start: (c) => void (controller = c),
        pull: () => this.#release(),
        // The reader left, as a client that closes its connection.
        cancel: () => void this.destroy(),
      },
      { highWaterMark: QUEUED_BYTES, size: (chunk) => chunk.byteLength },
    )
    this.#controller = controller
    this.#settle(body)
    return controller
  }

  /** The Response, once (a second call changes nothing); a head a Response cannot carry rejects it. */
  #settle(body: ReadableStream<Uint8Array> | null): void {
    try {
      this.#resolve(new Response(body, this.#requireHead()))
    } catch (err) {
      this.#reject(err)
    }
  }

  #release(): void {
    const waiting = this.#waiting
    this.#waiting = undefined
    waiting?.()
  }
}
