// The request path: key → lookup → hit | revalidate | fill | pass → respond.
// HTTP semantics are decided in policy.ts; storage is behind the CacheStore
// interface. Each step with a lifecycle of its own is its own unit, given the
// small dependency objects it needs: fill.ts stores one origin response while
// it streams, revalidate.ts sends conditional requests and merges 304s, and
// coalesce.ts decides which request fills a key while the others wait. This
// module only orchestrates them (serve → handleCacheable reads in order).

import type { Readable } from 'node:stream'
import type { BodyLoan, ByteRange, CacheStore, EntryMeta, StoredBody } from '../cache/types.ts'
import type { Metrics } from '../metrics.ts'
import { canonicalTarget } from '../canonical-url.ts'
import { primaryKey, requestHeadersForVariant, varyFields, varyValues, variantId, variantMatches } from './cache-key.ts'
import { formatCacheStatus, makeStatus, plainHitStatus, statusLabel, type CacheStatus } from './cache-status.ts'
import { FillGate } from './coalesce.ts'
import { cleanedForClient, NOT_STORED, startFill, type Fill, type FillDeps, type FillOutcome, type FillRequest, type FillTarget } from './fill.ts'
import { BackgroundRevalidator, dropAfterServing, revalidate, type Revalidation, type RevalidateDeps } from './revalidate.ts'
import { originRequestHeaders, STEERING_REQUEST_HEADERS, withoutConditionals, type ForwardContext } from './forward.ts'
import { appendVia, type FlatHeaders, type HeaderBag } from './headers.ts'
import { classifyOriginError, OriginError, type AbortSource, type OriginClient, type OriginResponse } from './origin.ts'
import {
  currentAge,
  clientNotModified,
  decideReuse,
  invalidates,
  isFreshnessPolicy,
  mayServeStaleOnError,
  parseDirectives,
  ttl,
  type FreshnessPolicy,
  type StoreRules,
  usableUnder,
  withNotModifiedFields,
} from './policy.ts'
import { completionRequest, storedPartFor, partSlice, usablePart } from './part.ts'
import { discard, startPartFill, supersede } from './part-fill.ts'
import { ifRangeAllows, parseRange } from './range.ts'
import { fieldsFromKey, NO_RULES, type RuleMatch, type RuleSet } from '../rules/match.ts'
import { SOFT_PURGE_DETAIL } from '../vocabulary.ts'
import type { KeyCounter } from '../traffic.ts'

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
  /** Aborted when the client goes away before its answer is complete. */
  signal: AbortSource
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
  /** formatCacheStatus(cacheStatus), when the answer has it already (a stored answer's Cache-Status field). */
  cacheStatusText?: string
  /** Where the body came from, for metrics. */
  tier: 'memory' | 'disk' | 'origin' | 'none'
  /** `body`'s loan from the store (StoredBody.loan): given back by whoever writes the answer, once the body is sent. */
  loan?: BodyLoan
  originMs?: number
  /** For a streamed origin body: the 502/504 to send instead if the body fails before its first byte. */
  bodyFailure?: (err: unknown) => ProxyResult
  /** A stored answer's key record in the traffic recorder, kept with the stored response (traffic.ts KeyCounter). */
  keyCounter?: KeyCounter
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
  /** Cache fills in flight (one per key, coalesce.ts) and the requests waiting for their outcome. */
  stats(): ProxyStats
}

export interface ProxyStats {
  /** Keys being filled from the origin by a leading request. */
  fillsInFlight: number
  /** Requests waiting for another request's fill of their key instead of asking the origin themselves. */
  fillWaiters: number
}

const SAFE_METHODS = new Set(['GET', 'HEAD'])
const HIT: CacheStatus = makeStatus({ hit: true })
const NO_VARIANTS: readonly EntryMeta[] = Object.freeze([])
const NO_RANGE = { kind: 'none' } as const
/** lookup() of a key with nothing stored (every miss asks twice: serve, then handleCacheable). */
const NOTHING_STORED: { meta?: EntryMeta; hadVariants: boolean; variants: readonly EntryMeta[] } = Object.freeze({ meta: undefined, hadVariants: false, variants: NO_VARIANTS })
/** The plain hit of an entry within one second from which on those hits share one header set (plainFields). */
const SHARED_PLAIN_FROM = 4
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
    cacheStatus: makeStatus(cacheStatus),
    tier: 'none',
    keyCounter: undefined,
  }
}

