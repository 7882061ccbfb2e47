// The rules file compiled for the request path: sites by host, and per host an
// ordered list of rules whose conditions are precompiled (prefixes, RegExps,
// status ranges). The proxy asks once per request for a RuleMatch; what needs
// the response (status, content type) is resolved by RuleMatch.response().
// Order decides: the first matching rule wins, unless it says `continue`; a
// value set by an earlier matching rule is kept, lists (drop_query, tags, key
// headers and cookies) add up.

import { primaryKey } from '../proxy/cache-key.ts'
import type { StoreOverride } from '../proxy/policy.ts'
import type { FlatHeaders } from '../proxy/headers.ts'
import { statusRange } from './load.ts'
import type { RuleSpec, RulesFile } from './types.ts'

export interface RequestFacts {
  scheme: string
  host: string
  method: string
  /** Canonical path and query. */
  path: string
  headers: FlatHeaders
}

/** What the rules say about one response, once its status and type are known. */
export interface ResponseRules {
  /** The rule that decided (named in Cache-Status). */
  rule: string | undefined
  /** Rule values the store decision takes (policy.ts). */
  store: StoreOverride | undefined
  /** Cache-Control max-age for clients, replacing the origin's. */
  browserTtl: number | undefined
  /** Purge tags derived from the path. */
  tags: readonly string[]
}

export interface RuleMatch {
  /** Names of the rules whose request conditions hold, in order. */
  readonly matched: readonly string[]
  /** The rule that decided before the response (bypass, key), if any. */
  readonly rule: string | undefined
  readonly bypass: boolean
  /** The cache key: URL with the rule's query changes, plus added header / cookie values. */
  readonly key: string
  /** The URL form of the key (what purge by URL matches). */
  readonly url: string
  /** The rules changed the key from the plain URL. */
  readonly keyChanged: boolean
  response(status: number, contentType: string | undefined): ResponseRules
}

export interface RuleSet {
  /** The origin the file's site for this host names, if any. */
  origin(host: string): URL | undefined
  /** The file's top-level origin (for hosts no site names an origin for). */
  readonly defaultOrigin: URL | undefined
  /** The file names at least one site or an origin. */
  readonly hasSites: boolean
  /** The site a host belongs to (its first host name), for explain. */
  siteName(host: string): string | undefined
  readonly ruleCount: number
  match(req: RequestFacts): RuleMatch
  /** A purge URL in the key's URL form (query changes applied; header and cookie parts cover every value). */
  purgeUrl(url: string): string
}

interface CompiledRule {
  spec: RuleSpec
  name: string
  hosts: RegExp | undefined
  prefixes: readonly string[] | undefined
  patterns: readonly RegExp[] | undefined
  methods: ReadonlySet<string> | undefined
  headers: readonly string[] | undefined
  cookies: readonly string[] | undefined
  statuses: ReadonlyArray<readonly [number, number]> | undefined
  types: readonly string[] | undefined
  onResponse: boolean
  statusTtl: ReadonlyArray<readonly [number, number, number]> | undefined
  dropQuery: RegExp | undefined
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

function hostRegExp(patterns: readonly string[]): RegExp {
  const alts = patterns.map((p) => (p === '*' ? '.*' : p.toLowerCase().split('*.').map(escapeRe).join('(?:[^.]+\\.)+')))
  return new RegExp(`^(?:${alts.join('|')})$`)
}

/** `/blog/:slug`, `/assets/**`, `/a/*.css` → an anchored RegExp with named groups. */
export function globRegExp(glob: string): RegExp {
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*'
      i++
    } else if (c === '*') re += '[^/]*'
    else if (c === ':' && /[A-Za-z_]/.test(glob[i + 1] ?? '')) {
      const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(glob.slice(i + 1))![0]
      re += `(?<${name}>[^/]+)`
      i += name.length
    } else re += escapeRe(c)
  }
  return new RegExp(`^${re}$`)
}

function wildcard(patterns: readonly string[]): RegExp {
  return new RegExp(`^(?:${patterns.map((p) => p.split('*').map(escapeRe).join('.*')).join('|')})$`)
}

