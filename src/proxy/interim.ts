// Interim (1xx) responses from the origin, passed on to the client as they
// arrive (RFC 9110 §15.2): `103 Early Hints` lets a browser start fetching
// what the final response will need while the origin is still working, and
// `102 Processing` keeps a client from timing out. They belong to one exchange:
// nothing of them is stored, so a later hit answers without them (RFC 9111 §3
// stores only final responses).

import { validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http'
import { appendVia, stripHopByHop, type HeaderBag } from './headers.ts'

/**
 * Send one interim response to the client, if it can take it. Only 102 and 103 have a way out
 * through Node's server (writeProcessing, writeEarlyHints); other 1xx codes are dropped (an
 * origin's 100 Continue is per connection, 101 needs an upgrade caje does not proxy). Returns
 * whether anything was written.
 */
export function writeInterim(incoming: IncomingMessage, outgoing: ServerResponse, status: number, headers: HeaderBag): boolean {
  // RFC 9110 §15.2: a server must not send a 1xx response to an HTTP/1.0 client.
  if (incoming.httpVersionMajor !== 1 || incoming.httpVersionMinor < 1) return false
  // Once the final head is out (or the client is gone) an interim response has nowhere to go.
  if (outgoing.headersSent || outgoing.destroyed || outgoing.writableEnded) return false
  if (status === 102) {
    outgoing.writeProcessing()
    return true
  }
  if (status !== 103) return false
  // RFC 9110 §7.6.1 and §7.6.3: the same header hygiene as a final response, and our Via.
  // Set-Cookie is left out: a hint is not where a proxy hands out cookies (RFC 8297 §2).
  const { headers: hints } = stripHopByHop(headers)
  hints.via = appendVia(hints.via)
  try {
    for (const name in hints) {
      validateHeaderName(name)
      validateHeaderValue(name, hints[name])
    }
    // Node writes a 103 only with a Link field, and checks its syntax (throwing if it is wrong).
    if (hints.link === undefined) return false
    outgoing.writeEarlyHints(hints)
    return true
  } catch {
    // An origin's malformed hint is dropped; the final response still follows, and it is what counts.
    return false
  }
}
