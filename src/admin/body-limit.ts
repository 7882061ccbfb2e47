// A cap on request bodies for caje's own routes. The admin's forms and JSON
// calls are tiny; without a cap, a few unauthenticated 100 MB posts to a
// sign-in endpoint are buffered whole and take the node's memory.
//
// A declared Content-Length over the cap is refused before a byte of the body
// is read. A chunked body (no length, RFC 9112 §7.1) is counted as the route
// reads it, and reading fails once it passes the cap: at most the cap plus one
// chunk is ever held. Nothing is read up front, so routes can authenticate or
// rate-limit first and never touch the body of a refused request. The unread
// rest is left to the server, which drains it briefly and then closes the
// connection (@hono/node-server's incoming cleanup).

import type { Context, MiddlewareHandler } from 'hono'

export const ADMIN_BODY_LIMIT_BYTES = 64 * 1024

/** Reading a request body failed because it passed the cap. */
export class BodyTooLargeError extends Error {
  constructor(readonly limitBytes: number) {
    super(`request body larger than ${limitBytes} bytes`)
    this.name = 'BodyTooLargeError'
  }
}

/** The cap error behind a failed body read (the fetch body mixin may wrap it as a cause), or undefined. */
export function bodyTooLarge(err: unknown): BodyTooLargeError | undefined {
  if (err instanceof BodyTooLargeError) return err
  if (err instanceof Error && err.cause instanceof BodyTooLargeError) return err.cause
  return undefined
}

/** What a client is told: RFC 9110 §15.5.14 (413 Content Too Large). */
export function bodyTooLargeMessage(limitBytes: number): string {
  return `The request body is too large: caje's admin routes accept at most ${Math.round(limitBytes / 1024)} KiB. Send less (one action per request).`
}

/** The 413 for a body over the cap: JSON for scripts, a line of text otherwise. */
export function tooLargeResponse(c: Context, limitBytes: number): Response {
  const message = bodyTooLargeMessage(limitBytes)
  c.header('cache-control', 'no-store')
  const json = (c.req.header('accept') ?? '').includes('application/json') || (c.req.header('content-type') ?? '').includes('application/json')
  return json ? c.json({ ok: false, error: message }, 413) : c.text(`413 Content Too Large: ${message}\n`, 413)
}

export interface LimitBodyOptions {
  maxBytes: number
  /** Paths (full, from the root) that keep their own limit: the cluster's internal routes authenticate first and take larger batches. */
  except?: readonly string[]
}

/** Requests already capped by an outer mount (the admin app runs inside the main app's cap). */
const capped = new WeakSet<Request>()

export const limitBody = (opts: LimitBodyOptions): MiddlewareHandler =>
  async function limitBody(c, next) {
    const method = c.req.method
    if (method === 'GET' || method === 'HEAD' || capped.has(c.req.raw) || opts.except?.some((p) => c.req.path.startsWith(p))) return next()
    const declared = c.req.header('content-length')
    if (declared !== undefined) {
      // Node's parser has refused a malformed length, or one beside Transfer-Encoding
      // (RFC 9112 §6.3), and ends the body at the declared length: checking it suffices.
      if (Number(declared) > opts.maxBytes) return tooLargeResponse(c, opts.maxBytes)
      capped.add(c.req.raw)
      return next()
    }
    const body = c.req.raw.body
    if (!body) return next()
    const reader = body.getReader()
    let seen = 0
    const counted = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          const { done, value } = await reader.read()
          if (done) return controller.close()
          seen += value.byteLength
          if (seen > opts.maxBytes) return controller.error(new BodyTooLargeError(opts.maxBytes))
          controller.enqueue(value)
        },
        cancel(reason) {
          return reader.cancel(reason)
        },
      },
      // Pull only when the route reads: nothing is fetched ahead for a request that is refused.
      { highWaterMark: 0 },
    )
    // Built from its parts: undici's Request cannot copy @hono/node-server's lightweight one.
    const raw = c.req.raw
    c.req.raw = new Request(raw.url, { method: raw.method, headers: raw.headers, signal: raw.signal, body: counted, duplex: 'half' } as RequestInit)
    capped.add(c.req.raw)
    return next()
  }
