// One cache fill: an origin response that streams to the client while it is
// written to the store (as undici's cache-handler.js stores while it forwards).
// `startFill` decides whether the response may be stored (policy.ts), and if so
// returns a body that tees every chunk into the store's writer; `outcome`
// settles once, when the body is complete (stored or not) or cut short.
// The client's pace sets the origin's: the tee passes chunks on only as fast as
// the client reads them (stream backpressure), and a store writer that falls
// behind stops being fed rather than buffering without bound.

import { Transform, type Readable } from 'node:stream'
import type { CacheStore, EntryMeta, NewEntry } from '../cache/types.ts'
import { varyFields, varyValues, variantId } from './cache-key.ts'
import { cleanResponseHeaders, storedHeaders, type CleanedResponseHeaders } from './forward.ts'
import { stripHopByHop, type FlatHeaders } from './headers.ts'
import type { OriginResponse } from './origin.ts'
import { decideStore, type StoreRules } from './policy.ts'
import { storedVariantId } from './part.ts'
import type { RuleMatch } from '../rules/match.ts'

/** What a fill needs from the proxy: given once, shared by every fill. */
export interface FillDeps {
  store: CacheStore
  storeRules: StoreRules
  maxObjectBytes: number
  log: (entry: Record<string, unknown>) => void
  now: () => number
}

/** Where a response is stored: its primary key, URL and host. */
export interface FillTarget {
  key: string
  url: string
  host: string
  /** The origin that answered (recorded so an entry from another origin is never served). */
  origin: URL
  /** How the entry came to be fetched (EntryMeta.via); undefined for a client's request. */
  via?: string
  /** Called once the origin's whole body is in, before the cache write (the coalescing leader's cue). */
  onReceived?: () => void
}

/** The request the origin answered (its Vary values pick the variant). */
export interface FillRequest {
  method: string
  headers: FlatHeaders
  requestTime: number
  /** The rules file's answer for the request: it can override the store decision and add tags. */
  rules?: RuleMatch
}

/** How one fill ended: stored (with the stored entry) or not. */
export interface FillOutcome {
  stored: boolean
  meta?: EntryMeta
}

/** An origin response taken for the cache: cleaned headers, the body to send on, and whether it is being stored. */
export interface Fill {
  headers: FlatHeaders
  setCookie: string[]
  /** The body for the client: the whole of it when the origin's was read whole (origin.ts), else a stream. */
  body: Readable | Buffer
  stored: boolean
  /** Why the response is not stored, or 'memory-only' when it is kept in the memory tier only (a Cache-Status detail). */
  detail?: string
  /** Settles once the fill is over; never rejects. */
  outcome: Promise<FillOutcome>
}

/** The outcome of every fill that stores nothing (one settled promise, so callers can tell it apart without waiting on it). */
export const NOT_STORED: Promise<FillOutcome> = Promise.resolve({ stored: false })

/**
 * An origin response's headers cleaned for the client (forward.ts). A refused cookie is
 * logged by name (never its value), as the origin's owner will wonder where it went.
 */
export function cleanedForClient(res: OriginResponse, url: string, log: FillDeps['log']): CleanedResponseHeaders {
  const cleaned = cleanResponseHeaders(res.headers)
  if (cleaned.refusedCookies.length) {
    log({ level: 'warn', msg: "origin response tried to set caje's own cookie names (caje_*); Set-Cookie dropped, rename the cookie at the origin", url, names: cleaned.refusedCookies })
  }
  return cleaned
}

/**
 * Take an origin response for a cache-filling GET: decide whether to store it, and return a
 * body that streams to the client while it is written.
 */