function compileRule(spec: RuleSpec): CompiledRule {
  const m = spec.match ?? {}
  const patterns = [...(m.path_glob ?? []).map(globRegExp), ...(m.path_regex !== undefined ? [new RegExp(m.path_regex)] : [])]
  return {
    spec,
    name: spec.name,
    hosts: m.host ? hostRegExp(m.host) : undefined,
    prefixes: m.path,
    patterns: patterns.length ? patterns : undefined,
    methods: m.method ? new Set(m.method) : undefined,
    headers: m.header?.map((h) => h.toLowerCase()),
    cookies: m.cookie,
    statuses: m.status?.map((s) => (typeof s === 'number' ? ([s, s] as const) : statusRange(s)!)),
    types: m.content_type?.map((t) => t.toLowerCase()),
    onResponse: m.status !== undefined || m.content_type !== undefined,
    statusTtl: spec.status_ttl ? Object.entries(spec.status_ttl).map(([k, v]) => [...statusRange(k)!, v] as const) : undefined,
    dropQuery: spec.cache_key?.drop_query ? wildcard(spec.cache_key.drop_query) : undefined,
  }
}

/** Cookie names → values of a Cookie field (RFC 6265 §5.4 form: `a=1; b=2`). */
function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>()
  if (!header) return out
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    const name = part.slice(0, eq).trim()
    if (name && !out.has(name)) out.set(name, part.slice(eq + 1).trim())
  }
  return out
}

interface Hit {
  rule: CompiledRule
  captures: Record<string, string> | undefined
}

/** Do a rule's request conditions hold? Returns the path captures (or {}) when they do. */
function requestMatches(rule: CompiledRule, req: RequestFacts, pathOnly: string, cookies: () => Map<string, string>): Record<string, string> | undefined {
  if (rule.hosts && !rule.hosts.test(req.host)) return undefined
  // HEAD is answered from the GET entry, so a GET rule covers it.
  if (rule.methods && !rule.methods.has(req.method) && !(req.method === 'HEAD' && rule.methods.has('GET'))) return undefined
  if (rule.prefixes && !rule.prefixes.some((p) => pathOnly.startsWith(p))) return undefined
  if (rule.headers) for (const h of rule.headers) if (req.headers[h] === undefined) return undefined
  if (rule.cookies) {
    const jar = cookies()
    for (const c of rule.cookies) if (!jar.has(c)) return undefined
  }
  if (rule.patterns) {
    let found: RegExpExecArray | null = null
    for (const re of rule.patterns) if ((found = re.exec(pathOnly))) break
    if (!found) return undefined
    return found.groups ? { ...found.groups } : {}
  }
  return {}
}

function responseMatches(rule: CompiledRule, status: number, contentType: string | undefined): boolean {
  if (rule.statuses && !rule.statuses.some(([lo, hi]) => status >= lo && status <= hi)) return false
  if (rule.types) {
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
    if (!rule.types.some((t) => (t.endsWith('/*') ? type.startsWith(t.slice(0, -1)) : type === t))) return false
  }
  return true
}

const NO_TAGS: readonly string[] = Object.freeze([])
const NOTHING: ResponseRules = Object.freeze({ rule: undefined, store: undefined, browserTtl: undefined, tags: NO_TAGS })
/** response() of a match no rule made: one function for all of them, not one per request. */
const noResponseRules: RuleMatch['response'] = () => NOTHING

/** The path and query as the key holds it: parameters dropped, sorted or all ignored. */
function keyPath(path: string, hits: readonly Hit[]): string {
  const q = path.indexOf('?')
  if (q < 0) return path
  let ignore: boolean | undefined
  let sort: boolean | undefined
  const drops: RegExp[] = []
  for (const { rule } of hits) {
    const ck = rule.spec.cache_key
    if (!ck) continue
    ignore ??= ck.ignore_query
    sort ??= ck.sort_query
    if (rule.dropQuery) drops.push(rule.dropQuery)
  }
  if (ignore) return path.slice(0, q)
  if (!sort && drops.length === 0) return path
  let params = path.slice(q + 1).split('&')
  if (drops.length) params = params.filter((p) => !drops.some((re) => re.test(p.split('=', 1)[0]!)))
  // Sort by name only, stably: repeated names keep their order (`a=1&a=2` is not `a=2&a=1`).
  if (sort) params.sort((a, b) => {
    const na = a.split('=', 1)[0]!
    const nb = b.split('=', 1)[0]!
    return na < nb ? -1 : na > nb ? 1 : 0
  })
  const query = params.filter((p) => p !== '').join('&')
  return query ? `${path.slice(0, q)}?${query}` : path.slice(0, q)
}

