// HTTP caching decisions (RFC 9111, shared cache), in one place: may a
// response be stored (§3), how long is it fresh (§4.2), may a stored one be
// reused (§4, §4.2.4), and how does a 304 update it (§4.3.4). Beyond the RFC's
// minimum: CDN-Cache-Control (RFC 9213), first-value rules for duplicated
// directives, the full §4.2.3 age calculation, must-revalidate/proxy-revalidate
// applying only once stale, and opt-in caching (explicit freshness only, unless
// heuristics are turned on).

import CachePolicy from 'http-cache-semantics'
import type { FlatHeaders } from './headers.ts'
import { parseTargetedField } from './cdn-cache-control.ts'
import { parseHttpDate } from './http-date.ts'
import { parseContentRange } from './range.ts'

/** What caje keeps about freshness, precomputed at store time so a hit is a comparison. */
export interface FreshnessPolicy {
  v: 1
  /** Epoch ms the request was sent / the response received (RFC 9111 §4.2.3). */
  requestTime: number
  responseTime: number
  /** corrected_initial_age, seconds. */
  initialAge: number
  /** Freshness lifetime, seconds (§4.2.1), heuristic or explicit. */
  lifetime: number
  /** The origin gave no lifetime (§4.2.2): such an entry is never served stale without revalidation. */
  heuristic: boolean
  /** no-cache: every reuse needs validation (§5.2.2.4). */
  noCache: boolean
  /** must-revalidate, proxy-revalidate, or s-maxage (§5.2.2.2, §5.2.2.8, §5.2.2.10): never serve stale. */
  mustRevalidate: boolean
  /** RFC 5861 windows, seconds. */
  staleWhileRevalidate: number
  staleIfError: number
  /** Which field the decision was made from. */
  source: 'cdn-cache-control' | 'cache-control'
}

export type Directives = Map<string, string | true>

/**
 * Parse a Cache-Control style list. Directive names are case-insensitive; when
 * a directive appears twice the first occurrence wins (RFC 9111 §4.2.1 allows
 * "the first occurrence should be used"); quoted values are unquoted.
 */
export function parseDirectives(value: string | undefined): Directives {
  const out: Directives = new Map()
  if (!value) return out
  for (const part of splitList(value)) {
    const eq = part.indexOf('=')
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase()
    if (!name || out.has(name)) continue
    if (eq < 0) {
      out.set(name, true)
      continue
    }
    let v = part.slice(eq + 1).trim()
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1')
    out.set(name, v)
  }
  return out
}

/**
 * Split a list on commas outside quoted-strings: no-cache="a, b" is one member.
 * A hand-written scan, linear in the input: request Cache-Control is client
 * input, and the regex this replaces (`"(?:\\.|[^"])*"` inside a repeated group)
 * backtracked exponentially on an unterminated quote full of backslashes, and
 * quadratically even once fixed, freezing the event loop for every request.
 * Inside quotes a backslash starts a quoted-pair (RFC 9110 §5.6.4). A quote
 * that is never closed separates members, as before, so a directive after it
 * (`x="a, no-store`) is still seen.
 */
function splitList(value: string): string[] {
  const parts: string[] = []
  let start = 0
  // Once one quote has no closing quote, no later one has either (the scan already covered them).
  let closable = true
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c === 0x2c /* , */) {
      if (i > start) parts.push(value.slice(start, i))
      start = i + 1
    } else if (c === 0x22 /* " */) {
      let close = -1
      if (closable) {
        for (let k = i + 1; k < value.length; k++) {
          const d = value.charCodeAt(k)
          if (d === 0x5c /* \ */) k++
          else if (d === 0x22) {
            close = k
            break
          }
        }
        if (close < 0) closable = false
      }
      if (close >= 0) i = close
      else {
        if (i > start) parts.push(value.slice(start, i))
        start = i + 1
      }
    }
  }
  if (start < value.length) parts.push(value.slice(start))
  return parts
}

/** delta-seconds (RFC 9111 §1.2.2): digits only; anything else is invalid (undefined). Overflow saturates at 2^31. */
export function deltaSeconds(v: string | true | undefined): number | undefined {
  if (typeof v !== 'string' || !/^\d+$/.test(v)) return undefined
  const n = Number(v)
  return n > 2147483648 ? 2147483648 : n
}

