// The admin's actions (AdminActions) implemented on this node's real parts:
// its cache store, the shared manifest, the populate job and the purge
// applier. The admin app sees only this interface.

import type { Kysely } from 'kysely'
import type { AdminActions, EntryVia, ManifestEntry, PopulateStatus, PurgeRecord, PurgeRequest } from './admin/actions.ts'
import { type CacheStore, isMemoryOnlyIntegrity } from './cache/types.ts'
import type { Config } from './config.ts'
import type { Database } from './manifest/database.ts'
import type { ClusterRole } from './manifest/primary.ts'
import { NODE_OFFLINE_AFTER_MS } from './manifest/recorder.ts'
import { countEntries, getNode, listManifest, listNodes, minutesSince, purgeApplyTimes, purgeCoverage, recentPurges, topPathsSince } from './manifest/repositories.ts'
import { MINUTE_MS, rankPaths, type TrafficRecorder } from './traffic.ts'
import type { ManifestWriter } from './manifest/writer.ts'

/** The populate job as the admin drives it (manifest/populate.ts). */
export interface PopulateJob {
  run(options?: { key?: string; url?: string }): Promise<{ started: boolean }>
  status(): PopulateStatus | undefined
}

export interface NodeActionsDeps {
  config: Pick<Config, 'nodeId' | 'region'>
  store: CacheStore
  readDb: () => Kysely<Database>
  /** For the admin list, which may read long at a million entries: a handle off the event loop (manifest/read-worker.ts). Default readDb. */
  listDb?: () => Kysely<Database>
  writer: Pick<ManifestWriter, 'submit' | 'flush'> & Partial<Pick<ManifestWriter, 'stats'>>
  role: () => ClusterRole
  /** Hits ÷ answers of cacheable requests since start (metrics.ts), for the status header. */
  hitRatio: () => number | null
  populator: PopulateJob
  /** The URL a cache key was made from (the rules' key changes undone), so populating a key warms every key of its URL. */
  keyUrl?: (key: string) => string
  /** The form of a URL the rules key on (RuleSet.purgeUrl: their query changes applied); default the URL as it is. */
  purgeUrl?: (url: string) => string
  /** Record a purge and apply it here (manifest/purge.ts); a URL comes in the form the rules key on (purgeInKeyForm). */
  purge(request: PurgeRequest, by?: string): Promise<{ removed: number }>
  now?: () => number
  log?: (o: Record<string, unknown>) => void
  /** No LiteFS: every node writes the shared file itself, none is primary. */
  direct?: boolean
  /** This node's minutes not yet in the manifest. */
  traffic?: Pick<TrafficRecorder, 'pending'>
}

/**
 * A purge by URL names what the rules made the key of: the URL with their query changes
 * (`purgeUrl`, RuleSet.purgeUrl), so purging a URL as a client sent it covers the entry its
 * request was stored under. Prefixes, tags and everything are matched as they are.
 */
export function purgeInKeyForm(request: PurgeRequest, purgeUrl: (url: string) => string): PurgeRequest {
  return request.kind === 'url' ? { ...request, value: purgeUrl(request.value) } : request
}

/** How long an admin action waits for its manifest writes before answering anyway. */
const SETTLE_TIMEOUT_MS = 5_000