/** The header and cookie values the rules add to the key, as a fragment (never part of a request URL, so never a collision). */
function keyExtras(hits: readonly Hit[], req: RequestFacts, cookies: () => Map<string, string>): string {
  const parts: string[] = []
  for (const { rule } of hits) {
    const ck = rule.spec.cache_key
    for (const h of ck?.headers ?? []) parts.push(`h:${h.toLowerCase()}=${encodeURIComponent(req.headers[h.toLowerCase()] ?? '')}`)
    for (const c of ck?.cookies ?? []) parts.push(`c:${c}=${encodeURIComponent(cookies().get(c) ?? '')}`)
  }
  return parts.length ? `#${[...new Set(parts)].join('&')}` : ''
}

/**
 * The request fields a key's '#' part stands for (see keyExtras): populate refetching an entry
 * sends them again, so the answer lands on the same key.
 */
export function fieldsFromKey(hash: string): FlatHeaders {
  const out: FlatHeaders = {}
  if (!hash.startsWith('#')) return out
  const cookies: string[] = []
  for (const part of hash.slice(1).split('&')) {
    const m = /^([hc]):([^=]+)=(.*)$/.exec(part)
    if (!m || m[3] === '') continue
    let value: string
    try {
      value = decodeURIComponent(m[3]!)
    } catch {
      continue
    }
    if (m[1] === 'h') Object.defineProperty(out, m[2]!, { value, enumerable: true, writable: true, configurable: true })
    else cookies.push(`${m[2]}=${value}`)
  }
  if (cookies.length) out.cookie = cookies.join('; ')
  return out
}

function fillTags(hits: readonly Hit[]): readonly string[] {
  const tags: string[] = []
  for (const { rule, captures } of hits) {
    for (const t of rule.spec.tags ?? []) tags.push(t.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, (_, n: string) => captures?.[n] ?? ''))
  }
  return tags.length ? [...new Set(tags)] : NO_TAGS
}

function resolveResponse(hits: readonly Hit[], status: number, contentType: string | undefined): ResponseRules {
  if (hits.length === 0) return NOTHING
  const used: Hit[] = []
  let decided: string | undefined
  let ttl: StoreOverride['ttl']
  let swr: number | undefined
  let sie: number | undefined
  let browserTtl: number | undefined
  for (const hit of hits) {
    const { rule } = hit
    if (rule.onResponse && !responseMatches(rule, status, contentType)) continue
    used.push(hit)
    const s = rule.spec
    if (ttl === undefined && rule.statusTtl) {
      const byStatus = rule.statusTtl.find(([lo, hi]) => status >= lo && status <= hi)
      if (byStatus) ttl = { seconds: byStatus[2], mode: 'force' }
    }
    if (ttl === undefined && s.edge_ttl) ttl = { seconds: s.edge_ttl.seconds, mode: s.edge_ttl.mode ?? 'default' }
    swr ??= s.stale_while_revalidate
    sie ??= s.stale_if_error
    browserTtl ??= s.browser_ttl
    if (!s.continue) {
      // A rule with `continue` adds to the decision; the rule it stops at makes it.
      decided = rule.name
      break
    }
  }
  if (used.length === 0) return NOTHING
  const store = ttl !== undefined || swr !== undefined || sie !== undefined ? { ttl, staleWhileRevalidate: swr, staleIfError: sie } : undefined
  return { rule: decided, store, browserTtl, tags: fillTags(used) }
}

/** response() for one match, remembering its last answer (a hit asks again with the same status and type). */
function lastResponse(hits: readonly Hit[]): RuleMatch['response'] {
  let lastStatus = -1
  let lastType: string | undefined
  let last: ResponseRules = NOTHING
  return (status, contentType) => {
    if (status !== lastStatus || contentType !== lastType) {
      last = resolveResponse(hits, status, contentType)
      lastStatus = status
      lastType = contentType
    }
    return last
  }
}