/**
 * HTTP-date (RFC 9110 §5.6.7) in one of its three forms, exactly; invalid → undefined. A
 * field that appears twice (`a, b` once joined) is not one date, so it is invalid too: for
 * Expires that means stale (RFC 9111 §4.2 and §5.3).
 */
export function httpDate(v: string | undefined): number | undefined {
  return parseHttpDate(v)
}

/** First value of a field that may only appear once (Age, ETag). */
function single(headers: FlatHeaders, name: string): string | undefined {
  const v = headers[name]
  if (v === undefined) return undefined
  return v.split(',')[0]!.trim()
}

/** Status codes RFC 9110 §15.1 defines as heuristically cacheable. */
export const HEURISTICALLY_CACHEABLE: ReadonlySet<number> = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])
/**
 * Status codes whose caching requirements caje knows (those of RFC 9110 §15, 429 of RFC 6585,
 * 451 of RFC 7725): what `must-understand` asks for (RFC 9111 §5.2.2.3). 304 is left out: it
 * is never stored.
 */
const KNOWN_STATUSES: ReadonlySet<number> = new Set([
  200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 429, 451, 500, 501, 502, 503, 504, 505,
])

/**
 * RFC 9111 §3: only a final response may be stored, and caje stores any final status it
 * understands. RFC 9110 §15: a status unknown in a known class is understood as that class's
 * x00, so a 299 with max-age is stored like a 200. Never stored: 304 (it updates a stored
 * response, it is not one). A 206 is stored as a part (see decideStore).
 */
function storableStatus(status: number): boolean {
  return status >= 200 && status <= 599 && status !== 304
}

/** The directives caje acts on: CDN-Cache-Control when present (RFC 9213 §2.1), else Cache-Control. */
export function targetedDirectives(headers: FlatHeaders): { cc: Directives; source: FreshnessPolicy['source'] } {
  const cdn = headers['cdn-cache-control']
  if (cdn !== undefined) {
    const cc = parseTargetedField(cdn)
    // RFC 9213 §2.1: an invalid targeted field is ignored, and the cache falls back to Cache-Control.
    if (cc) return { cc, source: 'cdn-cache-control' }
  }
  return { cc: parseDirectives(headers['cache-control']), source: 'cache-control' }
}

export interface StoreRequest {
  method: string
  url: string
  headers: FlatHeaders
  requestTime: number
}

export interface StoreResponse {
  status: number
  headers: FlatHeaders
  hasSetCookie: boolean
  responseTime: number
}

export type StoreDecision =
  | { store: true; policy: FreshnessPolicy; staleAt: number; deleteAt: number }
  | { store: false; reason: string }

/** How long an entry with validators is kept past its freshness, so it can be revalidated with a 304 instead of refetched. */
const KEEP_FOR_REVALIDATION_MS = 24 * 3600 * 1000
/** Cap for heuristic freshness (RFC 9111 §4.2.2 suggests a fraction of the Last-Modified age; caps are common practice). */
const HEURISTIC_CAP_S = 24 * 3600

/** The configurable part of the store decision. */
export interface StoreRules {
  /** Store responses that carry Set-Cookie (the cookie itself is never stored). */
  cacheSetCookie: boolean
  /**
   * RFC 9111 §4.2.2 heuristic freshness for responses without explicit freshness. Off by
   * default: caje then stores only what the origin asked it to (opt-in caching).
   */
  heuristicFreshness: boolean
}

/**
 * What a matching rule (rules file) changes in the store decision. The rule speaks for the
 * operator, who owns the origin: `force` stores for its seconds whatever the origin's
 * Cache-Control says; `default` only fills in a lifetime the origin left out (and still
 * honours no-store and private). Set-Cookie, Authorization and Vary: * keep protecting users.
 */
export interface StoreOverride {
  ttl?: { seconds: number; mode: 'force' | 'default' }
  /** RFC 5861 windows used when the origin sends none. */
  staleWhileRevalidate?: number
  staleIfError?: number
}