export function createNodeActions(deps: NodeActionsDeps): AdminActions {
  const now = deps.now ?? Date.now
  const log = deps.log ?? (() => {})

  /**
   * Wait until this node's manifest writes so far are delivered, so the page
   * the admin lands on (or the script's next read) shows the action's result.
   * Writes are fast; when the primary cannot be reached, the action has still
   * been applied here, and the writer keeps retrying: answer anyway.
   */
  async function settled(): Promise<void> {
    try {
      await deps.writer.flush({ timeoutMs: SETTLE_TIMEOUT_MS })
    } catch (err) {
      log({ level: 'warn', event: 'admin.manifest_pending', error: (err as Error).message })
    }
  }
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
          onDisk: !isMemoryOnlyIntegrity(e.integrity),
          via: entryVia(e.via),
        })),
      }
    },

    async listManifest(query) {
      const { total, totalIsLowerBound, nextCursor, prevCursor, lastCursor, offset, entries } = await listManifest((deps.listDb ?? deps.readDb)(), query)
      const perKey = new Map<string, number>()
      for (const e of entries) perKey.set(e.key, (perKey.get(e.key) ?? 0) + 1)
      return {
        total,
        totalIsLowerBound,
        nextCursor,
        prevCursor,
        lastCursor,
        offset,
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

    async listNodes() {
      const db = deps.readDb()
      const t = now()
      const nodes = await listNodes(db)
      const views = await Promise.all(
        nodes.map(async (n) => ({
          id: n.id,
          region: n.region,
          startedAt: n.startedAt,
          lastSeenAt: n.lastSeenAt,
          online: n.id === deps.config.nodeId || t - n.lastSeenAt <= NODE_OFFLINE_AFTER_MS,
          self: n.id === deps.config.nodeId,
          holds: await countEntries(db, { nodeId: n.id }),
        })),
      )
      return views.sort((a, b) => Number(b.self) - Number(a.self) || a.id.localeCompare(b.id))
    },

    async forgetNode(nodeId) {
      if (nodeId === deps.config.nodeId) return { forgotten: false, reason: 'self' }
      const node = await getNode(deps.readDb(), nodeId)
      if (!node) return { forgotten: false, reason: 'unknown' }
      // A node still sending heartbeats holds what the manifest says; forgetting it would only
      // hide copies it goes on serving.
      if (now() - node.lastSeenAt <= NODE_OFFLINE_AFTER_MS) return { forgotten: false, reason: 'online' }
      const dropped = await countEntries(deps.readDb(), { nodeId })
      deps.writer.submit({ type: 'node-forgotten', nodeId })
      await settled()
      return { forgotten: true, dropped }
    },

    async clearFs() {
      const removed = await deps.store.clear()
      deps.writer.submit({ type: 'node-cleared', nodeId: deps.config.nodeId })
      await settled()
      return removed
    },

    async clearDb() {
      // The count is read before the clear: on a replica the clear itself is applied by the primary.
      const { total } = await listManifest(deps.readDb(), { filter: '', offset: 0, limit: 1 })
      deps.writer.submit({ type: 'clear', at: now(), by: deps.config.nodeId })
      await deps.writer.flush({ timeoutMs: 5_000 })
      return total
    },

    populate: (options) => deps.populator.run(options?.key === undefined || deps.keyUrl === undefined ? options : { key: options.key, url: deps.keyUrl(options.key) }),
    populateStatus: () => deps.populator.status(),
    async purge(request, by) {
      const result = await deps.purge(deps.purgeUrl === undefined ? request : purgeInKeyForm(request, deps.purgeUrl), by)
      await settled()
      return result
    },

    async purgePreview(request) {
      return purgeCoverage(deps.readDb(), { kind: request.kind, value: request.kind === 'all' ? '' : request.value, host: null })
    },

    async purgeHistory(limit) {
      const db = deps.readDb()
      const t = now()
      const [purges, nodes] = await Promise.all([recentPurges(db, limit), listNodes(db)])
      const times = await purgeApplyTimes(
        db,
        purges.map((p) => p.id),
      )
      // Offline nodes apply nothing until they return (and then everything in order): count the live ones.
      const live = nodes.filter((n) => n.id === deps.config.nodeId || t - n.lastSeenAt <= NODE_OFFLINE_AFTER_MS)
      return purges.map((p): PurgeRecord => ({
        id: p.id,
        request: { ...(p.kind === 'all' ? { kind: 'all' as const } : { kind: p.kind, value: p.value }), soft: p.soft === true },
        createdAt: p.createdAt,
        createdBy: p.createdBy,
        nodeId: p.nodeId,
        appliedOn: live.filter((n) => n.lastPurgeId >= p.id).map((n) => n.id),
        pendingOn: live.filter((n) => n.lastPurgeId < p.id).map((n) => n.id),
        appliedAt: Object.fromEntries(times.get(p.id) ?? []),
      }))
    },

    async topMisses({ since, limit, by, node }) {
      const self = deps.config.nodeId
      const from = Math.floor(since / MINUTE_MS) * MINUTE_MS
      const db = deps.readDb()
      // This node's minutes not in the manifest yet (the current one, a batch on its way) count from memory.
      let pending = node === null || node === self ? (deps.traffic?.pending() ?? []).filter((m) => m.minute >= from) : []
      if (pending.length > 0) {
        const recorded = await db
          .selectFrom('node_minutes')
          .select('minute')
          .where('node_id', '=', self)
          .where(
            'minute',
            'in',
            pending.map((m) => m.minute),
          )
          .execute()
        const done = new Set(recorded.map((r) => r.minute))
        pending = pending.filter((m) => !done.has(m.minute))
      }
      const lists = pending.map((m) => m.paths ?? [])
      const alsoPaths = [...new Set(lists.flatMap((l) => l.map((p) => p.path)))]
      const recorded = await topPathsSince(db, { since: from, nodeId: node, by, limit, alsoPaths })
      return rankPaths([recorded, ...lists], by, limit)
    },

    async traffic(since) {
      const recorded = await minutesSince(deps.readDb(), since)
      const mine = new Set(recorded.filter((m) => m.nodeId === deps.config.nodeId).map((m) => m.minute))
      const pending = (deps.traffic?.pending() ?? []).filter((m) => m.minute >= since && !mine.has(m.minute)).map((m) => ({ ...m, nodeId: deps.config.nodeId }))
      return [...recorded, ...pending].sort((a, b) => a.minute - b.minute || a.nodeId.localeCompare(b.nodeId))
    },

    status() {
      const stats = deps.store.stats()
      return {
        nodeId: deps.config.nodeId,
        region: deps.config.region,
        role: deps.direct ? 'direct' : deps.role().kind,
        hitRatio: deps.hitRatio(),
        cacheBytes: stats.bytes,
        entries: stats.entries,
        manifest: manifestDetails(deps.writer.stats?.()),
      }
    },
  }
}

/** How this node got an entry, from EntryMeta.via. */
export function entryVia(via: string | undefined): EntryVia {
  if (via === 'populate') return { kind: 'populate' }
  if (via?.startsWith('peer:')) return { kind: 'peer', node: via.slice('peer:'.length) }
  return { kind: 'request' }
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