export function startFill(deps: FillDeps, target: FillTarget, req: FillRequest, res: OriginResponse): Fill {
  const { store } = deps
  const responseTime = deps.now()
  const { headers, setCookie, hadSetCookie } = cleanedForClient(res, target.url, deps.log)
  const rules = req.rules?.response(res.status, headers['content-type'])
  const decision = decideStore(
    { method: req.method, url: target.url, headers: req.headers, requestTime: req.requestTime },
    { status: res.status, headers, hasSetCookie: hadSetCookie, responseTime },
    deps.storeRules,
    rules?.store,
  )
  const declared = headers['content-length'] !== undefined ? Number(headers['content-length']) : undefined
  let detail: string | undefined
  let memoryOnly = false
  if (!decision.store) detail = decision.reason
  else if (declared !== undefined && declared > deps.maxObjectBytes) detail = 'too-large'
  else if (declared === undefined && res.status !== 204 && !isChunked(res.headers['transfer-encoding'])) {
    // RFC 9112 §6.3 rule 8: with neither Content-Length nor chunked coding, the body ends when
    // the origin closes the connection, so a connection cut short looks like a complete body.
    // Pass such a response through, but never store what could be a truncated copy. (A 204
    // has no body at all, rule 1.)
    detail = 'no-length'
  } else {
    const admission = store.admits(target.key, declared)
    // The disk writer is behind: keep this one in the memory tier only, or, too large for it,
    // serve it without storing it rather than queue without bound.
    if (admission === false) detail = 'write-queue-full'
    else memoryOnly = admission === 'memory-only'
  }
  if (detail !== undefined || !decision.store) {
    return { headers, setCookie, body: res.whole ?? res.body, stored: false, detail, outcome: NOT_STORED }
  }

  const { variant, values } = entryVariant(res.status, headers, req.headers)
  const entry: NewEntry = {
    key: target.key,
    variant,
    url: target.url,
    host: target.host,
    status: res.status,
    headers: storedHeaders(headers),
    varyHeaders: values,
    policy: decision.policy,
    storedAt: responseTime,
    staleAt: decision.staleAt,
    deleteAt: decision.deleteAt,
    tags: entryTags(headers, rules?.tags),
    contentType: headers['content-type'] ?? '',
    origin: target.origin.href,
    via: target.via,
  }
  // Decided now, for the Cache-Status sent with the head: the commit decides again once the body is in.
  const storedDetail = memoryOnly ? 'memory-only' : undefined
  if (res.whole) return { headers, setCookie, body: res.whole, stored: true, detail: storedDetail, outcome: storeWhole(deps, target, entry, res.whole) }
  const writer = store.writer(entry)
  let feeding = true
  let received = 0
  let settle!: (o: FillOutcome) => void
  const outcome = new Promise<FillOutcome>((resolve) => (settle = resolve))
  let finished = false
  const finish = (stored: boolean, meta?: EntryMeta) => {
    if (finished) return
    finished = true
    settle({ stored, meta })
  }
  const tee = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      received += chunk.length
      if (feeding && !writer.write(chunk)) feeding = false
      cb(null, chunk)
    },
    flush(cb) {
      // A body shorter or longer than announced is broken: never store it.
      if (declared !== undefined && received !== declared) {
        writer.abort(new Error('content-length mismatch'))
        finish(false)
        cb(new Error(`origin body was ${received} bytes, Content-Length said ${declared}`))
        return
      }
      target.onReceived?.()
      void outcomeOf(deps, target, writer.commit()).then(({ stored, meta }) => finish(stored, meta))
      cb()
    },
  })
  tee.on('close', () => {
    if (!tee.writableFinished) {
      writer.abort(new Error('response body did not complete'))
      finish(false)
      // Nobody reads the rest: release the origin connection now, not when its body timeout fires.
      if (!res.body.destroyed) res.body.destroy()
    }
  })
  res.body.on('error', (err) => tee.destroy(err))
  tee.on('error', () => res.body.destroy())
  res.body.pipe(tee)
  return { headers, setCookie, body: tee, stored: true, detail: storedDetail, outcome }
}

/** Store a body that came whole, in the same read as its head (origin.ts): one write, no tee. */
function storeWhole(deps: FillDeps, target: FillTarget, entry: NewEntry, body: Buffer): Promise<FillOutcome> {
  target.onReceived?.()
  return outcomeOf(deps, target, deps.store.put(entry, body))
}

/** A fill's outcome from its cache write; a failed write is logged and stores nothing. */
function outcomeOf(deps: FillDeps, target: FillTarget, commit: Promise<EntryMeta | undefined>): Promise<FillOutcome> {
  return commit.then(
    (meta) => ({ stored: meta !== undefined, meta }),
    (err: unknown) => {
      deps.log({ level: 'error', msg: 'cache write failed', key: target.key, error: (err as Error).message })
      return { stored: false }
    },
  )
}

/**
 * The variant id a response is stored under, and the request's values of the fields its Vary
 * names. The variant is the request the origin answered (RFC 9111 §4.1). Fields the client
 * named in Connection were removed before forwarding (RFC 9110 §7.6.1), so the origin never
 * saw them: `X-Lang: fr` + `Connection: x-lang` gets the default page, which must not become
 * the fr variant.
 */
export function entryVariant(status: number, headers: FlatHeaders, requestHeaders: FlatHeaders): { variant: string; values: Record<string, string> } {
  const fields = varyFields(headers.vary)
  // Without Vary there is nothing to look up: no copy of the request's fields.
  const values = fields.length === 0 ? {} : varyValues(fields, stripHopByHop(requestHeaders).headers)
  return { variant: storedVariantId(status, variantId(values)), values }
}

/** Whether the last transfer coding is chunked: the body's end is then marked in the stream (RFC 9112 §7.1). */
function isChunked(transferEncoding: string | string[] | undefined): boolean {
  if (transferEncoding === undefined) return false
  const codings = (Array.isArray(transferEncoding) ? transferEncoding.join(',') : transferEncoding).split(',')
  return codings[codings.length - 1]!.trim().toLowerCase() === 'chunked'
}

/** An entry's tags: the response's own (cacheTags) and those a matching rule adds. */
export function entryTags(headers: FlatHeaders, ruleTags: readonly string[] | undefined): string[] {
  return ruleTags?.length ? [...new Set([...cacheTags(headers), ...ruleTags])] : cacheTags(headers)
}

/** Cache tags for purge by tag: Surrogate-Key (space separated) and Cache-Tag (comma separated). */
export function cacheTags(headers: FlatHeaders): string[] {
  const surrogateKey = headers['surrogate-key']
  const cacheTag = headers['cache-tag']
  // Most responses carry neither: no splitting of empty strings and no Set per stored response.
  if (surrogateKey === undefined && cacheTag === undefined) return []
  const tags = new Set<string>()
  for (const t of (surrogateKey ?? '').split(/\s+/)) if (t) tags.add(t)
  for (const t of (cacheTag ?? '').split(',')) if (t.trim()) tags.add(t.trim())
  return [...tags]
}
