// The request path: key → lookup → (hit | revalidate | forward) → store → respond.
// HTTP semantics are decided in policy.ts; storage is behind the CacheStore
// interface; coalescing lives in coalesce.ts. This module only orchestrates.

import { Transform, type Readable } from 'node:stream'
import type { ByteRange, CacheStore, EntryMeta, NewEntry, StoredBody } from '../cache/types.ts'
import type { Metrics } from '../metrics.ts'
import { canonicalTarget } from '../canonical-url.ts'
import { primaryKey, requestHeadersForVariant, varyFields, varyValues, variantId, variantMatches } from './cache-key.ts'
import { formatCacheStatus, statusLabel, type CacheStatus } from './cache-status.ts'
import { Coalescer, ExpiringSet, OncePerKey } from './coalesce.ts'
import { cleanResponseHeaders, originRequestHeaders, STEERING_REQUEST_HEADERS, storedHeaders, withoutConditionals, type CleanedResponseHeaders, type ForwardContext } from './forward.ts'
import { appendVia, stripHopByHop, type FlatHeaders, type HeaderBag } from './headers.ts'
import { classifyOriginError, OriginError, type OriginClient, type OriginResponse } from './origin.ts'
import {
  currentAge,
  clientNotModified,
  decideReuse,
  decideStore,
  invalidates,
  isFreshnessPolicy,
  mayServeStaleOnError,
  mergeNotModified,
  notModifiedMatches,
  NOT_MODIFIED_FIELDS,
  parseDirectives,
  ttl,
  validatorsFor,
  type FreshnessPolicy,
  type StoreRules,
  usableUnder,
} from './policy.ts'
import { partSlice, storedVariantId, usablePart } from './part.ts'
import { ifRangeAllows, parseRange } from './range.ts'
import { fieldsFromKey, NO_RULES, type RuleMatch, type RuleSet } from '../rules/match.ts'

export interface ProxyRequest {
  method: string
  scheme: 'http' | 'https'
  /** Normalised host (lower case, default port dropped). */
  host: string
  /** Path and query in canonical form (canonical-url.ts): what the key holds and the origin is sent. */
  path: string
  /** Client request headers, lower-case names, repeated fields joined. */
  headers: FlatHeaders
  body: Readable | AsyncIterable<Uint8Array> | null
  clientIp: string
  signal: AbortSignal
  /** Pass an interim (1xx) response from the origin on to this client (see interim.ts); absent where there is no way to. */
  interim?(status: number, headers: HeaderBag): void
  /** What the rules file says about this request; filled in once, on first use (ruleMatch). */
  rules?: RuleMatch
}

export interface ProxyResult {
  status: number
  headers: Record<string, string | string[]>
  body: Buffer | Readable | null
  cacheStatus: CacheStatus
  /** Where the body came from, for metrics. */
  tier: 'memory' | 'disk' | 'origin' | 'none'
  originMs?: number
  /** For a streamed origin body: the 502/504 to send instead if the body fails before its first byte. */
  bodyFailure?: (err: unknown) => ProxyResult
}

/** The counters the proxy reports (origin exchanges are counted by the origin sender); src/metrics.ts implements them. */
export type ProxyMetrics = Pick<Metrics, 'request'>

export interface ProxyOptions {
  store: CacheStore
  origin: OriginClient
  /** Origin for a request's host; undefined means "not a site caje serves". */
  resolveOrigin: (host: string) => URL | undefined
  maxObjectBytes: number
  cacheSetCookie: boolean
  /** RFC 9111 §4.2.2 heuristic freshness (default false: only responses with explicit freshness are stored). */
  heuristicFreshness?: boolean
  preserveHost: boolean
  trustForwarded: boolean
  /** Request fields never forwarded to the origin; default STEERING_REQUEST_HEADERS. */
  stripRequestHeaders?: ReadonlySet<string>
  log: (entry: Record<string, unknown>) => void
  /** The rules in force now (they can be reloaded); default none. */
  rules?: () => RuleSet
  metrics?: ProxyMetrics
  now?: () => number
}

export interface Proxy {
  /** The answer to one request: at once for a fresh hit whose body is at hand, else a promise (as Hono's dispatch returns Response | Promise<Response>). */
  serve(req: ProxyRequest): ProxyResult | Promise<ProxyResult>
  /** Fetch a URL from the origin and store it if allowed (populate's fallback when no peer has it), as a request with the stored Vary values of the variant. */
  fill(url: URL, varyHeaders: Record<string, string>, signal?: AbortSignal): Promise<{ stored: boolean; status: number; bytes: number }>
  /** Resolves when background revalidations have finished (graceful shutdown). */
  idle(): Promise<void>
}

const SAFE_METHODS = new Set(['GET', 'HEAD'])
const HIT: CacheStatus = { hit: true }
const NO_VARIANTS: readonly EntryMeta[] = Object.freeze([])
const NO_RANGE = { kind: 'none' } as const
/** How long a key whose fill was not shareable bypasses coalescing, and how many such keys are remembered. */
const PASS_MARK_TTL_MS = 60_000
const PASS_MARK_LIMIT = 10_000