interface Site {
  name?: string
  origin: URL | undefined
  rules: readonly CompiledRule[]
  /** Cookies any of its rules reads (request fields: readFields): what, besides the URL and method, a match depends on. */
  cookies: readonly string[]
  /** Which of `cookies` go into a key by value (the others count by presence). */
  cookieValued: readonly boolean[]
  /** The part of extras() the request fields make (see fieldReader). */
  readFields: (headers: FlatHeaders) => string
  /** Matches already made, by path, then by everything else they depend on (see extras()). */
  memo: Map<string, MemoEntry[]>
  memoSize: number
  /** With no rules: the last request's plain match (its key is the URL alone), and what it was made of. */
  lastMatch: RuleMatch | undefined
  lastScheme: string
  lastHost: string
  lastPath: string
}

interface MemoEntry {
  method: string
  scheme: string
  host: string
  extras: string
  match: RuleMatch
}

/** Most matches remembered per site; past that the memo starts afresh (a burst of unique URLs costs one rebuild). */
const MEMO_LIMIT = 4096
/** Longer paths (with the fields they depend on) are matched afresh each time, so the memo stays small (4096 × 1 KiB at most). */
const MEMO_MAX_CHARS = 1024

function newSite(name: string | undefined, origin: URL | undefined, rules: readonly CompiledRule[]): Site {
  const fields = new Map<string, boolean>()
  const cookies = new Map<string, boolean>()
  for (const r of rules) {
    for (const h of r.headers ?? []) if (!fields.has(h)) fields.set(h, false)
    for (const h of r.spec.cache_key?.headers ?? []) fields.set(h.toLowerCase(), true)
    for (const c of r.cookies ?? []) if (!cookies.has(c)) cookies.set(c, false)
    for (const c of r.spec.cache_key?.cookies ?? []) cookies.set(c, true)
  }
  return {
    name,
    origin,
    rules,
    readFields: fieldReader([...fields.keys()], [...fields.values()]),
    cookies: [...cookies.keys()],
    cookieValued: [...cookies.values()],
    memo: new Map(),
    memoSize: 0,
    lastMatch: undefined,
    lastScheme: '',
    lastHost: '',
    lastPath: '',
  }
}

/**
 * The request fields a site's rules read, as one function that names each field in its
 * source (`h["x-preview"]`), run on every request. A read by a name fixed in the code costs V8
 * a few nanoseconds; `h[name]` with the name in a variable is a megamorphic keyed load, about
 * 70 ns for each field the request lacks, which for a file whose rules read 8 fields made a
 * 1 KiB memory hit measurably slower. Each present field adds `h<i>` (and its value when a
 * key holds it) to the string extras() returns. Names are header field tokens (schema.ts),
 * and JSON.stringify writes each as a string literal whatever it holds.
 */
function fieldReader(fields: readonly string[], valued: readonly boolean[]): (headers: FlatHeaders) => string {
  if (fields.length === 0) return () => ''
  const body = fields.map((f, i) => {
    const name = JSON.stringify(f)
    return `v = h[${name}]; if (v !== undefined) out += ${valued[i] ? `"h${i}=" + v + "\\0"` : `"h${i}\\0"`};`
  })
  return new Function('h', `let out = ""; let v; ${body.join(' ')} return out;`) as (headers: FlatHeaders) => string
}

/**
 * What a site's match depends on besides method, scheme, host and path: which of the fields
 * and cookies its rules read are present, and the values of those a key holds. '' (no string
 * built) for the common request that carries none of them.
 */
function extras(site: Site, req: RequestFacts): string {
  let out = site.readFields(req.headers)
  const cookie = req.headers.cookie
  if (site.cookies.length && cookie !== undefined && site.cookies.some((c) => cookie.includes(c))) {
    // Parsed only when one of the names occurs in the field at all (a name absent from the text is no cookie).
    const jar = parseCookies(cookie)
    for (let i = 0; i < site.cookies.length; i++) {
      const v = jar.get(site.cookies[i]!)
      if (v !== undefined) out += site.cookieValued[i] ? `c${i}=${v}\0` : `c${i}\0`
    }
  }
  return out
}

