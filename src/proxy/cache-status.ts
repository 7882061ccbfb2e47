// The Cache-Status response field (RFC 9211), cache name "caje".

export type ForwardReason = 'uri-miss' | 'vary-miss' | 'stale' | 'request' | 'bypass' | 'method' | 'miss'

export interface CacheStatus {
  hit?: boolean
  fwd?: ForwardReason
  fwdStatus?: number
  stored?: boolean
  collapsed?: boolean
  /** Seconds of freshness left; negative when stale. */
  ttl?: number
  detail?: string
}

export function formatCacheStatus(s: CacheStatus): string {
  // The common case, a plain hit, without the general builder.
  if (s.hit && s.fwd === undefined && s.detail === undefined && !s.collapsed && s.ttl !== undefined && s.fwdStatus === undefined && !s.stored) {
    return `caje; hit; ttl=${Math.trunc(s.ttl)}`
  }
  let out = 'caje'
  if (s.hit) out += '; hit'
  if (s.fwd) out += `; fwd=${s.fwd}`
  if (s.fwdStatus !== undefined) out += `; fwd-status=${s.fwdStatus}`
  if (s.stored) out += '; stored'
  if (s.collapsed) out += '; collapsed'
  if (s.ttl !== undefined) out += `; ttl=${Math.trunc(s.ttl)}`
  if (s.detail) out += `; detail=${/^[A-Za-z][A-Za-z0-9_.*-]*$/.test(s.detail) ? s.detail : JSON.stringify(s.detail)}`
  return out
}

/** Coarse label for logs and metrics. */
export function statusLabel(s: CacheStatus): 'hit' | 'stale' | 'miss' | 'revalidated' | 'bypass' | 'pass' | 'error' {
  if (s.hit) return s.fwd === 'stale' || (s.ttl !== undefined && s.ttl < 0) ? 'stale' : s.fwdStatus === 304 ? 'revalidated' : 'hit'
  if (s.fwd === 'bypass' || s.fwd === 'method') return 'bypass'
  if (s.fwdStatus === undefined) return 'error'
  if (s.stored) return 'miss'
  return s.fwd === 'stale' ? 'miss' : 'pass'
}