/**
 * Whether the origin gave the response an explicit freshness lifetime (RFC 9111 §4.2.1):
 * s-maxage or max-age in the directives caje acts on, or Expires when those come from
 * Cache-Control (RFC 9213 §2.1: a valid CDN-Cache-Control overrides Expires too). An
 * invalid max-age still counts: the origin asked for a lifetime, which is then zero.
 */
function hasExplicitFreshness(headers: FlatHeaders, cc: Directives, source: FreshnessPolicy['source']): boolean {
  if (cc.has('s-maxage') || cc.has('max-age')) return true
  return source === 'cache-control' && headers.expires !== undefined
}

/** RFC 9111 §3 + caje's own rules: may this response be stored, and for how long is it fresh? */
export function decideStore(req: StoreRequest, res: StoreResponse, opts: StoreRules, override?: StoreOverride): StoreDecision {
  if (req.method !== 'GET') return { store: false, reason: 'method' }
  if (!storableStatus(res.status)) return { store: false, reason: 'status' }
  const forced = override?.ttl?.mode === 'force' ? override.ttl.seconds : undefined
  // A rule's TTL of 0 means "do not keep this".
  if (override?.ttl?.seconds === 0 && forced !== undefined) return { store: false, reason: 'rule-ttl-0' }
  if (res.status === 206) {
    // RFC 9111 §3.3: an incomplete response may be stored, as long as it is never taken for
    // the whole. caje keeps a single range whose place in the representation is known, and
    // only when the body announced is exactly that range (a multipart/byteranges answer has no
    // top-level Content-Range, so it is passed through).
    const part = parseContentRange(res.headers['content-range'])
    const declared = res.headers['content-length']
    if (!part || declared === undefined || Number(declared) !== part.end - part.start + 1) return { store: false, reason: 'partial' }
  }
  // Most requests send no Cache-Control: nothing to parse then.
  const rc = req.headers['cache-control']
  if (rc !== undefined && parseDirectives(rc).has('no-store')) return { store: false, reason: 'request-no-store' }
  const { cc, source } = targetedDirectives(res.headers)
  // RFC 9111 §5.2.2.3: must-understand stores only where the status code is understood, and
  // there it overrides no-store (which it is sent with, for caches that do not know it).
  const mustUnderstand = cc.has('must-understand')
  if (forced === undefined) {
    if (mustUnderstand && !KNOWN_STATUSES.has(res.status)) return { store: false, reason: 'must-understand' }
    if (cc.has('no-store') && !mustUnderstand) return { store: false, reason: 'no-store' }
    // A shared cache must not store private responses (§5.2.2.7); CDN-Cache-Control cannot make them public.
    // Cache-Control parsed once: it is `cc` itself unless CDN-Cache-Control took its place.
    if ((source === 'cache-control' ? cc : parseDirectives(res.headers['cache-control'])).has('private') || cc.has('private')) return { store: false, reason: 'private' }
  }
  if (res.hasSetCookie && !opts.cacheSetCookie) return { store: false, reason: 'set-cookie' }
  const vary = res.headers.vary
  if (vary && vary.split(',').some((f) => f.trim() === '*')) return { store: false, reason: 'vary-star' }
  if (forced !== undefined || (override?.ttl && !hasExplicitFreshness(res.headers, cc, source))) {
    // §3.5 still holds: an answer to a request with Authorization is shared only when the origin says so.
    if (req.headers.authorization !== undefined && !cc.has('must-revalidate') && !cc.has('public') && !cc.has('s-maxage')) return { store: false, reason: 'authorization' }
    return ruleStore(req, res, cc, source, override!)
  }
  // Opt-in caching: without explicit freshness the origin never asked for this response to be
  // shared. Many frameworks send an ETag or Last-Modified on every page, per-user pages
  // included; storing those on a heuristic would hand one user's page to the next.
  if (!hasExplicitFreshness(res.headers, cc, source)) {
    if (!opts.heuristicFreshness) return { store: false, reason: 'no-explicit-freshness' }
    // RFC 9111 §4.2.2 lets a cache guess a lifetime; never for a request that carried
    // credentials, whose answer is likely personal even when it does not say so.
    if (req.headers.cookie !== undefined || req.headers.authorization !== undefined) return { store: false, reason: 'no-explicit-freshness' }
    // §3, §4.2.2: heuristics only for the statuses RFC 9110 §15.1 lists, or a response marked public.
    if (!HEURISTICALLY_CACHEABLE.has(res.status) && !cc.has('public')) return { store: false, reason: 'no-explicit-freshness' }
  }
  // The RFC 9111 §3 baseline by http-cache-semantics: method, no-store, private, and §3.5 (a
  // shared cache stores an answer to a request with Authorization only when the response says
  // it may be shared: must-revalidate, public or s-maxage). It knows fewer statuses than §3 lets
  // a cache store with explicit freshness (most 4xx and 5xx), so it judges the request and the
  // directives caje decides by, with a 200 standing in for the status caje has already judged.
  if (!baselineStorable(req, res, cc, source, mustUnderstand)) {
    return { store: false, reason: req.headers.authorization !== undefined ? 'authorization' : 'not-storable' }
  }

  const policy = withStaleDefaults(freshness(req, res, cc, source), cc, override)
  return keepFor(policy, res)
}

