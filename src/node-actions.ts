// The admin's actions (AdminActions) implemented on this node's real parts:
// its cache store, the shared manifest, the populate job and the purge
// applier. The admin app sees only this interface.

import type { Kysely } from 'kysely'
import type { AdminActions, ManifestEntry, PopulateStatus, PurgeRequest } from './admin/actions.ts'
import type { CacheStore } from './cache/types.ts'
import type { Config } from './config.ts'
import type { Database } from './manifest/database.ts'
import type { ClusterRole } from './manifest/primary.ts'
import { listManifest } from './manifest/repositories.ts'
import type { ManifestWriter } from './manifest/writer.ts'

/** Hits and misses of cacheable requests since start, for the status header. */
export interface HitCounter {
  hits: number
  misses: number
}

export interface ClusterJobs {
  populate(): Promise<{ started: boolean }>
  populateStatus(): PopulateStatus | undefined
  purge(request: PurgeRequest): Promise<{ removed: number }>
}

export interface NodeActionsDeps {
  config: Pick<Config, 'nodeId' | 'region'>
  store: CacheStore
  readDb: () => Kysely<Database>
  writer: Pick<ManifestWriter, 'submit' | 'flush'> & Partial<Pick<ManifestWriter, 'stats'>>
  role: () => ClusterRole
  hits: HitCounter
  jobs: ClusterJobs
  now?: () => number
}

export function createNodeActions(deps: NodeActionsDeps): AdminActions {
  const now = deps.now ?? Date.now
  return {
    async listDisk(query) {
      const { total, entries } = await deps.store.list(query)
      return {
        total,
        entries: entries.map((e) => ({
          key: e.key,
          variant: variantLabel(e.varyHeaders),
          url: e.url,
          status: e.status,
          size: e.size,
          contentType: e.contentType || null,
          storedAt: e.storedAt,
          staleAt: e.staleAt,
          inMemory: e.inMemory,
        })),
      }
    },

    async listManifest(query) {
      const { total, totalIsLowerBound, nextCursor, entries } = await listManifest(deps.readDb(), query)
      const perKey = new Map<string, number>()
      for (const e of entries) perKey.set(e.key, (perKey.get(e.key) ?? 0) + 1)
      return {
        total,
        totalIsLowerBound,
        nextCursor,
        entries: entries.map(
          (e): ManifestEntry => ({
            key: e.key,
            url: e.url,
            variants: perKey.get(e.key) ?? 1,
            status: e.status,
            size: e.size,
            storedAt: e.storedAt,
            staleAt: e.staleAt,
            nodes: e.nodeIds,
          }),
        ),
      }
    },

    async clearFs() {
      const removed = await deps.store.clear()
      deps.writer.submit({ type: 'node-cleared', nodeId: deps.config.nodeId })
      return removed
    },

    async clearDb() {
      // The count is read before the clear: on a replica the clear itself is applied by the primary.
      const { total } = await listManifest(deps.readDb(), { filter: '', offset: 0, limit: 1 })
      deps.writer.submit({ type: 'clear', at: now(), by: deps.config.nodeId })
      await deps.writer.flush({ timeoutMs: 5_000 })
      return total
    },

    populate: () => deps.jobs.populate(),
    populateStatus: () => deps.jobs.populateStatus(),
    purge: (request) => deps.jobs.purge(request),

    status() {
      const stats = deps.store.stats()
      const { hits, misses } = deps.hits
      return {
        nodeId: deps.config.nodeId,
        region: deps.config.region,
        role: deps.role().kind,
        hitRatio: hits + misses === 0 ? null : hits / (hits + misses),
        cacheBytes: stats.bytes,
        entries: stats.entries,
        manifest: manifestDetails(deps.writer.stats?.()),
      }
    },
  }
}

/** A readable name for a Vary variant, e.g. `accept-encoding=gzip`; secrets stay digests. */
export function variantLabel(varyHeaders: Record<string, string>): string {
  return Object.keys(varyHeaders)
    .sort()
    .map((name) => {
      const value = varyHeaders[name]!
      const shown = value === '' ? '(absent)' : value.trim() === '' ? '(empty)' : value.startsWith('sha256:') ? value.slice(0, 15) + '…' : value
      return `${name}=${shown}`
    })
    .join(' ')
}

/** Where this node's manifest writes go, for the signed-in status (never for the public health). */
function manifestDetails(w: ReturnType<ManifestWriter['stats']> | undefined): ReturnType<AdminActions['status']>['manifest'] {
  if (!w) return undefined
  return { mode: w.mode, target: w.target, queued: w.queued, failedAttempts: w.failedAttempts, lastError: w.lastError, lastWriteAt: w.lastWriteAt }
}
