// The Cache-Status response field (RFC 9211), cache name "caje".

import type { CacheStatusLabel } from '../vocabulary.ts'

/** RFC 9211 §2.2; `partial`: a stored part was there, and the rest of it was asked for. */
export type ForwardReason = 'uri-miss' | 'vary-miss' | 'stale' | 'request' | 'bypass' | 'method' | 'miss' | 'partial'

export interface CacheStatus {
  hit?: boolean
  fwd?: ForwardReason
  fwdStatus?: number
  stored?: boolean
  collapsed?: boolean
  /** Seconds of freshness left; negative when stale. */
  ttl?: number
  detail?: string
  /** The rules-file rule that decided (reported as `detail=rule:<name>`). */
  rule?: string
  /** The cache key, when a rule made it differ from the URL (RFC 9211 §2.7). */
  key?: string
}

const NO_CHANGE: CacheStatus = Object.freeze({})

/**
 * A status with every field present, in one order. Every status caje sends is built here, so
 * V8 gives them all one hidden class: statuses of a dozen shapes (object spreads of differently
 * shaped bases) made each read of them in formatting, labelling and logging a megamorphic lookup
 * and each spread a runtime call, near a tenth of a memory hit's CPU. Fields of `change` that are
 * set replace those of `base`.
 */
export function makeStatus(base: CacheStatus, change: CacheStatus = NO_CHANGE): CacheStatus {
  return {
    hit: change.hit ?? base.hit,
    fwd: change.fwd ?? base.fwd,
    fwdStatus: change.fwdStatus ?? base.fwdStatus,
    stored: change.stored ?? base.stored,
    collapsed: change.collapsed ?? base.collapsed,
    ttl: change.ttl ?? base.ttl,
    detail: change.detail ?? base.detail,
    rule: change.rule ?? base.rule,
    key: change.key ?? base.key,
  }
}

export function formatCacheStatus(s: CacheStatus): string {
  // The common case, a plain hit (named by a rule or not), without the general builder: the
  // access log formats every answer's status, a hit's too.
  if (s.hit && s.fwd === undefined && s.detail === undefined && s.key === undefined && !s.collapsed && s.ttl !== undefined && s.fwdStatus === undefined && !s.stored) {
    return s.rule === undefined ? `caje; hit; ttl=${Math.trunc(s.ttl)}` : `caje; hit; ttl=${Math.trunc(s.ttl)}${ruleDetail(s.rule)}`
  }
  if (s.ttl !== undefined || s.key !== undefined) return buildCacheStatus(s)
  return untimedText(s)
}

/** Slots of plainHitStatus (a power of two): whole seconds of ttl that plain hits share a status for at once. */
const PLAIN_HIT_SLOTS = 256
const HIT: CacheStatus = makeStatus({ hit: true })
const plainHits: Array<{ ttl: number; status: CacheStatus; text: string } | undefined> = new Array(PLAIN_HIT_SLOTS).fill(undefined)

/**
 * A plain hit's status (no rule, no key) and its text for whole seconds of ttl, shared by every
 * entry with that ttl: each entry's own would be rebuilt once a second, and in a mix of
 * thousands of entries live long enough to reach the old generation. Slots by ttl modulo their
 * number; one holds the ttl it was built for.
 */
export function plainHitStatus(ttl: number): { ttl: number; status: CacheStatus; text: string } {
  const slot = ttl & (PLAIN_HIT_SLOTS - 1)
  let shared = plainHits[slot]
  if (shared === undefined || shared.ttl !== ttl) {
    const status = makeStatus(HIT, { ttl })
    plainHits[slot] = shared = { ttl, status, text: formatCacheStatus(status) }
  }
  return shared
}

/**
 * The texts of statuses without a ttl or key (every miss, pass and error), one per combination:
 * a miss's text went on living with its request's other objects, past the young generation, in
 * the explain page's last status per key (traffic.ts) and in writes not yet flushed. A few
 * dozen combinations come up, so the same few strings are handed out again.
 */
const untimedTexts = new Map<string, string>()
function untimedText(s: CacheStatus): string {
  // NUL cannot be in a rule name or a header value, so no two statuses share an id.
  const id = `${s.hit ? 1 : 0}${s.stored ? 1 : 0}${s.collapsed ? 1 : 0}${s.fwd ?? ''}\u0000${s.fwdStatus ?? ''}\u0000${s.rule ?? '\u0001'}\u0000${s.detail ?? '\u0001'}`
  let text = untimedTexts.get(id)
  if (text === undefined) {
    text = buildCacheStatus(s)
    // Origin statuses, reasons and rule names are few; a bound keeps an odd origin from growing the map.
    if (untimedTexts.size >= 1000) untimedTexts.clear()
    untimedTexts.set(id, text)
  }
  return text
}

function buildCacheStatus(s: CacheStatus): string {
  let out = 'caje'
  if (s.hit) out += '; hit'
  if (s.fwd) out += `; fwd=${s.fwd}`
  if (s.fwdStatus !== undefined) out += `; fwd-status=${s.fwdStatus}`
  if (s.stored) out += '; stored'
  if (s.collapsed) out += '; collapsed'
  if (s.ttl !== undefined) out += `; ttl=${Math.trunc(s.ttl)}`
  if (s.rule !== undefined && !s.detail) out += ruleDetail(s.rule)
  else {
    const detail = s.rule !== undefined ? `rule:${s.rule} ${s.detail}` : s.detail
    if (detail) out += detailParam(detail)
  }
  if (s.key !== undefined) out += `; key=${JSON.stringify(s.key)}`
  return out
}

/** `; detail=…`: an sf-token when it is one (RFC 8941 §3.3.4), else an sf-string. */
function detailParam(detail: string): string {
  return `; detail=${/^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/.test(detail) ? detail : JSON.stringify(detail)}`
}

/** `; detail=rule:<name>` per rule name, worked out once: a rules file has few names and every answer it decides repeats one. */
const ruleDetails = new Map<string, string>()
function ruleDetail(rule: string): string {
  let text = ruleDetails.get(rule)
  if (text === undefined) {
    text = detailParam(`rule:${rule}`)
    // Reloads can bring new names; a bound keeps a long-running node's map small.
    if (ruleDetails.size >= 1000) ruleDetails.clear()
    ruleDetails.set(rule, text)
  }
  return text
}

/** Coarse label for logs and metrics. */
export function statusLabel(s: CacheStatus): CacheStatusLabel {
  if (s.hit) return s.fwd === 'stale' || (s.ttl !== undefined && s.ttl < 0) ? 'stale' : s.fwdStatus === 304 ? 'revalidated' : 'hit'
  if (s.fwd === 'bypass' || s.fwd === 'method') return 'bypass'
  if (s.fwdStatus === undefined) return 'error'
  if (s.stored) return 'miss'
  return s.fwd === 'stale' ? 'miss' : 'pass'
}