function baselineStorable(req: StoreRequest, res: StoreResponse, cc: Directives, source: FreshnessPolicy['source'], mustUnderstand: boolean): boolean {
  // Without Authorization the library has nothing left to refuse: decideStore has already
  // turned away other methods, request and response no-store and private (from caje's own
  // parse, which keeps a quoted value's commas inside it, RFC 9110 §5.6.4), and with the 200
  // standing in, the status and "cacheable by default" clauses always hold. So the policy,
  // which parses every field again, is built only where §3.5 can still say no: a request
  // with credentials (an empty field counts as none, as the library reads it).
  if (!req.headers.authorization) return true
  // The library splits Cache-Control on every comma, so a quoted value such as ext="a, public"
  // would hand it a `public` the origin never sent (RFC 9110 §5.6.4): such a value says nothing
  // the §3.5 judgement reads, so it is left out rather than re-split.
  const directives = [...cc].filter(([k, v]) => !(mustUnderstand && (k === 'no-store' || k === 'must-understand')) && (v === true || !v.includes(',')))
  const headers: Record<string, string | string[]> = { ...res.headers, 'cache-control': directives.map(([k, v]) => (v === true ? k : `${k}=${v}`)).join(', ') }
  // CDN-Cache-Control decides freshness for caje: the Expires it overrides does not count.
  if (source === 'cdn-cache-control') delete headers.expires
  return new CachePolicy({ method: req.method, url: req.url, headers: req.headers }, { status: 200, headers }, { shared: true }).storable()
}

/** The origin's stale windows, or the rule's where the origin sends none. */
function withStaleDefaults(policy: FreshnessPolicy, cc: Directives, override: StoreOverride | undefined): FreshnessPolicy {
  if (!override) return policy
  if (override.staleWhileRevalidate !== undefined && !cc.has('stale-while-revalidate')) policy.staleWhileRevalidate = override.staleWhileRevalidate
  if (override.staleIfError !== undefined && !cc.has('stale-if-error')) policy.staleIfError = override.staleIfError
  return policy
}

/** A lifetime the rule gives: the origin's own, with the rule's seconds, and none of the directives that would stop reuse when forced. */
function ruleStore(req: StoreRequest, res: StoreResponse, cc: Directives, source: FreshnessPolicy['source'], override: StoreOverride): StoreDecision {
  const base = freshness(req, res, cc, source)
  const forced = override.ttl!.mode === 'force'
  const policy: FreshnessPolicy = {
    ...base,
    lifetime: override.ttl!.seconds,
    heuristic: false,
    noCache: forced ? false : base.noCache,
    mustRevalidate: forced ? false : base.mustRevalidate,
    // The lifetime is counted from when caje received the response, not from the origin's Age.
    initialAge: forced ? 0 : base.initialAge,
  }
  return keepFor(withStaleDefaults(policy, cc, override), res)
}

function keepFor(policy: FreshnessPolicy, res: StoreResponse): StoreDecision {
  const hasValidator = res.headers.etag !== undefined || res.headers['last-modified'] !== undefined
  const staleAt = staleTime(policy)
  const windowEnd = staleAt + Math.max(policy.staleWhileRevalidate, policy.staleIfError) * 1000
  const deleteAt = Math.max(windowEnd, hasValidator ? staleAt + KEEP_FOR_REVALIDATION_MS : staleAt)
  // A response that is stale at once, with nothing to revalidate with and no stale window, is useless to keep.
  if (deleteAt <= res.responseTime) return { store: false, reason: 'no-freshness' }
  return { store: true, policy, staleAt, deleteAt }
}

