// What the admin app asks of the cache and the cluster. The admin never
// reaches into proxy or cache internals: the main program implements this
// interface with the real stores and the manifest and passes it in.

import type { PopulateStatus, PurgeRequest } from '../vocabulary.ts'

export interface ListQuery {
  /** Substring to match against the URL / cache key; empty matches everything. */
  filter: string
  offset: number
  limit: number
  /** Keyset paging (the manifest list): a previous page's nextCursor; offset is then ignored. */
  cursor?: string
}

export interface ListResult<T> {
  /** Number of entries matching the filter (not only this page). */
  total: number
  entries: T[]
  /** True when `total` is a lower bound (a filter matching very many entries is counted up to a cap). */
  totalIsLowerBound?: boolean
  /** The next page's cursor, when the list pages by cursor and this is not the last page. */
  nextCursor?: string
  /** The previous page's cursor, when the list pages by cursor and this is not the first page. */
  prevCursor?: string
  /** The last page's cursor, when the list pages by cursor and its end is known. */
  lastCursor?: string
  /** Entries before this page, when the list knows (a page found by cursor in the middle leaves it to the caller). */
  offset?: number
}

/** One stored response in this node's disk cache. */
export interface DiskEntry {
  key: string
  /** The Vary-selected variant, e.g. `accept-encoding=br`; empty when the URL has one variant. */
  variant: string
  url: string
  status: number
  size: number
  contentType: string | null
  /** Epoch ms. */
  storedAt: number
  /** Epoch ms after which the entry is stale. */
  staleAt: number
  /** Also held by the memory tier. */
  inMemory: boolean
  /** Its body is on disk (false: kept by the memory tier only, never offered to peers). */
  onDisk: boolean
  /** How this node got it: a client's request through it, or populate from a peer or the origin. */
  via: EntryVia
}

export type EntryVia = { kind: 'request' } | { kind: 'peer'; node: string } | { kind: 'populate' }

/** One URL in the shared manifest, with the nodes that hold a copy. */
export interface ManifestEntry {
  key: string
  url: string
  /** Number of Vary variants recorded for the URL. */
  variants: number
  status: number
  size: number
  /** Epoch ms. */
  storedAt: number
  staleAt: number
  nodes: string[]
}

export type { PopulateStatus, PurgeRequest }

export interface NodeStatus {
  nodeId: string
  region: string
  /** `direct`: no LiteFS, every node writes the shared manifest file itself (no primary). */
  role: 'primary' | 'replica' | 'direct'
  /** 0..1, or null before the first cacheable request. */
  hitRatio: number | null
  cacheBytes: number
  entries: number
  /**
   * Where this node's manifest writes go and how that is going: the database file on the
   * primary, the primary's internal URL on a replica. For signed-in admins only (never in
   * the public /_caje/health).
   */
  manifest?: { mode: 'direct' | 'remote'; target: string | undefined; queued: number; failedAttempts: number; lastError: string | undefined; lastWriteAt: number | undefined }
}

/** A node of the cluster as its heartbeats describe it. */
export interface ClusterNodeView {
  id: string
  region: string
  /** Epoch ms. */
  startedAt: number
  lastSeenAt: number
  /** False once several heartbeats were missed. */
  online: boolean
  /** This node. */
  self: boolean
  /** Manifest entries (variants) it holds. */
  holds: number
}

/** What a purge covers before it is made: manifest variants, their bytes, the nodes holding them. */
export interface PurgePreview {
  entries: number
  bytes: number
  nodes: string[]
}

/** One purge in the log, and how far the cluster got with it. */
export interface PurgeRecord {
  id: number
  request: PurgeRequest
  /** Epoch ms. */
  createdAt: number
  /** Who asked (`admin:<id>`, `token:<id>`) or the node it was asked on. */
  createdBy: string
  /** Node it was asked on. */
  nodeId: string
  /** Online nodes that have applied it, and those that have not yet. */
  appliedOn: string[]
  pendingOn: string[]
  /** When each node applied it (epoch ms), for the nodes that reported a time. */
  appliedAt: Record<string, number>
}

/** One node's traffic in one minute (epoch ms of its start). */
export interface TrafficMinute {
  nodeId: string
  minute: number
  requests: number
  hits: number
  misses: number
  bytesCache: number
  bytesOrigin: number
}

/** A path that went to the origin: how often, how many bytes, and why (Cache-Status detail, or the kind of miss). */
export interface PathMisses {
  path: string
  misses: number
  originBytes: number
  reasons: Record<string, number>
}

export type ForgetNodeResult = { forgotten: true; dropped: number } | { forgotten: false; reason: 'self' | 'online' | 'unknown' }

export interface AdminActions {
  /** Every node that has announced itself, this one first. */
  listNodes(): Promise<ClusterNodeView[]>
  /** Drop an offline node and its holdings from the manifest; never this node or one still sending heartbeats. */
  forgetNode(nodeId: string): Promise<ForgetNodeResult>
  listDisk(query: ListQuery): Promise<ListResult<DiskEntry>>
  listManifest(query: ListQuery): Promise<ListResult<ManifestEntry>>
  /** Empty this node's body cache (disk and memory). Resolves to the number of entries removed. */
  clearFs(): Promise<number>
  /** Empty the shared manifest (entries, holders). Resolves to the number of rows removed. */
  clearDb(): Promise<number>
  /** Start warming this node from the manifest (or only `key`'s URL: every key and variant of it); `started: false` when a run is already going. */
  populate(options?: { key?: string }): Promise<{ started: boolean }>
  /** The running or last finished run, undefined before the first one. */
  populateStatus(): PopulateStatus | undefined
  /** Record a purge in the manifest and apply it here; the other nodes apply it within seconds. `removed`: entries removed here, or marked stale when soft. */
  purge(request: PurgeRequest, by?: string): Promise<{ removed: number }>
  /** What a purge would cover, without making it. */
  purgePreview(request: PurgeRequest): Promise<PurgePreview>
  /** The latest purges, newest first, with the nodes that have applied each. */
  purgeHistory(limit: number): Promise<PurgeRecord[]>
  /** Every node's traffic per minute since `since` (epoch ms), this node's unrecorded minutes included. */
  traffic(since: number): Promise<TrafficMinute[]>
  /**
   * Paths that went to the origin since `since` (epoch ms) on one node or, with node null, on every node summed,
   * most misses (or origin bytes) first, with why; this node's unrecorded minutes included.
   */
  topMisses(query: { since: number; limit: number; by: 'misses' | 'bytes'; node: string | null }): Promise<PathMisses[]>
  status(): NodeStatus
}
