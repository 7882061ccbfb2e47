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
}

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
  role: 'primary' | 'replica'
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

export interface AdminActions {
  listDisk(query: ListQuery): Promise<ListResult<DiskEntry>>
  listManifest(query: ListQuery): Promise<ListResult<ManifestEntry>>
  /** Empty this node's body cache (disk and memory). Resolves to the number of entries removed. */
  clearFs(): Promise<number>
  /** Empty the shared manifest (entries, holders). Resolves to the number of rows removed. */
  clearDb(): Promise<number>
  /** Start warming this node from the manifest; `started: false` when a run is already going. */
  populate(): Promise<{ started: boolean }>
  /** The running or last finished run, undefined before the first one. */
  populateStatus(): PopulateStatus | undefined
  /** Record a purge in the manifest and apply it here; the other nodes apply it within seconds. */
  purge(request: PurgeRequest): Promise<{ removed: number }>
  status(): NodeStatus
}