export function createProxy(opts: ProxyOptions): Proxy {
  const { store, origin } = opts
  const now = opts.now ?? Date.now
  const fills = new FillGate(PASS_MARK_TTL_MS, PASS_MARK_LIMIT, now)
  const storeRules: StoreRules = { cacheSetCookie: opts.cacheSetCookie, heuristicFreshness: opts.heuristicFreshness ?? false }
  const fillDeps: FillDeps = { store, storeRules, maxObjectBytes: opts.maxObjectBytes, log: opts.log, now }
  const revalidateDeps: RevalidateDeps = { ...fillDeps, origin }
  const background = new BackgroundRevalidator(revalidateDeps)
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
    if (varies.length === 0) return NOTHING_STORED
    const best = storedVariant(key, headers, originUrl, varies)
    if (best) return { meta: best, hadVariants: true, variants: NO_VARIANTS }
    // Nothing whole for this request: stored parts (usablePart) and whether any whole variant
    // exists (vary-miss or uri-miss) need the whole list, on this miss path only. Only this
    // origin's count: with none, the miss is a uri-miss, not a vary-miss.
    const variants = store.variants(key).filter((v) => fromOrigin(v, originUrl))
    return { hadVariants: variants.some((v) => v.status !== 206), variants }
  }

  /**
   * lookup()'s whole stored variant alone: what serve() asks of every request, without a result
   * object per hit. `t`: the clock reading that will date the answer, when there is one (the
   * store judges expiry by it too).
   */
  function storedVariant(key: string, headers: FlatHeaders, originUrl: URL, varies = store.varyOf(key), t?: number): EntryMeta | undefined {
    let best: EntryMeta | undefined
    // Indexed, not for…of: the iterator's result objects were allocated on every hit.
    for (let i = 0; i < varies.length; i++) {
      const fields = varyFields(varies[i]!)
      const meta = store.variant(key, fields.length === 0 ? '' : variantId(varyValues(fields, headers)), t)
      if (meta && !fromOrigin(meta, originUrl)) continue
      // A stored part (206) is never taken for the whole response; only usablePart() picks one.
      if (!meta || meta.status === 206 || !isFreshnessPolicy(meta.policy)) continue
      if (!usableUnder(meta.policy, storeRules)) continue
      if (!variantMatches(meta.varyHeaders, fields, headers)) continue
      if (!best || meta.storedAt > best.storedAt) best = meta
    }
    return best
  }

  /** Stored from this origin (entries stored before the origin was recorded count as this origin's). */
  function fromOrigin(meta: EntryMeta, originUrl: URL): boolean {
    return meta.origin === undefined || meta.origin === originUrl.href
  }

  function sendToOrigin(req: ProxyRequest, originUrl: URL, method: string, headers: Record<string, string>, body: ProxyRequest['body']): Promise<OriginResponse> {
    return origin.send({ origin: originUrl, method, path: req.path, headers, body, signal: req.signal, onInterim: interimFor(req) })
  }

  function originFailure(err: unknown, cacheStatus: CacheStatus): ProxyResult {
    const e = err instanceof OriginError ? err : new OriginError('other', 502, 'request to origin failed')
    opts.log({ level: 'warn', msg: 'origin request failed', kind: e.kind, error: e.message, cause: (e.cause as Error | undefined)?.message })
    const title = e.status === 504 ? '504 Gateway Timeout' : '502 Bad Gateway'
    return textResult(e.status, `${title}: ${e.message}. caje could not get a response from the origin; try again shortly.`, makeStatus(cacheStatus, { detail: e.kind }))
  }

  /**
   * The 502/504 for an origin whose response head came but whose body, read whole before
   * answering (origin.ts), failed: nothing reached the client yet, so it gets a clear error that
   * says what the origin had answered (RFC 9211 §2.3 fwd-status). Undefined for a failure before
   * the head, which the caller handles.
   */
  function failedAfterHead(err: unknown, cacheStatus: CacheStatus): ProxyResult | undefined {
    if (!(err instanceof OriginError) || err.responseStatus === undefined) return undefined
    return originFailure(err, { fwd: cacheStatus.fwd, fwdStatus: err.responseStatus })
  }

  /** What every answer from one stored response shares (see storedHead). */
  interface StoredHead {
    fields: Readonly<Record<string, string>>
    /** Whole seconds of Age last sent, and its text. */
    age: number
    ageText: string
    /** Whole seconds of ttl last sent in a plain hit's Cache-Status, that status, and its field. */
    ttl: number
    hitStatus: string
    hit?: CacheStatus
    /** The rule and key that hitStatus names. */
    rule?: string
    key?: string
    /** A plain hit's whole header set with this ageText and hitStatus (frozen: every such answer shares it). */
    plain?: Readonly<Record<string, string>>
    /** Plain hits answered with a copy of their own since `plain` was last dropped (plainFields). */
    plainCopies: number
    /** Every answer from this response carries it to the traffic recorder, which keeps its key's record in it. */
    counter: KeyCounter
  }
  /**
   * The header fields every answer from one stored response shares: the stored fields
   * (RFC 9111 §3.1), Via, Accept-Ranges and Content-Length. Built once per stored entry
   * (entries are immutable; an update is a new object) and copied per answer. Age and
   * Cache-Status change per answer: their placeholders give every copy the same shape. Plain
   * hits (the 200 or HEAD of a fresh hit that no rule changes) within one second send the
   * same fields: those of an entry hit often share one object (plainFields).
   */
  const storedHeads = new WeakMap<EntryMeta, StoredHead>()
  function storedHead(meta: EntryMeta): StoredHead {
    let head = storedHeads.get(meta)
    if (!head) {
      const fields: Record<string, string> = { ...meta.headers, age: '', via: appendVia(meta.headers.via), 'cache-status': '' }
      if (meta.status === 200) fields['accept-ranges'] = 'bytes'
      // RFC 9110 §8.6: a 204 carries no Content-Length.
      if (meta.status !== 204) fields['content-length'] = String(meta.size)
      storedHeads.set(meta, (head = { fields, age: -1, ageText: '', ttl: NaN, hitStatus: '', plain: undefined, plainCopies: 0, counter: { record: undefined } }))
    }
    return head
  }

  /**
   * The answer a stored entry gives, before its body is opened: client conditionals → 304,
   * an unsatisfiable Range → 416, HEAD → headers only (all finished), else the 200/206 whose
   * body (`range`, or all of it) still has to be read.
   */
  function storedAnswer(req: ProxyRequest, meta: EntryMeta, policy: FreshnessPolicy, cacheStatus: CacheStatus, t: number): { result: ProxyResult; needsBody: boolean; range?: ByteRange } {
    const match = req.rules
    const rules = match !== undefined && match.matched.length !== 0 ? match.response(meta.status, meta.headers['content-type']) : undefined
    const rule = rules && (rules.rule ?? match!.rule)
    const key = match?.keyChanged ? match.key : undefined
    const left = ttl(policy, t)
    const head = storedHead(meta)
    // Age is whole seconds (RFC 9111 §5.1). It and a plain hit's Cache-Status change once a
    // second, not once a hit: reuse their text.
    const age = Math.floor(currentAge(policy, t))
    if (head.age !== age) {
      head.age = age
      head.ageText = String(age)
      head.plain = undefined
      head.plainCopies = 0
    }
    let status: CacheStatus
    let statusText: string
    if (cacheStatus === HIT) {
      // A fresh hit's status says the same within a second (ttl is sent in whole seconds, and
      // fresh means ttl > 0): one status object and its text serve every such answer.
      const whole = Math.trunc(left)
      if (head.hit === undefined || head.ttl !== whole || head.rule !== rule || head.key !== key) {
        head.ttl = whole
        head.rule = rule
        head.key = key
        if (rule === undefined && key === undefined) {
          const shared = plainHitStatus(whole)
          head.hit = shared.status
          head.hitStatus = shared.text
        } else {
          // One object literal (makeStatus), so every answer's status has the same shape.
          head.hit = makeStatus(HIT, { ttl: whole, rule, key })
          head.hitStatus = formatCacheStatus(head.hit)
        }
        head.plain = undefined
        head.plainCopies = 0
      }
      status = head.hit
      statusText = head.hitStatus
    } else {
      status = makeStatus(cacheStatus, { ttl: left, rule, key })
      statusText = formatCacheStatus(status)
    }
    const browserTtl = rules?.browserTtl

    // A stored part answers only the range inside it that usablePart() found.
    const slice = meta.status === 206 ? partSlice(meta, req.headers.range) : undefined
    if (slice) {
      const headers = answerFields(head, browserTtl, statusText)
      headers['content-range'] = slice.contentRange
      headers['content-length'] = slice.contentLength
      return { result: storedResult(206, headers, null, status, statusText, head.counter), needsBody: true, range: slice.body }
    }

    if (meta.status === 200 && clientNotModified(req.method, req.headers, meta.headers, policy.responseTime)) {
      const h = withNotModifiedFields<Record<string, string>>({ age: head.ageText, via: head.fields.via!, 'cache-status': statusText }, meta.headers)
      return { result: storedResult(304, h, null, status, statusText, head.counter), needsBody: false }
    }

    const range = meta.status === 200 && req.method === 'GET' && req.headers.range !== undefined && ifRangeAllows(req.headers, meta.headers) ? parseRange(req.headers.range, meta.size) : NO_RANGE
    if (range.kind === 'unsatisfiable') {
      const h: Record<string, string> = { 'content-range': `bytes */${meta.size}`, 'cache-status': statusText, via: head.fields.via!, 'content-length': '0' }
      return { result: storedResult(416, h, Buffer.alloc(0), status, statusText, head.counter), needsBody: false }
    }
    if (range.kind === 'range') {
      const { start, end } = range.range
      const headers = answerFields(head, browserTtl, statusText)
      headers['content-range'] = `bytes ${start}-${end}/${meta.size}`
      headers['content-length'] = String(end - start + 1)
      return { result: storedResult(206, headers, null, status, statusText, head.counter), needsBody: true, range: range.range }
    }
    let headers: Readonly<Record<string, string>>
    if (cacheStatus === HIT && browserTtl === undefined) headers = plainFields(head, statusText)
    else headers = answerFields(head, browserTtl, statusText)
    return { result: storedResult(meta.status, headers, null, status, statusText, head.counter), needsBody: req.method !== 'HEAD' }
  }

  /**
   * A plain hit's fields: from the entry's fourth plain hit within one second on, the set those
   * hits share (frozen, and written from Node's slot, http-adapter.ts writeHead); before that, a
   * copy of its own. A shared set lives at least until its second is over, and with it the checked
   * copy Node writes it from: under load that outlasts two collections of V8's young generation
   * (one every few tens of ms), so both are moved to the old generation, where only a full
   * collection frees them, marking everything live to find them dead. That pays back for an entry
   * hit many times in a second. A Zipf mix over 10,000 objects at 10,000 hits a second hits about
   * 2,800 entries each second, most of them once or twice; about 340 of them four times or more,
   * and those take 58% of the hits. An answer's own copy dies young, collected at no cost.
   */
  function plainFields(head: StoredHead, statusText: string): Readonly<Record<string, string>> {
    if (head.plain !== undefined) return head.plain
    if (++head.plainCopies < SHARED_PLAIN_FROM) return answerFields(head, undefined, statusText)
    return (head.plain = Object.freeze(answerFields(head, undefined, statusText)))
  }

  /** A stored answer's fields: the stored ones with its Age, Cache-Status and browser TTL (a copy the caller may change). */
  function answerFields(head: StoredHead, browserTtl: number | undefined, statusText: string): Record<string, string> {
    const headers: Record<string, string> = { ...head.fields }
    if (browserTtl !== undefined) headers['cache-control'] = `max-age=${browserTtl}`
    headers.age = head.ageText
    headers['cache-status'] = statusText
    return headers
  }

  /** A stored answer's result, every one of the same shape. */
  function storedResult(status: number, headers: Readonly<Record<string, string>>, body: Buffer | null, cacheStatus: CacheStatus, cacheStatusText: string, keyCounter: KeyCounter): ProxyResult {
    return { status, headers: headers as Record<string, string>, body, cacheStatus, cacheStatusText, tier: 'none', loan: undefined, originMs: undefined, bodyFailure: undefined, keyCounter }
  }

  function withBody(result: ProxyResult, stored: StoredBody): ProxyResult {
    if (stored.kind === 'buffer') {
      result.body = stored.buffer
      result.loan = stored.loan
    } else result.body = stored.stream
    result.tier = stored.tier
    return result
  }

  /**
   * Serve a stored entry (see storedAnswer): at once when the store has the body at hand, else a
   * promise. Undefined (now or later) when the body is gone or corrupt.
   */
  function serveStored(req: ProxyRequest, meta: EntryMeta, policy: FreshnessPolicy, cacheStatus: CacheStatus, t = now()): ProxyResult | undefined | Promise<ProxyResult | undefined> {
    const answer = storedAnswer(req, meta, policy, cacheStatus, t)
    if (!answer.needsBody) {
      store.askedAgain(meta.key, meta.variant)
      return answer.result
    }
    const stored = store.read(meta.key, meta.variant, answer.range, t)
    if (stored instanceof Promise) return stored.then((s) => s && withBody(answer.result, s))
    return stored && withBody(answer.result, stored)
  }

  /**
   * Response for the client from an origin response that was (maybe) admitted to the cache.
   * `admitted.headers` is the fill's own set (cleaned from the origin's for this one response; a
   * stored entry keeps a copy, storedHeaders): Via, Cache-Status and a browser TTL are written
   * into it rather than into a copy, one fewer header set per miss or pass.
   */
  function clientResult(
    req: ProxyRequest,
    originUrl: URL,
    admitted: Pick<Fill, 'headers' | 'setCookie' | 'body' | 'stored' | 'detail'>,
    res: OriginResponse,
    cacheStatus: CacheStatus,
  ): ProxyResult {
    // fwd-status is what the origin sent (RFC 9211 §2.3), which a combined response (part-fill.ts) is not.
    const status = makeStatus(cacheStatus, { fwdStatus: cacheStatus.fwdStatus ?? res.status, stored: admitted.stored || undefined, detail: admitted.detail })
    // The cache fill asked for the full response; the client's own conditionals are answered
    // here (RFC 9110 §13.2.2), while the body keeps flowing into the cache. The 304 takes the
    // origin's fields as they came, before a browser TTL rewrites Cache-Control below.
    const notModified = res.status === 200 && clientNotModified(req.method, req.headers, admitted.headers) ? withNotModifiedFields<Record<string, string | string[]>>({}, admitted.headers) : undefined
    const headers: Record<string, string | string[]> = admitted.headers
    const upstream = headers['cache-status']
    headers.via = appendVia(admitted.headers.via)
    if (req.rules && req.rules.matched.length) {
      const rules = req.rules.response(res.status, admitted.headers['content-type'])
      status.rule = rules.rule ?? req.rules.rule
      // The browser TTL replaces what the origin told clients; the cache decided on the origin's own.
      if (rules.browserTtl !== undefined && !req.rules.bypass) headers['cache-control'] = `max-age=${rules.browserTtl}`
    }
    if (req.rules?.keyChanged) status.key = req.rules.key
    // Formatted once: the access log names the same text (cacheStatusText).
    const statusText = formatCacheStatus(status)
    headers['cache-status'] = upstream ? `${upstream}, ${statusText}` : statusText
    if (admitted.setCookie.length) headers['set-cookie'] = admitted.setCookie
    if (notModified) {
      drain(admitted.body)
      notModified.via = headers.via as string
      notModified['cache-status'] = headers['cache-status']
      if (admitted.setCookie.length) notModified['set-cookie'] = admitted.setCookie
      return { status: 304, headers: notModified, body: null, cacheStatus: status, cacheStatusText: statusText, tier: 'origin', loan: undefined, originMs: res.headersMs, bodyFailure: undefined, keyCounter: undefined }
    }
    let body: Readable | Buffer | null = admitted.body
    if (req.method === 'HEAD' || res.status === 204 || res.status === 304) {
      drain(admitted.body)
      body = null
    }
    // Only a streamed body can fail after the head came; one read whole already has.
    const bodyFailure = body === null || Buffer.isBuffer(body) ? undefined : (err: unknown) => originFailure(classifyOriginError(err, originUrl), { fwd: cacheStatus.fwd, fwdStatus: status.fwdStatus })
    return { status: res.status, headers, body, cacheStatus: status, cacheStatusText: statusText, tier: 'origin', loan: undefined, originMs: res.headersMs, bodyFailure, keyCounter: undefined }
  }

  /**
   * Cache-filling GET to the origin (a miss): the client's answer, and the outcome of the fill
   * behind it. With a stored `part` of the response, only the rest of it is asked for (RFC
   * 9111 §3.3, part.ts completionRequest); a 206 that completes the part is combined with it
   * into the whole response (part-fill.ts). Any other 206 or a 416 cannot answer a request for
   * the whole: it is dropped and the whole response asked for. A whole response stored
   * supersedes the part.
   */
  async function fetchAndStore(
    req: ProxyRequest,
    originUrl: URL,
    key: string,
    cacheStatus: CacheStatus,
    target: Pick<FillTarget, 'via' | 'onReceived'> = {},
    part?: EntryMeta,
  ): Promise<{ result: ProxyResult; outcome: Promise<FillOutcome> }> {
    const headers = withoutConditionals(originRequestHeaders(req.headers, forwardContext(req, originUrl)))
    const completion = part && completionRequest(part)
    const requestTime = now()
    let res: OriginResponse
    try {
      res = await sendToOrigin(req, originUrl, 'GET', completion ? { ...headers, ...completion } : headers, null)
    } catch (err) {
      const failed = failedAfterHead(err, cacheStatus)
      if (failed) return { result: failed, outcome: Promise.resolve({ stored: false }) }
      throw err
    }
    const fillTarget: FillTarget = { key, url: req.rules?.url ?? key, host: req.host, origin: originUrl, ...target }
    const fillRequest: FillRequest = { method: 'GET', headers: req.headers, requestTime, rules: req.rules }
    if (completion && (res.status === 206 || res.status === 416)) {
      const whole = res.status === 206 ? await startPartFill(fillDeps, fillTarget, fillRequest, res, 'whole') : undefined
      if (whole) return { result: clientResult(req, originUrl, whole.fill, whole.response, { ...cacheStatus, fwd: 'partial', fwdStatus: res.status }), outcome: whole.fill.outcome }
      discard(res.body)
      const again = await fetchAndStore(req, originUrl, key, cacheStatus, target)
      supersede(fillDeps, again.outcome, part)
      return again
    }
    const fill = startFill(fillDeps, fillTarget, fillRequest, res)
    if (part) supersede(fillDeps, fill.outcome, part)
    return { result: clientResult(req, originUrl, fill, res, completion ? { ...cacheStatus, fwd: 'partial' } : cacheStatus), outcome: fill.outcome }
  }

  /**
   * A range request the cache cannot answer: forwarded with its Range, and a 206 that comes back
   * is stored as a part, combined with the stored part it extends (part-fill.ts); a 200, when
   * the origin ignores Range, is stored as the whole response.
   */
  async function fetchRange(req: ProxyRequest, originUrl: URL, key: string, cacheStatus: CacheStatus): Promise<ProxyResult> {
    const headers = { ...withoutConditionals(originRequestHeaders(req.headers, forwardContext(req, originUrl))), range: req.headers.range! }
    const requestTime = now()
    const res = await sendToOrigin(req, originUrl, 'GET', headers, null)
    const taken = (await startPartFill(fillDeps, { key, url: req.rules?.url ?? key, host: req.host, origin: originUrl }, { method: 'GET', headers: req.headers, requestTime, rules: req.rules }, res, 'part'))!
    return clientResult(req, originUrl, taken.fill, taken.response, cacheStatus)
  }

  /** Plain pass-through: the request goes to the origin as the client sent it, nothing is stored. */
  async function pass(req: ProxyRequest, originUrl: URL, cacheStatus: CacheStatus): Promise<ProxyResult> {
    const headers = originRequestHeaders(req.headers, forwardContext(req, originUrl))
    let res: OriginResponse
    try {
      res = await sendToOrigin(req, originUrl, req.method, headers, SAFE_METHODS.has(req.method) ? null : req.body)
    } catch (err) {
      const failed = failedAfterHead(err, cacheStatus)
      if (failed) return failed
      throw err
    }
    const cleaned = cleanedForClient(res, primaryKey(req.scheme, req.host, req.path), opts.log)
    return clientResult(req, originUrl, { ...cleaned, body: res.whole ?? res.body, stored: false }, res, cacheStatus)
  }

  /**
   * RFC 9111 §4.4: a successful unsafe request invalidates the target URI and same-host Location /
   * Content-Location. Each is looked up as a GET of it would be (a rule may shape the key by
   * method, query or header), and every entry stored for that URL goes: when the rules add header
   * or cookie values to the key, the entries for other values than this request's are the same
   * URL's too (found by a pass over the index, as a purge by URL finds them).
   */
  async function invalidateAfter(req: ProxyRequest, result: ProxyResult): Promise<void> {
    if (!invalidates(req.method, result.status)) return
    const rules = opts.rules?.() ?? NO_RULES
    const targets = [rules.match({ ...req, method: 'GET' })]
    const base = new URL(primaryKey(req.scheme, req.host, req.path))
    for (const field of ['location', 'content-location']) {
      const v = result.headers[field]
      if (typeof v !== 'string') continue
      try {
        const u = new URL(v, base)
        if (u.host.toLowerCase() === base.host) targets.push(rules.match({ ...req, method: 'GET', path: canonicalTarget(u.pathname + u.search) }))
      } catch {
        // An unparseable Location names nothing we could have stored.
      }
    }
    for (const { key, url } of targets) {
      try {
        if (key === url) await store.delete(key)
        else await store.deleteWhere((meta) => meta.host === req.host && meta.url === url)
      } catch (err) {
        opts.log({ level: 'error', msg: 'invalidation failed', key, error: (err as Error).message })
      }
    }
  }

  /** The revalidation of a stored entry this request found stale (revalidate.ts). */
  function revalidation(req: ProxyRequest, originUrl: URL, meta: EntryMeta, policy: FreshnessPolicy): Revalidation {
    return { meta, policy, originUrl, clientHeaders: req.headers, forwardHeaders: originRequestHeaders(req.headers, forwardContext(req, originUrl)), signal: req.signal, onInterim: interimFor(req), rules: req.rules }
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
        const decision = decideReuse(policy, req.headers, now(), meta.softPurgedAt)
        // Why this answer went to the origin, when a soft purge is the reason (Cache-Status detail).
        const purged = decision.kind === 'revalidate' && decision.reason === 'soft-purge' ? SOFT_PURGE_DETAIL : undefined
        if (decision.kind === 'fresh') {
          const served = await serveStored(req, meta, policy, { hit: true, collapsed: collapsed || undefined })
          if (served) return served
          continue // body gone or corrupt: the store dropped it; look again (→ miss)
        }
        if (decision.kind === 'stale-while-revalidate') {
          const served = await serveStored(req, meta, policy, { hit: true, detail: 'stale-while-revalidate' })
          if (served) {
            background.start(revalidation(req, originUrl, meta, policy))
            return served
          }
          continue
        }
        // Must revalidate before use: asked for by the request (Cache-Status fwd=request) or because
        // the copy is stale, purged or no-cache (fwd=stale). RFC 9111 §5.2.1.7: a client that asked
        // only-if-cached gets a 504 instead: the copy may not be used unchecked, nor the origin asked.
        const fwd = decision.reason === 'request' ? 'request' : 'stale'
        if (reqcc?.has('only-if-cached')) return textResult(504, '504 Gateway Timeout: the stored response must be revalidated and the request said only-if-cached', { fwd, detail: 'only-if-cached' })
        const outcome = await revalidate(revalidateDeps, revalidation(req, originUrl, meta, policy))
        if (outcome.kind === 'refreshed') {
          const served = await serveStored(req, outcome.meta, outcome.policy, { fwd, fwdStatus: 304, detail: purged })
          // Dropped only now that its body is taken: a response that may no longer be kept is served this once.
          if (outcome.dropAfterServing) await dropAfterServing(revalidateDeps, outcome.meta)
          if (!served) continue
          // The 304's cookies are this client's (never stored); a hit's header set may be shared, so a copy.
          if (outcome.setCookie.length > 0) return { ...served, headers: { ...served.headers, 'set-cookie': outcome.setCookie }, originMs: outcome.originMs }
          return { ...served, originMs: outcome.originMs }
        }
        if (outcome.kind === 'replaced') {
          return clientResult(req, originUrl, outcome.fill, outcome.response, { fwd, detail: purged })
        }
        // Origin failed or answered 5xx: stale-if-error (RFC 5861 §4) when allowed, by the response
        // and by the request (decideReuse: not for a request's no-cache, which asked for the origin's
        // answer), and still within its window now that the origin has answered.
        if (decision.staleIfError && mayServeStaleOnError(policy, now(), meta.softPurgedAt)) {
          outcome.response?.body.resume()
          const served = await serveStored(req, meta, policy, { fwd, fwdStatus: outcome.status, detail: 'stale-if-error' })
          if (served) return served
        }
        if (outcome.response) {
          const cleaned = cleanedForClient(outcome.response, meta.url, opts.log)
          return clientResult(req, originUrl, { ...cleaned, body: outcome.response.body, stored: false }, outcome.response, { fwd, detail: purged })
        }
        if (outcome.status === 304) continue // unmatched 304: entry dropped, fetch again
        return originFailure(outcome.error, { fwd })
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
        const pending = attempt > 1 ? undefined : fills.pending(key)
        if (pending) collapsed = fills.awaitingOrigin(key)
        if (pending && (await pending) === 'stored') continue
        // A range asked for without If-Range: its 206 can be stored as a part (RFC 9111 §3.3).
        // With If-Range the client holds a copy of its own to combine with: pass it through.
        if (req.method === 'GET' && req.headers.range !== undefined && req.headers['if-range'] === undefined) return fetchRange(req, originUrl, key, { fwd })
        return pass(req, originUrl, { fwd })
      }
      // One fill per key at a time (coalesce.ts); the others wait for its outcome.
      const turn = fills.join(key)
      if (turn.role === 'waiter') {
        const outcome = await turn.outcome
        // `collapsed` only for a request that waited on the origin with the leader, not one that
        // arrived while the leader's complete response was being written to the cache.
        collapsed = turn.collapsed
        if (outcome === 'stored') continue
        // Not shareable (private, Set-Cookie, error...): this waiter asks the origin itself.
        return (await fetchAndStore(req, originUrl, key, { fwd, collapsed: turn.collapsed || undefined })).result
      }
      let filled: Awaited<ReturnType<typeof fetchAndStore>>
      try {
        filled = await fetchAndStore(req, originUrl, key, { fwd }, { onReceived: turn.received }, storedPartFor(req, variants))
      } catch (err) {
        turn.settle(false)
        throw err
      }
      // A response not stored settles the turn at once, without a reaction on its outcome.
      if (filled.outcome === NOT_STORED) turn.settle(false)
      else void filled.outcome.then(({ stored }) => turn.settle(stored))
      return filled.result
    }
  }

  /**
   * Everything but a fresh hit answered at once: misses, revalidation, pass-through, unsafe
   * methods. Counted here, in the one promise, rather than by a reaction chained on it.
   */
  async function handle(req: ProxyRequest, originUrl: URL | undefined): Promise<ProxyResult> {
    let result: ProxyResult
    if (!originUrl) {
      result = textResult(421, `421 Misdirected Request: caje serves no site for host "${req.host}". Add it to CAJE_SITES (host=origin) or set CAJE_ORIGIN.`, { fwd: 'bypass', detail: 'unknown-host' })
    } else {
      try {
        if (SAFE_METHODS.has(req.method)) result = ruleMatch(req).bypass ? await pass(req, originUrl, { fwd: 'bypass' }) : await handleCacheable(req, originUrl)
        else {
          result = await pass(req, originUrl, { fwd: 'method' })
          await invalidateAfter(req, result)
        }
      } catch (err) {
        result = originFailure(err, { fwd: SAFE_METHODS.has(req.method) ? 'miss' : 'method' })
      }
    }
    return counted(result)
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
        // One clock reading decides freshness, dates the answer (Age, ttl) and judges expiry in the store.
        const t = now()
        const key = ruleMatch(req).key
        const meta = storedVariant(key, req.headers, originUrl, store.varyOf(key), t)
        const policy = meta?.policy as FreshnessPolicy | undefined
        if (meta && policy && decideReuse(policy, req.headers, t, meta.softPurgedAt).kind === 'fresh') {
          const served = serveStored(req, meta, policy, HIT, t)
          if (served instanceof Promise) return served.then((r) => (r ? counted(r) : handle(req, originUrl)))
          if (served) return counted(served)
        }
      }
      return handle(req, originUrl)
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
      const { result, outcome } = await fetchAndStore(req, originUrl, key, { fwd: 'miss' }, { via: 'populate' })
      let bytes = 0
      const body = result.body
      if (body instanceof Buffer) bytes = body.length
      else if (body) {
        for await (const chunk of body) bytes += (chunk as Buffer).length
      }
      return { stored: (await outcome).stored, status: result.status, bytes }
    },

    idle: () => background.idle(),

    stats() {
      const f = fills.stats()
      return { fillsInFlight: f.inFlight, fillWaiters: f.waiters }
    },
  }
}

/** Let a body nobody sends on run to its end (a fill behind it still stores it). */
function drain(body: Readable | Buffer): void {
  if (!Buffer.isBuffer(body)) body.resume()
}

/** Interim responses for the client waiting on this origin request: only its own, never stored. */
function interimFor(req: ProxyRequest): ((status: number, headers: HeaderBag) => void) | undefined {
  return req.interim && ((status, headers) => req.interim!(status, headers))
}

export { cacheTags } from './fill.ts'