/** RFC 9111 §4.2.1 freshness lifetime and §4.2.3 initial age. */
function freshness(req: StoreRequest, res: StoreResponse, cc: Directives, source: FreshnessPolicy['source']): FreshnessPolicy {
  const h = res.headers
  const date = httpDate(h['date'])
  const dateValue = date ?? res.responseTime

  let lifetime: number | undefined
  let heuristic = false
  const sMaxAge = deltaSeconds(cc.get('s-maxage'))
  const maxAge = deltaSeconds(cc.get('max-age'))
  if (sMaxAge !== undefined) lifetime = sMaxAge
  else if (maxAge !== undefined) lifetime = maxAge
  else if (cc.has('max-age') || cc.has('s-maxage')) lifetime = 0 // present but invalid: treat as stale (§4.2.1)
  else if (source === 'cache-control' && h.expires !== undefined) {
    const expires = httpDate(h['expires'])
    // §5.3: an invalid Expires (e.g. "0") means "already expired".
    lifetime = expires === undefined ? 0 : Math.max(0, Math.floor((expires - dateValue) / 1000))
  } else {
    // No lifetime from the origin: whatever caje uses is its own guess.
    heuristic = true
    if (HEURISTICALLY_CACHEABLE.has(res.status) || cc.has('public')) {
      // §4.2.2 heuristic freshness: 10% of the time since Last-Modified.
      const lastModified = httpDate(h['last-modified'])
      lifetime = lastModified !== undefined && lastModified < dateValue ? Math.min(HEURISTIC_CAP_S, Math.floor((dateValue - lastModified) / 10_000)) : 0
    } else lifetime = 0
  }

  // §4.2.3 age calculation.
  const ageValue = deltaSeconds(single(h, 'age')) ?? 0
  const apparentAge = Math.max(0, (res.responseTime - dateValue) / 1000)
  const responseDelay = Math.max(0, (res.responseTime - req.requestTime) / 1000)
  const correctedAgeValue = ageValue + responseDelay
  const initialAge = Math.max(apparentAge, correctedAgeValue)

  return {
    v: 1,
    requestTime: req.requestTime,
    responseTime: res.responseTime,
    initialAge,
    lifetime,
    heuristic,
    noCache: cc.has('no-cache') || (source === 'cache-control' && !h['cache-control'] && /no-cache/i.test(h.pragma ?? '')),
    mustRevalidate: cc.has('must-revalidate') || cc.has('proxy-revalidate') || sMaxAge !== undefined,
    staleWhileRevalidate: deltaSeconds(cc.get('stale-while-revalidate')) ?? 0,
    staleIfError: deltaSeconds(cc.get('stale-if-error')) ?? 0,
    source,
  }
}

/**
 * Whether a stored entry may be used under the current rules. One stored on a guessed lifetime
 * (heuristic freshness on, or an older caje) is as good as absent while heuristics are off.
 */
export function usableUnder(p: FreshnessPolicy, rules: StoreRules): boolean {
  return !p.heuristic || rules.heuristicFreshness
}

/** Epoch ms at which current_age reaches the freshness lifetime. */
export function staleTime(p: FreshnessPolicy): number {
  return p.responseTime + (p.lifetime - p.initialAge) * 1000
}

/** current_age in seconds (§4.2.3). */
export function currentAge(p: FreshnessPolicy, now: number): number {
  return p.initialAge + Math.max(0, now - p.responseTime) / 1000
}

/** Seconds of freshness left; negative once stale. */
export function ttl(p: FreshnessPolicy, now: number): number {
  return p.lifetime - currentAge(p, now)
}

export function isFreshnessPolicy(v: unknown): v is FreshnessPolicy {
  return !!v && typeof v === 'object' && (v as FreshnessPolicy).v === 1 && typeof (v as FreshnessPolicy).lifetime === 'number'
}

