// Whose attempt is this? The address the sign-in rate limit counts against.
//
// A client can put anything in a request header, so a header is believed only
// when something we trust wrote it:
// - the socket's peer address, by default;
// - with CAJE_TRUST_FORWARDED=true, the rightmost X-Forwarded-For entry: the
//   one the proxy in front of caje appended (entries to its left came from the
//   client and are whatever it chose to send);
// - on Fly (FLY_APP_NAME / FLY_MACHINE_ID set) and trusted, Fly-Client-IP,
//   which Fly's proxy sets and overwrites; anywhere else that header is the
//   client's own invention and ignored;
// - on the primary, the address a replica relayed with a sign-in, when it is
//   signed with the cluster secret (HMAC-SHA256), so the primary limits per
//   client and not per replica. Nobody without the secret can sign one.

import { createHmac } from 'node:crypto'
import type { Context } from 'hono'
import { secretEquals } from '../bearer.ts'
import type { Config } from '../config.ts'

/** Set by a replica relaying an admin request to the primary: the client's address, and its signature. */
export const RELAYED_CLIENT_HEADER = 'x-caje-client-address'
export const RELAYED_CLIENT_SIGNATURE_HEADER = 'x-caje-client-address-signature'

export type ClientAddressSettings = Pick<Config, 'trustForwardedHeaders' | 'runningOnFly' | 'clusterSecret'>

export type ClientAddress = (c: Context) => string

/** An address-shaped value of sane length; anything else is not used as a key. */
function plausible(v: string | undefined): string | undefined {
  const t = v?.trim()
  return t && t.length <= 64 && /^[0-9A-Za-z.:_%[\]-]+$/.test(t) ? t : undefined
}

function socketAddress(c: Context): string {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined
  return env?.incoming?.socket?.remoteAddress ?? 'unknown'
}

/** The client's address as this node sees it: socket, or the trusted proxy's header. */
export function directClientAddress(s: ClientAddressSettings): ClientAddress {
  return function directClientAddress(c) {
    if (s.trustForwardedHeaders) {
      if (s.runningOnFly) {
        const fly = plausible(c.req.header('fly-client-ip'))
        if (fly) return fly
      }
      // Several X-Forwarded-For lines arrive joined with ", " (RFC 9110 §5.3): the last entry is still the proxy's.
      const xff = c.req.header('x-forwarded-for')
      if (xff !== undefined) {
        const last = plausible(xff.split(',').at(-1))
        if (last) return last
      }
    }
    return socketAddress(c)
  }
}

function signature(secret: string, address: string): string {
  return createHmac('sha256', secret).update(`caje relayed client address\n${address}`).digest('base64url')
}

/** The headers a replica adds to an admin request it relays to the primary. */
export function relayedClientHeaders(secret: string, address: string): Record<string, string> {
  return { [RELAYED_CLIENT_HEADER]: address, [RELAYED_CLIENT_SIGNATURE_HEADER]: signature(secret, address) }
}

/** The relayed client address, when the request carries one signed with our cluster secret. */
export function relayedClientAddress(c: Context, secret: string | undefined): string | undefined {
  if (!secret) return undefined
  const address = plausible(c.req.header(RELAYED_CLIENT_HEADER))
  const sent = c.req.header(RELAYED_CLIENT_SIGNATURE_HEADER)
  if (!address || !sent) return undefined
  return secretEquals(sent, signature(secret, address)) ? address : undefined
}

/** What the admin app keys its rate limit on: a signed relayed address, else this node's view. */
export function clientAddress(s: ClientAddressSettings): ClientAddress {
  const direct = directClientAddress(s)
  return function clientAddress(c) {
    return relayedClientAddress(c, s.clusterSecret) ?? direct(c)
  }
}
