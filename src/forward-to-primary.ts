// On a LiteFS replica the manifest is read-only, so admin requests that
// change state (sign-in, passkeys, purge, clear...) are relayed to the
// primary as they are, and its answer is relayed back. Reads stay local.

import type { MiddlewareHandler } from 'hono'
import { bodyTooLarge, tooLargeResponse } from './admin/body-limit.ts'
import { directClientAddress, RELAYED_CLIENT_HEADER, RELAYED_CLIENT_SIGNATURE_HEADER, relayedClientHeaders, type ClientAddressSettings } from './admin/client-address.ts'
import type { Logger } from './log.ts'
import type { ClusterRole } from './manifest/primary.ts'
import { HOP_BY_HOP_HEADERS } from './proxy/headers.ts'

export interface ForwardToPrimaryOptions {
  role: () => ClusterRole
  log: Logger
  /** Paths (below the mount point) that are never relayed: internal routes answer for themselves. */
  localPrefixes: readonly string[]
  timeoutMs?: number
  /**
   * With the cluster secret set, the client's address (as this node sees it) goes to the primary
   * in a signed header, so the primary's sign-in rate limit counts per client, not per replica.
   */
  clientAddress?: ClientAddressSettings
}

function copyHeaders(from: Headers, drop: ReadonlySet<string>): Headers {
  const out = new Headers()
  from.forEach((value, name) => {
    if (!drop.has(name)) out.append(name, value)
  })
  return out
}

// A client's own relayed-address headers never reach the primary: only this node signs one.
const DROP_REQUEST = new Set([...HOP_BY_HOP_HEADERS, 'host', 'content-length', 'accept-encoding', RELAYED_CLIENT_HEADER, RELAYED_CLIENT_SIGNATURE_HEADER])
const DROP_RESPONSE = new Set([...HOP_BY_HOP_HEADERS, 'content-length', 'content-encoding', 'set-cookie'])

export const forwardWritesToPrimary = (opts: ForwardToPrimaryOptions): MiddlewareHandler => {
  const timeoutMs = opts.timeoutMs ?? 15_000
  const clientSecret = opts.clientAddress?.clusterSecret
  const clientAddress = opts.clientAddress && directClientAddress(opts.clientAddress)
  return async function forwardWritesToPrimary(c, next) {
    const role = opts.role()
    const method = c.req.method
    if (role.kind === 'primary' || method === 'GET' || method === 'HEAD' || opts.localPrefixes.some((p) => c.req.path.startsWith(p))) {
      return next()
    }
    if (!role.primaryUrl) {
      c.header('retry-after', '2')
      return c.text('503 Service Unavailable: this node is a replica and does not know its primary yet; try again in a few seconds.\n', 503)
    }
    const url = new URL(c.req.url)
    const target = role.primaryUrl.replace(/\/$/, '') + url.pathname + url.search
    const headers = copyHeaders(c.req.raw.headers, DROP_REQUEST)
    headers.set('accept-encoding', 'identity')
    if (clientSecret && clientAddress) for (const [name, value] of Object.entries(relayedClientHeaders(clientSecret, clientAddress(c)))) headers.set(name, value)
    // The main app caps /_caje/ bodies (admin/body-limit.ts): reading fails past the cap.
    let body: ArrayBuffer
    try {
      body = await c.req.arrayBuffer()
    } catch (err) {
      const tooLarge = bodyTooLarge(err)
      if (tooLarge) return tooLargeResponse(c, tooLarge.limitBytes)
      opts.log({ level: 'warn', msg: 'could not read an admin request body to relay', path: url.pathname, error: (err as Error).message })
      return c.text('400 Bad Request: the request body could not be read.\n', 400)
    }
    try {
      const res = await fetch(target, {
        method,
        headers,
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      })
      // Set-Cookie is copied one by one: a joined value would break cookie parsing.
      const out = copyHeaders(res.headers, DROP_RESPONSE)
      for (const cookie of res.headers.getSetCookie()) out.append('set-cookie', cookie)
      return new Response(await res.arrayBuffer(), { status: res.status, headers: out })
    } catch (err) {
      opts.log({ level: 'error', msg: 'could not relay an admin write to the primary', primary: role.primaryUrl, path: url.pathname, error: (err as Error).message })
      c.header('retry-after', '5')
      return c.text('503 Service Unavailable: this node is a replica and the primary did not answer; try again shortly.\n', 503)
    }
  }
}