export type ReuseDecision =
  /** Serve as is. */
  | { kind: 'fresh' }
  /** Stale, within stale-while-revalidate: serve now, revalidate in the background. */
  | { kind: 'stale-while-revalidate' }
  /**
   * Must go to the origin first (conditional request); `staleIfError` says whether stale may be
   * served if that fails. `soft-purge`: an admin's soft purge marked the entry stale.
   */
  | { kind: 'revalidate'; reason: 'stale' | 'no-cache' | 'request' | 'soft-purge'; staleIfError: boolean }

/**
 * Seconds a stored response has been stale: since its lifetime ran out, or since a soft purge
 * marked it stale (`softPurgedAt`, epoch ms), whichever came first. Negative while fresh.
 */
function staleness(p: FreshnessPolicy, now: number, softPurgedAt: number | undefined): number {
  const sinceExpiry = -ttl(p, now)
  return softPurgedAt === undefined ? sinceExpiry : Math.max(sinceExpiry, Math.max(0, now - softPurgedAt) / 1000)
}

/**
 * RFC 9111 §4: may a stored response be reused for this request?
 * Request directives (§5.2.1) are honoured: no-cache, max-age, min-fresh, max-stale.
 *
 * `softPurgedAt`: an admin's soft purge marked the entry stale at that time. It is revalidated
 * before any reuse — the purge asked for the origin's current answer, so neither its remaining
 * lifetime, nor stale-while-revalidate, nor a request's max-stale serves it unchecked — but
 * stale-if-error (RFC 5861 §4) still covers an origin failure, counted from the purge.
 */
/** The decisions that carry nothing else, one object each: deciding a hit allocates nothing. */
const FRESH: ReuseDecision = Object.freeze({ kind: 'fresh' })
const STALE_WHILE_REVALIDATE: ReuseDecision = Object.freeze({ kind: 'stale-while-revalidate' })

export function decideReuse(p: FreshnessPolicy, reqHeaders: FlatHeaders, now: number, softPurgedAt?: number): ReuseDecision {
  const age = currentAge(p, now)
  const remaining = p.lifetime - age
  const fresh = remaining > 0
  const mayServeStale = mayEverServeStale(p)
  const staleIfError = mayServeStale && staleness(p, now, softPurgedAt) <= p.staleIfError

  const rc = reqHeaders['cache-control']
  const reqcc = rc ? parseDirectives(rc) : undefined
  const pragma = reqHeaders.pragma
  if (reqcc?.has('no-cache') || (!rc && pragma !== undefined && /no-cache/i.test(pragma))) {
    return { kind: 'revalidate', reason: 'request', staleIfError: false }
  }
  if (p.noCache) return { kind: 'revalidate', reason: 'no-cache', staleIfError: false }
  if (softPurgedAt !== undefined) return { kind: 'revalidate', reason: 'soft-purge', staleIfError }
  const stalenessNow = -remaining
  if (reqcc) {
    const maxAge = deltaSeconds(reqcc.get('max-age'))
    if (maxAge !== undefined && age > maxAge) return { kind: 'revalidate', reason: 'request', staleIfError }
    const minFresh = deltaSeconds(reqcc.get('min-fresh'))
    if (minFresh !== undefined && remaining < minFresh) return { kind: 'revalidate', reason: 'request', staleIfError }
    if (!fresh && mayServeStale && reqcc.has('max-stale')) {
      const maxStale = reqcc.get('max-stale')
      const limit = maxStale === true ? Infinity : deltaSeconds(maxStale)
      if (limit !== undefined && stalenessNow <= limit) return FRESH
    }
  }
  if (fresh) return FRESH
  if (mayServeStale && stalenessNow <= p.staleWhileRevalidate) return STALE_WHILE_REVALIDATE
  return { kind: 'revalidate', reason: 'stale', staleIfError }
}

/**
 * Whether a stale copy of this response may ever be served without revalidating it first.
 * RFC 9111 §4.2.4: not when a directive forbids it. And not when its lifetime was a guess
 * (§4.2.2): the origin never said it may be shared, so neither a request's max-stale nor a
 * stale window may stretch that guess.
 */
function mayEverServeStale(p: FreshnessPolicy): boolean {
  return !p.mustRevalidate && !p.noCache && !p.heuristic
}

/**
 * Whether a stale copy may answer for an origin failure right now (RFC 5861 §4, RFC 9111 §4.2.4).
 * A soft-purged copy (`softPurgedAt`) counts as stale since the purge.
 */