/** Compile a checked rules file (load.ts) into the form the request path uses. */
export function compileRules(file: RulesFile): RuleSet {
  const global = (file.rules ?? []).map(compileRule)
  const exact = new Map<string, Site>()
  const patterns: Array<{ re: RegExp; site: Site }> = []
  let count = global.length
  for (const s of file.sites ?? []) {
    const rules = (s.rules ?? []).map(compileRule)
    count += rules.length
    const site = newSite(s.host[0], s.origin ? new URL(s.origin) : undefined, [...rules, ...global])
    for (const h of s.host) {
      if (h.includes('*')) patterns.push({ re: hostRegExp([h]), site })
      else if (!exact.has(h.toLowerCase())) exact.set(h.toLowerCase(), site)
    }
  }
  const defaultOrigin = file.origin ? new URL(file.origin) : undefined
  const fallback = newSite(undefined, undefined, global)
  const siteFor = (host: string): Site => {
    const site = exact.get(host)
    if (site !== undefined) return site
    // A loop, not find() with a closure: this runs on every request, hits included.
    for (let i = 0; i < patterns.length; i++) if (patterns[i]!.re.test(host)) return patterns[i]!.site
    return fallback
  }

  function match(req: RequestFacts): RuleMatch {
    const site = siteFor(req.host)
    if (site.rules.length === 0) {
      // A hot URL asked for again: the same match and the same key string, already hashed by the
      // store's maps, instead of a new key to join, flatten and hash on every hit.
      if (site.lastMatch !== undefined && site.lastPath === req.path && site.lastHost === req.host && site.lastScheme === req.scheme) return site.lastMatch
      const plain = primaryKey(req.scheme, req.host, req.path)
      site.lastScheme = req.scheme
      site.lastHost = req.host
      site.lastPath = req.path
      return (site.lastMatch = { matched: NO_TAGS, rule: undefined, bypass: false, key: plain, url: plain, keyChanged: false, response: noResponseRules })
    }
    // A hit costs a lookup, not a walk over every rule: the same request gets the same match.
    const more = extras(site, req)
    if (req.path.length + more.length > MEMO_MAX_CHARS) return walk(site.rules, req)
    let entries = site.memo.get(req.path)
    if (entries) {
      for (const e of entries) if (e.method === req.method && e.host === req.host && e.scheme === req.scheme && e.extras === more) return e.match
    } else {
      if (site.memoSize >= MEMO_LIMIT) {
        site.memo.clear()
        site.memoSize = 0
      }
      site.memo.set(req.path, (entries = []))
    }
    const match = walk(site.rules, req)
    entries.push({ method: req.method, scheme: req.scheme, host: req.host, extras: more, match })
    site.memoSize++
    return match
  }

  function walk(rules: readonly CompiledRule[], req: RequestFacts): RuleMatch {
    const plain = primaryKey(req.scheme, req.host, req.path)
    const q = req.path.indexOf('?')
    const pathOnly = q < 0 ? req.path : req.path.slice(0, q)
    let jar: Map<string, string> | undefined
    const cookies = () => (jar ??= parseCookies(req.headers.cookie))
    const hits: Hit[] = []
    let rule: string | undefined
    let bypass = false
    for (const r of rules) {
      const captures = requestMatches(r, req, pathOnly, cookies)
      if (!captures) continue
      hits.push({ rule: r, captures })
      if (r.onResponse) continue
      if (r.spec.bypass) bypass = true
      if (!r.spec.continue) {
        rule = r.name
        break
      }
    }
    if (hits.length === 0) return { matched: NO_TAGS, rule: undefined, bypass: false, key: plain, url: plain, keyChanged: false, response: noResponseRules }
    const url = primaryKey(req.scheme, req.host, keyPath(req.path, hits))
    const key = url + keyExtras(hits, req, cookies)
    return {
      matched: hits.map((h) => h.rule.name),
      rule,
      bypass,
      key,
      url,
      keyChanged: key !== plain,
      response: lastResponse(hits),
    }
  }

  return {
    origin: (host) => siteFor(host).origin,
    defaultOrigin,
    siteName: (host) => siteFor(host).name,
    hasSites: (file.sites?.length ?? 0) > 0 || file.origin !== undefined,
    ruleCount: count,
    match,
    purgeUrl(raw) {
      let u: URL
      try {
        u = new URL(raw)
      } catch {
        return raw
      }
      const m = match({ scheme: u.protocol.slice(0, -1), host: u.host, method: 'GET', path: u.pathname + u.search, headers: {} })
      return m.url
    },
  }
}

/** No rules file: every key is the plain URL. */
export const NO_RULES: RuleSet = compileRules({})