/** A short plain-text answer caje gives itself (errors, refusals): never cached downstream. */
export function textResult(status: number, message: string, cacheStatus: CacheStatus): ProxyResult {
  const body = Buffer.from(`${message}\n`)
  return {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(body.length), 'cache-control': 'no-store', 'cache-status': formatCacheStatus(cacheStatus), via: appendVia(undefined) },
    body,
    cacheStatus,
    tier: 'none',
  }
}

export function createProxy(opts: ProxyOptions): Proxy {
  const { store, origin } = opts
  const now = opts.now ?? Date.now
  const coalescer = new Coalescer()
  const background = new OncePerKey()
  const passMarks = new ExpiringSet(PASS_MARK_TTL_MS, PASS_MARK_LIMIT, now)
  const storeRules: StoreRules = { cacheSetCookie: opts.cacheSetCookie, heuristicFreshness: opts.heuristicFreshness ?? false }
  const stripHeaders = opts.stripRequestHeaders ?? new Set(STEERING_REQUEST_HEADERS)

  /** The rules' answer for this request: asked once, kept on the request. */
  function ruleMatch(req: ProxyRequest): RuleMatch {
    return (req.rules ??= (opts.rules?.() ?? NO_RULES).match(req))
  }

  function forwardContext(req: ProxyRequest, originUrl: URL): ForwardContext {
    return { host: req.host, scheme: req.scheme, clientIp: req.clientIp, origin: originUrl, preserveHost: opts.preserveHost, trustForwarded: opts.trustForwarded, stripHeaders }
  }

  /**
   * The stored variant matching this request (RFC 9111 §4.1), newest first. Found by id: the
   * request's variant id is worked out once per distinct stored Vary value (nearly always one),
   * so a URL with many variants costs no more than one with a single variant. A response
   * another origin gave (before CAJE_ORIGIN or the site's origin changed) is not this origin's
   * answer: it counts as absent, whole or part, and the fill that follows replaces it.
   */
  function lookup(key: string, headers: FlatHeaders, originUrl: URL): { meta?: EntryMeta; hadVariants: boolean; variants: readonly EntryMeta[] } {
    const varies = store.varyOf(key)
    if (varies.length === 0) return { hadVariants: false, variants: NO_VARIANTS }
    let best: EntryMeta | undefined
    for (const vary of varies) {
      const fields = varyFields(vary)
      const meta = store.variant(key, fields.length === 0 ? '' : variantId(varyValues(fields, headers)))
      if (meta && !fromOrigin(meta, originUrl)) continue
      // A stored part (206) is never taken for the whole response; only usablePart() picks one.
      if (!meta || meta.status === 206 || !isFreshnessPolicy(meta.policy)) continue
      if (!usableUnder(meta.policy, storeRules)) continue
      if (!variantMatches(meta.varyHeaders, fields, headers)) continue
      if (!best || meta.storedAt > best.storedAt) best = meta
    }
    if (best) return { meta: best, hadVariants: true, variants: NO_VARIANTS }
    // Nothing whole for this request: stored parts (usablePart) and whether any whole variant
    // exists (vary-miss or uri-miss) need the whole list, on this miss path only. Only this
    // origin's count: with none, the miss is a uri-miss, not a vary-miss.
    const variants = store.variants(key).filter((v) => fromOrigin(v, originUrl))
    return { hadVariants: variants.some((v) => v.status !== 206), variants }
  }

  /** Stored from this origin (entries stored before the origin was recorded count as this origin's). */
  function fromOrigin(meta: EntryMeta, originUrl: URL): boolean {
    return meta.origin === undefined || meta.origin === originUrl.href
  }

  function sendToOrigin(req: ProxyRequest, originUrl: URL, method: string, headers: Record<string, string>, body: ProxyRequest['body']): Promise<OriginResponse> {
    return origin.send({ origin: originUrl, method, path: req.path, headers, body, signal: req.signal, onInterim: interimFor(req) })
  }

  /**
   * An origin response's headers cleaned for the client (forward.ts). A refused cookie is
   * logged by name (never its value), as the origin's owner will wonder where it went.
   */
  function responseHeaders(res: OriginResponse, url: string): CleanedResponseHeaders {
    const cleaned = cleanResponseHeaders(res.headers)
    if (cleaned.refusedCookies.length) {
      opts.log({ level: 'warn', msg: "origin response tried to set caje's own cookie names (caje_*); Set-Cookie dropped, rename the cookie at the origin", url, names: cleaned.refusedCookies })
    }
    return cleaned
  }

  function originFailure(err: unknown, cacheStatus: CacheStatus): ProxyResult {
    const e = err instanceof OriginError ? err : new OriginError('other', 502, 'request to origin failed')
    opts.log({ level: 'warn', msg: 'origin request failed', kind: e.kind, error: e.message, cause: (e.cause as Error | undefined)?.message })
    const title = e.status === 504 ? '504 Gateway Timeout' : '502 Bad Gateway'
    return textResult(e.status, `${title}: ${e.message}. caje could not get a response from the origin; try again shortly.`, { ...cacheStatus, detail: e.kind })
  }

  /** What every answer from one stored response shares (see storedHead). */
  interface StoredHead {
    fields: Readonly<Record<string, string>>
    /** Whole seconds of Age last sent, and its text. */
    age: number
    ageText: string
    /** Whole seconds of ttl last sent in a plain hit's Cache-Status, and that field. */
    ttl: number
    hitStatus: string
    /** The rule and key that hitStatus names. */
    rule?: string
    key?: string
  }
  /**
   * The header fields every answer from one stored response shares: the stored fields
   * (RFC 9111 §3.1), Via, Accept-Ranges and Content-Length. Built once per stored entry
   * (entries are immutable; an update is a new object) and copied per answer. Age and
   * Cache-Status change per answer: their placeholders give every copy the same shape.
   */
  const storedHeads = new WeakMap<EntryMeta, StoredHead>()
  function storedHead(meta: EntryMeta): StoredHead {
    let head = storedHeads.get(meta)
    if (!head) {
      const fields: Record<string, string> = { ...meta.headers, age: '', via: appendVia(meta.headers.via), 'cache-status': '' }
      if (meta.status === 200) fields['accept-ranges'] = 'bytes'
      // RFC 9110 §8.6: a 204 carries no Content-Length.
      if (meta.status !== 204) fields['content-length'] = String(meta.size)
      storedHeads.set(meta, (head = { fields, age: -1, ageText: '', ttl: NaN, hitStatus: '' }))
    }
    return head
  }

  /**
   * The answer a stored entry gives, before its body is opened: client conditionals → 304,
   * an unsatisfiable Range → 416, HEAD → headers only (all finished), else the 200/206 whose
   * body (`range`, or all of it) still has to be read.
   */
  function storedAnswer(req: ProxyRequest, meta: EntryMeta, policy: FreshnessPolicy, cacheStatus: CacheStatus): { result: ProxyResult; needsBody: boolean; range?: ByteRange } {
    const t = now()
    const match = req.rules
    const rules = match !== undefined && match.matched.length !== 0 ? match.response(meta.status, meta.headers['content-type']) : undefined
    // One object literal, so every answer's status has the same shape.
    const status: CacheStatus = { ...cacheStatus, ttl: ttl(policy, t), rule: rules && (rules.rule ?? match!.rule), key: match?.keyChanged ? match.key : undefined }
    const head = storedHead(meta)
    const headers: Record<string, string> = { ...head.fields }
    if (rules?.browserTtl !== undefined) headers['cache-control'] = `max-age=${rules.browserTtl}`
    // Age is whole seconds (RFC 9111 §5.1). It and a plain hit's Cache-Status change once a
    // second, not once a hit: reuse their text.
    const age = Math.floor(currentAge(policy, t))
    if (head.age !== age) {
      head.age = age
      head.ageText = String(age)
    }
    headers.age = head.ageText
    if (cacheStatus === HIT) {
      const whole = Math.trunc(status.ttl!)
      if (head.ttl !== whole || head.rule !== status.rule || head.key !== status.key) {
        head.ttl = whole
        head.rule = status.rule
        head.key = status.key
        head.hitStatus = formatCacheStatus(status)
      }
      headers['cache-status'] = head.hitStatus
    } else headers['cache-status'] = formatCacheStatus(status)

    // A stored part answers only the range inside it that usablePart() found.
    const slice = meta.status === 206 ? partSlice(meta, req.headers.range) : undefined
    if (slice) {
      headers['content-range'] = slice.contentRange
      headers['content-length'] = slice.contentLength
      return { result: { status: 206, headers, body: null, cacheStatus: status, tier: 'none' }, needsBody: true, range: slice.body }
    }

    if (meta.status === 200 && clientNotModified(req.method, req.headers, meta.headers, policy.responseTime)) {
      const h: Record<string, string> = { age: headers.age, via: headers.via!, 'cache-status': headers['cache-status'] }
      for (const f of NOT_MODIFIED_FIELDS) if (meta.headers[f] !== undefined) h[f] = meta.headers[f]!
      return { result: { status: 304, headers: h, body: null, cacheStatus: status, tier: 'none' }, needsBody: false }
    }

    const range = meta.status === 200 && req.method === 'GET' && req.headers.range !== undefined && ifRangeAllows(req.headers, meta.headers) ? parseRange(req.headers.range, meta.size) : NO_RANGE
    if (range.kind === 'unsatisfiable') {
      const h: Record<string, string> = { 'content-range': `bytes */${meta.size}`, 'cache-status': headers['cache-status'], via: headers.via!, 'content-length': '0' }
      return { result: { status: 416, headers: h, body: Buffer.alloc(0), cacheStatus: status, tier: 'none' }, needsBody: false }
    }
    if (req.method === 'HEAD') return { result: { status: meta.status, headers, body: null, cacheStatus: status, tier: 'none' }, needsBody: false }
    if (range.kind === 'range') {
      const { start, end } = range.range
      headers['content-range'] = `bytes ${start}-${end}/${meta.size}`
      headers['content-length'] = String(end - start + 1)
      return { result: { status: 206, headers, body: null, cacheStatus: status, tier: 'none' }, needsBody: true, range: range.range }
    }
    return { result: { status: meta.status, headers, body: null, cacheStatus: status, tier: 'none' }, needsBody: true }
  }

  function withBody(result: ProxyResult, stored: StoredBody): ProxyResult {
    result.body = stored.kind === 'buffer' ? stored.buffer : stored.stream
    result.tier = stored.tier
    return result
  }

  /**
   * Serve a stored entry (see storedAnswer): at once when the store has the body at hand, else a
   * promise. Undefined (now or later) when the body is gone or corrupt.
   */
  function serveStored(req: ProxyRequest, meta: EntryMeta, policy: FreshnessPolicy, cacheStatus: CacheStatus): ProxyResult | undefined | Promise<ProxyResult | undefined> {
    const answer = storedAnswer(req, meta, policy, cacheStatus)
    if (!answer.needsBody) return answer.result
    const stored = store.read(meta.key, meta.variant, answer.range)
    if (stored instanceof Promise) return stored.then((s) => s && withBody(answer.result, s))
    return stored && withBody(answer.result, stored)
  }

  interface StoreTarget {
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

  /**
   * Take an origin response for a cache-filling GET: decide whether to store
   * it, and return a body that streams to the client while it is written.
   * `onStored` learns the outcome once the body is complete.
   */
  function admit(
    target: StoreTarget,
    req: { method: string; headers: FlatHeaders; requestTime: number; rules?: RuleMatch },
    res: OriginResponse,
    onOutcome: (stored: boolean, meta?: EntryMeta) => void,
  ): { headers: FlatHeaders; setCookie: string[]; body: Readable; stored: boolean; detail?: string } {
    const responseTime = now()
    const { headers, setCookie, hadSetCookie } = responseHeaders(res, target.url)
    const rules = req.rules?.response(res.status, headers['content-type'])
    const decision = decideStore(
      { method: req.method, url: target.url, headers: req.headers, requestTime: req.requestTime },
      { status: res.status, headers, hasSetCookie: hadSetCookie, responseTime },
      storeRules,
      rules?.store,
    )
    const declared = headers['content-length'] !== undefined ? Number(headers['content-length']) : undefined
    let detail: string | undefined
    if (!decision.store) detail = decision.reason
    else if (declared !== undefined && declared > opts.maxObjectBytes) detail = 'too-large'
    else if (declared === undefined && res.status !== 204 && !isChunked(res.headers['transfer-encoding'])) {
      // RFC 9112 §6.3 rule 8: with neither Content-Length nor chunked coding, the body ends when
      // the origin closes the connection, so a connection cut short looks like a complete body.
      // Pass such a response through, but never store what could be a truncated copy. (A 204
      // has no body at all, rule 1.)
      detail = 'no-length'
    } else if (!store.admits(target.key, declared)) {
      // The disk writer is behind: serve this one without storing it rather than queue without bound.
      detail = 'write-queue-full'
    }
    if (detail !== undefined || !decision.store) {
      onOutcome(false)
      return { headers, setCookie, body: res.body, stored: false, detail }
    }

    const fields = varyFields(headers.vary)
    // The variant is the request the origin answered (RFC 9111 §4.1). Fields the client named in
    // Connection were removed before forwarding (RFC 9110 §7.6.1), so the origin never saw them:
    // `X-Lang: fr` + `Connection: x-lang` gets the default page, which must not become the fr variant.
    const values = varyValues(fields, stripHopByHop(req.headers).headers)
    const toStore: FlatHeaders = storedHeaders(headers)
    const entry: NewEntry = {
      key: target.key,
      variant: storedVariantId(res.status, variantId(values)),
      url: target.url,
      host: target.host,
      status: res.status,
      headers: toStore,
      varyHeaders: values,
      policy: decision.policy,
      storedAt: responseTime,
      staleAt: decision.staleAt,
      deleteAt: decision.deleteAt,
      tags: rules?.tags.length ? [...new Set([...cacheTags(headers), ...rules.tags])] : cacheTags(headers),
      contentType: headers['content-type'] ?? '',
      origin: target.origin.href,
      via: target.via,
    }
    const writer = store.writer(entry)
    let feeding = true
    let received = 0
    let finished = false
    const finish = (stored: boolean, meta?: EntryMeta) => {
      if (finished) return
      finished = true
      onOutcome(stored, meta)
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
        writer.commit().then(
          (meta) => finish(meta !== undefined, meta),
          (err: unknown) => {
            opts.log({ level: 'error', msg: 'cache write failed', key: target.key, error: (err as Error).message })
            finish(false)
          },
        )
        cb()
      },
    })
    tee.on('close', () => {
      if (!tee.writableFinished) {
        writer.abort(new Error('response body did not complete'))
        finish(false)
      }
    })
    res.body.on('error', (err) => tee.destroy(err))
    tee.on('error', () => res.body.destroy())
    res.body.pipe(tee)
    return { headers, setCookie, body: tee, stored: true }
  }

  /** Response for the client from an origin response that was (maybe) admitted to the cache. */
  function clientResult(
    req: ProxyRequest,
    originUrl: URL,
    admitted: { headers: FlatHeaders; setCookie: string[]; body: Readable; stored: boolean; detail?: string },
    res: OriginResponse,
    cacheStatus: CacheStatus,
  ): ProxyResult {
    const status: CacheStatus = { ...cacheStatus, fwdStatus: res.status, stored: admitted.stored || undefined, detail: admitted.detail ?? cacheStatus.detail }
    const headers: Record<string, string | string[]> = { ...admitted.headers, via: appendVia(admitted.headers.via) }
    if (req.rules && req.rules.matched.length) {
      const rules = req.rules.response(res.status, admitted.headers['content-type'])
      status.rule = rules.rule ?? req.rules.rule
      // The browser TTL replaces what the origin told clients; the cache decided on the origin's own.
      if (rules.browserTtl !== undefined && !req.rules.bypass) headers['cache-control'] = `max-age=${rules.browserTtl}`
    }
    if (req.rules?.keyChanged) status.key = req.rules.key
    const upstream = admitted.headers['cache-status']
    headers['cache-status'] = upstream ? `${upstream}, ${formatCacheStatus(status)}` : formatCacheStatus(status)
    if (admitted.setCookie.length) headers['set-cookie'] = admitted.setCookie
    // The cache fill asked for the full response; the client's own conditionals are answered
    // here (RFC 9110 §13.2.2), while the body keeps flowing into the cache.
    if (res.status === 200 && clientNotModified(req.method, req.headers, admitted.headers)) {
      admitted.body.resume()
      const h: Record<string, string | string[]> = { via: headers.via as string, 'cache-status': headers['cache-status'] as string }
      for (const f of NOT_MODIFIED_FIELDS) if (admitted.headers[f] !== undefined) h[f] = admitted.headers[f]!
      if (admitted.setCookie.length) h['set-cookie'] = admitted.setCookie
      return { status: 304, headers: h, body: null, cacheStatus: status, tier: 'origin', originMs: res.headersMs }
    }
    let body: Readable | null = admitted.body
    if (req.method === 'HEAD' || res.status === 204 || res.status === 304) {
      admitted.body.resume()
      body = null
    }
    const bodyFailure = (err: unknown) => originFailure(classifyOriginError(err, originUrl), { fwd: cacheStatus.fwd, fwdStatus: res.status })
    return { status: res.status, headers, body, cacheStatus: status, tier: 'origin', originMs: res.headersMs, bodyFailure }
  }

  /** Cache-filling GET to the origin (a miss, or a revalidation that came back 200). */
  async function fetchAndStore(
    req: ProxyRequest,
    originUrl: URL,
    key: string,
    cacheStatus: CacheStatus,
    onOutcome: (stored: boolean) => void,
    target: Pick<StoreTarget, 'via' | 'onReceived'> = {},
  ): Promise<ProxyResult> {
    const headers = withoutConditionals(originRequestHeaders(req.headers, forwardContext(req, originUrl)))
    const requestTime = now()
    let res: OriginResponse
    try {
      res = await sendToOrigin(req, originUrl, 'GET', headers, null)
    } catch (err) {
      onOutcome(false)
      throw err
    }
    const admitted = admit({ key, url: req.rules?.url ?? key, host: req.host, origin: originUrl, ...target }, { method: 'GET', headers: req.headers, requestTime, rules: req.rules }, res, (stored) => onOutcome(stored))
    return clientResult(req, originUrl, admitted, res, cacheStatus)
  }

  /**
   * A range request the cache cannot answer: forwarded with its Range, and a 206 that comes back
   * is stored as a part (a 200, when the origin ignores Range, as the whole response).
   */
  async function fetchRange(req: ProxyRequest, originUrl: URL, key: string, cacheStatus: CacheStatus): Promise<ProxyResult> {
    const headers = { ...withoutConditionals(originRequestHeaders(req.headers, forwardContext(req, originUrl))), range: req.headers.range! }
    const requestTime = now()
    const res = await sendToOrigin(req, originUrl, 'GET', headers, null)
    const admitted = admit({ key, url: req.rules?.url ?? key, host: req.host, origin: originUrl }, { method: 'GET', headers: req.headers, requestTime, rules: req.rules }, res, () => {})
    return clientResult(req, originUrl, admitted, res, cacheStatus)
  }

  /** Plain pass-through: the request goes to the origin as the client sent it, nothing is stored. */
  async function pass(req: ProxyRequest, originUrl: URL, cacheStatus: CacheStatus): Promise<ProxyResult> {
    const headers = originRequestHeaders(req.headers, forwardContext(req, originUrl))
    const res = await sendToOrigin(req, originUrl, req.method, headers, SAFE_METHODS.has(req.method) ? null : req.body)
    const cleaned = responseHeaders(res, primaryKey(req.scheme, req.host, req.path))
    return clientResult(req, originUrl, { ...cleaned, body: res.body, stored: false }, res, cacheStatus)
  }

  /** RFC 9111 §4.4: a successful unsafe request invalidates the target URI and same-host Location / Content-Location. */
  async function invalidateAfter(req: ProxyRequest, result: ProxyResult): Promise<void> {
    if (!invalidates(req.method, result.status)) return
    const keys = [ruleMatch(req).key]
    const base = new URL(primaryKey(req.scheme, req.host, req.path))
    for (const field of ['location', 'content-location']) {
      const v = result.headers[field]
      if (typeof v !== 'string') continue
      try {
        const u = new URL(v, base)
        if (u.host.toLowerCase() === base.host) keys.push((opts.rules?.() ?? NO_RULES).match({ ...req, path: canonicalTarget(u.pathname + u.search) }).key)
      } catch {
        // An unparseable Location names nothing we could have stored.
      }
    }
    for (const key of keys) {
      try {
        await store.delete(key)
      } catch (err) {
        opts.log({ level: 'error', msg: 'invalidation failed', key, error: (err as Error).message })
      }
    }
  }

  /** Conditional request for a stored entry (RFC 9111 §4.3); refreshes it on 304, replaces it on 200. */
  async function revalidate(req: ProxyRequest, originUrl: URL, meta: EntryMeta, policy: FreshnessPolicy, background: boolean): Promise<
    | { kind: 'refreshed'; meta: EntryMeta; policy: FreshnessPolicy; originMs: number }
    | { kind: 'replaced'; result: ProxyResult }
    | { kind: 'failed'; error?: unknown; status?: number; response?: OriginResponse }
  > {
    const base = withoutConditionals(originRequestHeaders(req.headers, forwardContext(req, originUrl)))
    const headers = { ...base, ...validatorsFor(meta.headers) }
    const requestTime = now()
    let res: OriginResponse
    try {
      res = await origin.send({
        origin: originUrl,
        method: 'GET',
        path: new URL(meta.url).pathname + new URL(meta.url).search,
        headers,
        signal: background ? undefined : req.signal,
        onInterim: background ? undefined : interimFor(req),
      })
    } catch (error) {
      return { kind: 'failed', error }
    }
    if (res.status === 304) {
      res.body.resume()
      const { headers: notModified } = cleanResponseHeaders(res.headers)
      if (!notModifiedMatches(meta.headers, notModified)) {
        // §4.3.4: a 304 that selects no stored response cannot update it; drop it and fetch afresh.
        await store.delete(meta.key, meta.variant)
        return { kind: 'failed', status: 304 }
      }
      const merged = mergeNotModified(meta.headers, storedHeaders(notModified))
      const responseTime = now()
      const rules = req.rules?.response(meta.status, merged['content-type'])
      const decision = decideStore(
        { method: 'GET', url: meta.url, headers: req.headers, requestTime },
        { status: meta.status, headers: merged, hasSetCookie: false, responseTime },
        storeRules,
        rules?.store,
      )
      if (!decision.store) {
        // The refreshed headers forbid storing (e.g. now no-store): serve this once, keep nothing.
        await store.delete(meta.key, meta.variant)
        const fresh: FreshnessPolicy = { ...policy, lifetime: 0, responseTime, initialAge: 0 }
        return { kind: 'refreshed', meta: { ...meta, headers: merged }, policy: fresh, originMs: res.headersMs }
      }
      const updated: EntryMeta = { ...meta, headers: merged, policy: decision.policy, staleAt: decision.staleAt, deleteAt: decision.deleteAt, tags: rules?.tags.length ? [...new Set([...cacheTags(merged), ...rules.tags])] : cacheTags(merged) }
      try {
        await store.updateMeta(updated)
      } catch (err) {
        opts.log({ level: 'error', msg: 'cache metadata update failed', key: meta.key, error: (err as Error).message })
      }
      return { kind: 'refreshed', meta: updated, policy: decision.policy, originMs: res.headersMs }
    }
    if (res.status >= 500) return { kind: 'failed', status: res.status, response: res }
    const key = meta.key
    const admitted = admit({ key, url: meta.url, host: meta.host, origin: originUrl }, { method: 'GET', headers: req.headers, requestTime, rules: req.rules }, res, () => {})
    return { kind: 'replaced', result: clientResult(req, originUrl, admitted, res, { fwd: 'stale' }) }
  }

  function backgroundRevalidate(req: ProxyRequest, originUrl: URL, meta: EntryMeta, policy: FreshnessPolicy): void {
    background.run(`${meta.key}\0${meta.variant}`, async () => {
      const outcome = await revalidate(req, originUrl, meta, policy, true)
      if (outcome.kind === 'replaced') {
        // Drain the new body into the cache; nobody is waiting for it.
        const body = outcome.result.body
        if (body && !Buffer.isBuffer(body)) {
          const stream = body
          await new Promise<void>((resolve) => {
            stream.on('end', resolve).on('error', resolve).on('close', resolve)
            stream.resume()
          })
        }
      } else if (outcome.kind === 'failed') {
        outcome.response?.body.resume()
        opts.log({ level: 'warn', msg: 'background revalidation failed', key: meta.key, status: outcome.status, error: (outcome.error as Error | undefined)?.message })
      }
    })
  }

  async function handleCacheable(req: ProxyRequest, originUrl: URL): Promise<ProxyResult> {
    const key = ruleMatch(req).key
    const reqcc = req.headers['cache-control'] ? parseDirectives(req.headers['cache-control']) : undefined

    /** This request waited for another's origin fetch (Cache-Status `collapsed`). */
    let collapsed = false
    for (let attempt = 0; ; attempt++) {
      const { meta, hadVariants, variants } = lookup(key, req.headers, originUrl)
      if (meta) {
        const policy = meta.policy as FreshnessPolicy
        const decision = decideReuse(policy, req.headers, now())
        if (decision.kind === 'fresh') {
          const served = await serveStored(req, meta, policy, { hit: true, collapsed: collapsed || undefined })
          if (served) return served
          continue // body gone or corrupt: the store dropped it; look again (→ miss)
        }
        if (decision.kind === 'stale-while-revalidate') {
          const served = await serveStored(req, meta, policy, { hit: true, detail: 'stale-while-revalidate' })
          if (served) {
            backgroundRevalidate(req, originUrl, meta, policy)
            return served
          }
          continue
        }
        // Must revalidate before use.
        const outcome = await revalidate(req, originUrl, meta, policy, false)
        if (outcome.kind === 'refreshed') {
          const served = await serveStored(req, outcome.meta, outcome.policy, { fwd: decision.reason === 'request' ? 'request' : 'stale', fwdStatus: 304 })
          if (served) return { ...served, originMs: outcome.originMs }
          continue
        }
        if (outcome.kind === 'replaced') {
          outcome.result.cacheStatus.fwd = decision.reason === 'request' ? 'request' : 'stale'
          outcome.result.headers['cache-status'] = formatCacheStatus(outcome.result.cacheStatus)
          return outcome.result
        }
        // Origin failed or answered 5xx: stale-if-error (RFC 5861 §4) when allowed.
        if (mayServeStaleOnError(policy, now())) {
          outcome.response?.body.resume()
          const served = await serveStored(req, meta, policy, { fwd: 'stale', fwdStatus: outcome.status, detail: 'stale-if-error' })
          if (served) return served
        }
        if (outcome.response) {
          const cleaned = responseHeaders(outcome.response, meta.url)
          return clientResult(req, originUrl, { ...cleaned, body: outcome.response.body, stored: false }, outcome.response, { fwd: 'stale' })
        }
        if (outcome.status === 304) continue // unmatched 304: entry dropped, fetch again
        return originFailure(outcome.error, { fwd: 'stale' })
      }

      const part = usablePart(req.method, req.headers, variants, now(), storeRules)
      if (part) {
        const served = await serveStored(req, part, part.policy as FreshnessPolicy, { hit: true, collapsed: collapsed || undefined })
        if (served) return served
        continue
      }

      // RFC 9111 §5.2.1.7: only-if-cached with nothing usable stored → 504.
      if (reqcc?.has('only-if-cached')) return textResult(504, '504 Gateway Timeout: not in cache and the request said only-if-cached', { fwd: 'miss', detail: 'only-if-cached' })

      const fwd = hadVariants ? 'vary-miss' : 'uri-miss'
      // Ranges and HEAD never lead a cache fill (they do not fetch the whole body), but they
      // wait for a fill already in flight, which will likely answer them from cache.
      if (req.method === 'HEAD' || req.headers.range !== undefined || attempt > 1) {
        const pending = attempt > 1 ? undefined : coalescer.pending(key)
        if (pending) collapsed = coalescer.awaitingOrigin(key)
        if (pending && (await pending) === 'stored') continue
        // A range asked for without If-Range: its 206 can be stored as a part (RFC 9111 §3.3).
        // With If-Range the client holds a copy of its own to combine with: pass it through.
        if (req.method === 'GET' && req.headers.range !== undefined && req.headers['if-range'] === undefined) return fetchRange(req, originUrl, key, { fwd })
        return pass(req, originUrl, { fwd })
      }
      // A key whose last fill was not shareable skips coalescing for a while ("hit-for-miss"):
      // otherwise every wave of concurrent requests to an uncacheable URL would queue behind one.
      if (passMarks.has(key)) {
        return fetchAndStore(req, originUrl, key, { fwd }, (stored) => {
          if (stored) passMarks.delete(key)
        })
      }
      const role = coalescer.join(key)
      if (role.role === 'waiter') {
        const outcome = await role.outcome
        // `collapsed` only for a request that waited on the origin with the leader, not one that
        // arrived while the leader's complete response was being written to the cache.
        collapsed = role.collapsed
        if (outcome === 'stored') continue
        // Not shareable (private, Set-Cookie, error...): this waiter asks the origin itself.
        return fetchAndStore(req, originUrl, key, { fwd, collapsed: role.collapsed || undefined }, () => {})
      }
      let settled = false
      const settle = (stored: boolean) => {
        if (settled) return
        settled = true
        if (stored) passMarks.delete(key)
        else passMarks.add(key)
        role.settle(stored ? 'stored' : 'not-shared')
      }
      try {
        return await fetchAndStore(req, originUrl, key, { fwd }, settle, { onReceived: role.received })
      } catch (err) {
        settle(false)
        throw err
      }
    }
  }

  /** Everything but a fresh hit answered at once: misses, revalidation, pass-through, unsafe methods. */
  async function handle(req: ProxyRequest, originUrl: URL | undefined): Promise<ProxyResult> {
    if (!originUrl) {
      return textResult(421, `421 Misdirected Request: caje serves no site for host "${req.host}". Add it to CAJE_SITES (host=origin) or set CAJE_ORIGIN.`, { fwd: 'bypass', detail: 'unknown-host' })
    }
    try {
      if (SAFE_METHODS.has(req.method) && ruleMatch(req).bypass) return await pass(req, originUrl, { fwd: 'bypass' })
      if (SAFE_METHODS.has(req.method)) return await handleCacheable(req, originUrl)
      const result = await pass(req, originUrl, { fwd: 'method' })
      await invalidateAfter(req, result)
      return result
    } catch (err) {
      return originFailure(err, { fwd: SAFE_METHODS.has(req.method) ? 'miss' : 'method' })
    }
  }

  function counted(result: ProxyResult): ProxyResult {
    opts.metrics?.request(statusLabel(result.cacheStatus))
    return result
  }

  return {
    serve(req) {
      const originUrl = opts.resolveOrigin(req.host)
      // A fresh hit is answered at once when its body is at hand (memory, or a small verified
      // file already open), without a promise; everything else takes the asynchronous path.
      if (originUrl && SAFE_METHODS.has(req.method) && !ruleMatch(req).bypass) {
        const { meta } = lookup(ruleMatch(req).key, req.headers, originUrl)
        const policy = meta?.policy as FreshnessPolicy | undefined
        if (meta && policy && decideReuse(policy, req.headers, now()).kind === 'fresh') {
          const served = serveStored(req, meta, policy, HIT)
          if (served instanceof Promise) return served.then((r) => (r ? r : handle(req, originUrl))).then(counted)
          if (served) return counted(served)
        }
      }
      return handle(req, originUrl).then(counted)
    },

    async fill(url, varyHeaders, signal) {
      const host = url.host.toLowerCase()
      const originUrl = opts.resolveOrigin(host)
      if (!originUrl) throw new Error(`no origin configured for host ${host}`)
      const req: ProxyRequest = {
        method: 'GET',
        scheme: url.protocol === 'https:' ? 'https' : 'http',
        host,
        path: canonicalTarget(url.pathname + url.search),
        // Stored Vary values are normalised: '' is an absent field, which must not be sent as an empty one.
        headers: { ...requestHeadersForVariant(varyHeaders), ...fieldsFromKey(url.hash), host },
        body: null,
        clientIp: '127.0.0.1',
        signal: signal ?? new AbortController().signal,
      }
      const key = ruleMatch(req).key
      let resolveOutcome!: (s: boolean) => void
      const storedOutcome = new Promise<boolean>((r) => (resolveOutcome = r))
      const result = await fetchAndStore(req, originUrl, key, { fwd: 'miss' }, (s) => resolveOutcome(s), { via: 'populate' })
      let bytes = 0
      const body = result.body
      if (body instanceof Buffer) bytes = body.length
      else if (body) {
        for await (const chunk of body) bytes += (chunk as Buffer).length
      }
      return { stored: await storedOutcome, status: result.status, bytes }
    },

    idle: () => background.idle(),
  }
}

/** Interim responses for the client waiting on this origin request: only its own, never stored. */
function interimFor(req: ProxyRequest): ((status: number, headers: HeaderBag) => void) | undefined {
  return req.interim && ((status, headers) => req.interim!(status, headers))
}

/** Whether the last transfer coding is chunked: the body's end is then marked in the stream (RFC 9112 §7.1). */
function isChunked(transferEncoding: string | string[] | undefined): boolean {
  if (transferEncoding === undefined) return false
  const codings = (Array.isArray(transferEncoding) ? transferEncoding.join(',') : transferEncoding).split(',')
  return codings[codings.length - 1]!.trim().toLowerCase() === 'chunked'
}

/** Cache tags for purge by tag: Surrogate-Key (space separated) and Cache-Tag (comma separated). */
export function cacheTags(headers: FlatHeaders): string[] {
  const tags = new Set<string>()
  for (const t of (headers['surrogate-key'] ?? '').split(/\s+/)) if (t) tags.add(t)
  for (const t of (headers['cache-tag'] ?? '').split(',')) if (t.trim()) tags.add(t.trim())
  return [...tags]
}