export function mayServeStaleOnError(p: FreshnessPolicy, now: number, softPurgedAt?: number): boolean {
  if (!mayEverServeStale(p)) return false
  return staleness(p, now, softPurgedAt) <= p.staleIfError
}

/** Request headers for revalidating a stored response (RFC 9111 §4.3.1): its validators, never the client's. */
export function validatorsFor(stored: FlatHeaders): FlatHeaders {
  const out: FlatHeaders = {}
  if (stored.etag) out['if-none-match'] = stored.etag
  if (stored['last-modified']) out['if-modified-since'] = stored['last-modified']
  return out
}

/** Fields a 304 must not overwrite in the stored response (RFC 9111 §3.2: they describe the stored body). */
const NOT_UPDATED_BY_304: ReadonlySet<string> = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'content-range', 'content-type'])

/** RFC 9111 §4.3.4: merge a 304's header fields into the stored ones. */
export function mergeNotModified(stored: FlatHeaders, notModified: FlatHeaders): FlatHeaders {
  const merged: FlatHeaders = { ...stored }
  for (const name in notModified) {
    if (NOT_UPDATED_BY_304.has(name)) continue
    merged[name] = notModified[name]!
  }
  return merged
}

/**
 * RFC 9111 §4.3.4: does a 304 select this stored response? Strong ETag must
 * match; a weak one matches weakly; else Last-Modified; else (no validators at
 * all) the single stored response is selected.
 */
export function notModifiedMatches(stored: FlatHeaders, notModified: FlatHeaders): boolean {
  const etag = notModified.etag
  if (etag) return !!stored.etag && stripWeak(stored.etag) === stripWeak(etag)
  const lm = notModified['last-modified']
  if (lm) return stored['last-modified'] === lm
  return true
}

function stripWeak(tag: string): string {
  return tag.trim().replace(/^W\//, '')
}

/** Weak comparison of entity tags (RFC 9110 §8.8.3.2), for If-None-Match against a stored 200. */
export function etagListMatches(header: string, etag: string | undefined): boolean {
  // RFC 9110 §13.1.2: "*" matches any current representation, with an entity tag or without one.
  if (header.trim() === '*') return true
  if (!etag) return false
  const target = stripWeak(etag)
  return header.split(',').some((t) => stripWeak(t) === target)
}

/**
 * RFC 9110 §13.2.2: evaluate the client's conditionals against a stored 200.
 * Returns true when the answer is 304 Not Modified.
 */
export function clientNotModified(method: string, reqHeaders: FlatHeaders, stored: FlatHeaders, receivedAt?: number): boolean {
  if (method !== 'GET' && method !== 'HEAD') return false
  const inm = reqHeaders['if-none-match']
  if (inm !== undefined) return etagListMatches(inm, stored.etag)
  // §13.1.3: an If-Modified-Since that is not one valid HTTP-date is ignored.
  const ims = httpDate(reqHeaders['if-modified-since'])
  if (ims === undefined) return false
  // RFC 9111 §4.3.2: without Last-Modified, the stored response's Date stands in for its
  // modification date, or else the time it was received. Not modified only when that is no
  // later than the client's date: a copy newer than the client's is sent in full.
  const lm = httpDate(stored['last-modified']) ?? httpDate(stored.date) ?? receivedAt
  return lm !== undefined && lm <= ims
}

/** Response fields a 304 carries (RFC 9110 §15.4.5). */
const NOT_MODIFIED_FIELDS: readonly string[] = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified']

/** `into`, with the fields a 304 carries (RFC 9110 §15.4.5) copied from the response it stands for. */
export function withNotModifiedFields<T extends Record<string, string | string[]>>(into: T, from: Readonly<Record<string, string>>): T {
  const fields = into as Record<string, string | string[]>
  for (const f of NOT_MODIFIED_FIELDS) if (from[f] !== undefined) fields[f] = from[f]
  return into
}

/** Responses to unsafe methods that invalidate stored entries (RFC 9111 §4.4): non-error status. */
export function invalidates(method: string, status: number): boolean {
  if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS' || method === 'TRACE') return false
  return status >= 200 && status < 400
}
