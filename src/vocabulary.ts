// Words several layers share, spelled once, below all of them (proxy, cache,
// manifest, admin, metrics): purge kinds, Cache-Status labels, origin error
// kinds, populate results, serve tiers, the logger types and describeError.
// Nothing here imports from the rest of caje.

/** How a response was handled, as counted in metrics (see proxy/cache-status.ts statusLabel). */
export const CACHE_STATUSES = ['hit', 'stale', 'miss', 'revalidated', 'bypass', 'pass', 'error'] as const
export type CacheStatusLabel = (typeof CACHE_STATUSES)[number]

/** Where the bytes of a response body came from. */
export const SERVE_TIERS = ['memory', 'disk', 'origin'] as const
export type ServeTier = (typeof SERVE_TIERS)[number]

/** Why an origin exchange failed before a usable response (proxy/origin.ts classifies). */
export const ORIGIN_ERROR_KINDS = ['connect', 'timeout', 'reset', 'protocol', 'dns', 'aborted', 'other'] as const
export type OriginErrorKind = (typeof ORIGIN_ERROR_KINDS)[number]

export const POPULATE_RESULTS = ['done', 'skipped', 'failed'] as const
export type PopulateResult = (typeof POPULATE_RESULTS)[number]

export const PURGE_KINDS = ['url', 'prefix', 'tag', 'all'] as const
export type PurgeKind = (typeof PURGE_KINDS)[number]

/**
 * What a purge asks for. `soft`: mark what it covers stale instead of removing it, so each node
 * revalidates those entries with the origin on their next use (a 304 keeps the stored body) and
 * may still serve them under stale-if-error while the origin fails. Absent or false: hard.
 */
export type PurgeRequest = (
  | { kind: 'url'; value: string }
  | { kind: 'prefix'; value: string }
  | { kind: 'tag'; value: string }
  | { kind: 'all' }
) & { soft?: boolean }

/** Cache-Status detail of an answer that went to the origin because a soft purge marked the stored entry stale. */
export const SOFT_PURGE_DETAIL = 'soft-purge'

export interface PopulateStatus {
  running: boolean
  /** The one key a run was asked for (a row's Populate button); null for a run over the whole manifest. */
  key: string | null
  done: number
  /** Of `done`: copied from a peer that held them, and fetched from the origin because no peer could give them. */
  fromPeers: number
  fromOrigin: number
  skipped: number
  failed: number
  bytes: number
  /**
   * The run stopped before the rest of the manifest because this node's disk was full: copying
   * more would only evict what it holds (what it copied first, the hottest, among it).
   */
  diskFull: boolean
  /** Epoch ms. */
  startedAt: number
  finishedAt: number | null
}

/** caje's structured log: one JSON object per call (src/log.ts writes it). */
export type Logger = (entry: Record<string, unknown>) => void

/** A safe one-line description of an error for logs (never sent to clients). */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}
