// Purges, cluster-wide. A purge is a row in the manifest's purge log; every
// node applies the log, in id order, to its own body cache and records how
// far it got (nodes.last_purge_id, via a 'purge-applied' op).
//
//  - purge(request) records a purge through the writer, ahead of the ops
//    queued there (on a replica, one round trip to the primary, not one
//    behind every op queued before it), sends it at once to every known peer
//    (POST /_caje/internal/purge-nudge with the purge in the body), and
//    applies it to this node's cache, without waiting for either: peers
//    apply it within a round trip, not once the writer's queue has drained.
//  - The applier polls the log every second and on a nudge; a purge a peer
//    sent is applied at once and skipped when it shows up in the log.
//  - covers(meta) tells populate whether a purge this node knows of already
//    covers a copy it just wrote (a peer that had not applied the purge yet
//    can hand out the old copy): populate drops such a copy.
//
// A purge removes what was stored before it: an entry whose storedAt is at or
// before the purge's createdAt. A soft purge removes nothing: it marks those
// entries stale as of its createdAt (CacheStore#markStale, kept in each
// entry's metadata on disk, so a restart does not make them fresh again), and
// the proxy revalidates them on their next use. Entries stored after it are
// fresh as usual. There is no allowance for clock skew, so
// re-applying an old purge (a node whose progress was not recorded, a node
// restarted under a new id) never deletes content fetched after it; the
// nodes' clocks are expected to agree (NTP) to well within the time between
// a store and a purge of it.

import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { PurgeRequest } from '../vocabulary.ts'
import type { CacheStore, EntryMeta } from '../cache/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Database } from './database.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { lastAppliedPurge, listNodes, matchesPurge, purgesAfter } from './repositories.ts'
import type { NewPurge, PurgeAppliedAt } from './repositories.ts'
import type { ManifestWriter } from './writer.ts'
import { INTERNAL_BASE_PATH } from './internal-routes.ts'

/** Where peers are nudged, under their internal URL. */
export const PURGE_NUDGE_PATH = `${INTERNAL_BASE_PATH}/purge-nudge`
/** Purges remembered for covers(): how long, and how many at most. */
const RECENT_PURGE_MS = 10 * 60_000
const RECENT_PURGE_LIMIT = 2000
/** Peers not seen for this long are not nudged (machines that are gone). */
const PEER_MAX_SILENCE_MS = 5 * 60_000
/** Purges read from the log per statement. */
const PAGE = 500

export type PurgeSpec = Pick<NewPurge, 'kind' | 'value' | 'host' | 'createdAt' | 'soft'>

/** Does this purge cover this stored entry (remove it, or mark it stale when soft)? Only if it matches and was stored before the purge. */
export function purgeCovers(purge: PurgeSpec, meta: Pick<EntryMeta, 'key' | 'url' | 'host' | 'tags' | 'storedAt'>): boolean {
  return meta.storedAt <= purge.createdAt && matchesPurge(purge, meta)
}

/** The time of the latest of these soft purges that covers the entry, if any (what CacheStore#markStale records). */
export function softPurgedAt(purges: readonly PurgeSpec[], meta: Pick<EntryMeta, 'key' | 'url' | 'host' | 'tags' | 'storedAt'>): number | undefined {
  let at: number | undefined
  for (const p of purges) if (p.soft && purgeCovers(p, meta) && (at === undefined || p.createdAt > at)) at = p.createdAt
  return at
}

/**
 * Apply purges to this node's store: hard ones remove what they cover (one
 * pass), soft ones mark it stale (one more pass). Resolves to the entries
 * removed or marked.
 */
async function applyToStore(store: Pick<CacheStore, 'deleteWhere' | 'markStale'>, purges: readonly PurgeSpec[]): Promise<number> {
  const hard = purges.filter((p) => !p.soft)
  const soft = purges.filter((p) => p.soft)
  let n = 0
  if (hard.length > 0) n += await store.deleteWhere((meta) => hard.some((p) => purgeCovers(p, meta)), 'purged')
  if (soft.length > 0) n += await store.markStale((meta) => softPurgedAt(soft, meta))
  return n
}

export interface PurgeApplierOptions {
  readDb: () => Kysely<Database>
  store: Pick<CacheStore, 'deleteWhere' | 'markStale'>
  writer: Pick<ManifestWriter, 'submit' | 'submitFirst'>
  nodeId: string
  /** Sent to peers' purge-nudge route; without it peers are not nudged (they still poll). */
  clusterSecret?: string
  log?: ManifestLog
  metrics?: Pick<Metrics, 'purge'>
  /** How often the purge log is read; 0 disables the poll (nudges and purge() still apply). Default 1000. */
  pollMs?: number
  /** Per-peer nudge timeout. Default 2000. */
  nudgeTimeoutMs?: number
  fetchImpl?: typeof fetch
  now?: () => number
}

export interface PurgeApplier {
  /** Record a purge for the whole cluster, apply it here now, nudge the peers. Resolves to what was removed (or, soft, marked stale) here. */
  purge(request: PurgeRequest & { host?: string | null }, by?: string): Promise<{ removed: number }>
  /** Apply every purge in the log this node has not applied yet. Concurrent calls share one pass. */
  applyPending(): Promise<void>
  /** A peer recorded a purge (sent along when known): apply it now, then whatever else is pending. Never throws. */
  nudge(purge?: NewPurge): void
  /** Whether a hard purge this node applied recently covers this entry (populate checks each copy it writes). */
  covers(meta: Pick<EntryMeta, 'key' | 'url' | 'host' | 'tags' | 'storedAt'>): boolean
  /** When a soft purge this node applied recently covers this entry, that purge's time (populate marks such a copy stale). */
  softPurgedAt(meta: Pick<EntryMeta, 'key' | 'url' | 'host' | 'tags' | 'storedAt'>): number | undefined
  /** Highest purge id applied here, undefined before the first read of the log. */
  lastApplied(): number | undefined
  /** Start polling the log (and apply what is pending now). */
  start(): void
  /** Stop polling; waits for a pass and for nudges in flight. */
  close(): Promise<void>
}

export function createPurgeApplier(options: PurgeApplierOptions): PurgeApplier {
  const log = options.log ?? jsonLog
  const now = options.now ?? Date.now
  const fetchImpl = options.fetchImpl ?? fetch
  const pollMs = options.pollMs ?? 1000
  const nudgeTimeoutMs = options.nudgeTimeoutMs ?? 2000

  let cursor: number | undefined
  let recordedAt = 0
  let pass: Promise<void> | undefined
  let again = false
  let timer: NodeJS.Timeout | undefined
  let started = false
  let closed = false
  let lastFailureLog = 0
  const background = new Set<Promise<unknown>>()
  const abort = new AbortController()
  const aborted = new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }))
  /** Purges applied here lately, for covers(). */
  let recent: { at: number; purge: PurgeSpec }[] = []
  /** Purges applied here by purge() or a nudge, not yet seen in the log: request id → when applied. */
  const appliedLocally = new Map<string, number>()

  const remember = (purge: PurgeSpec) => {
    const t = now()
    recent.push({ at: t, purge })
    if (recent.length > RECENT_PURGE_LIMIT || recent[0]!.at < t - RECENT_PURGE_MS) {
      recent = recent.filter((r) => r.at >= t - RECENT_PURGE_MS).slice(-RECENT_PURGE_LIMIT)
    }
  }

  const track = (p: Promise<unknown>) => {
    background.add(p)
    void p.finally(() => background.delete(p))
  }

  /** When this node applied each purge it has not reported yet (sent with the next 'purge-applied'). */
  const appliedTimes: PurgeAppliedAt[] = []

  async function applyOnce(): Promise<void> {
    const db = options.readDb()
    const recorded = await lastAppliedPurge(db, options.nodeId)
    if (cursor === undefined || recorded > cursor) cursor = recorded
    let advanced = false
    for (;;) {
      const batch = await purgesAfter(db, cursor, PAGE)
      if (batch.length === 0) break
      const toApply: typeof batch = []
      for (const p of batch) {
        const at = appliedLocally.get(p.requestId)
        if (at === undefined) toApply.push(p)
        else {
          appliedLocally.delete(p.requestId)
          appliedTimes.push({ id: p.id, at })
        }
      }
      // Remember first: a populate write that commits while deleteWhere runs is caught by covers().
      for (const p of toApply) remember(p)
      if (toApply.length > 0) {
        const removed = await applyToStore(options.store, toApply)
        const at = now()
        for (const p of toApply) {
          options.metrics?.purge(p.kind)
          appliedTimes.push({ id: p.id, at })
        }
        log('info', 'applied purges', { from: batch[0]!.id, to: batch[batch.length - 1]!.id, purges: toApply.length, soft: toApply.filter((p) => p.soft).length, removed })
      }
      cursor = batch[batch.length - 1]!.id
      advanced = true
      if (batch.length < PAGE) break
    }
    // Record progress after advancing, and again now and then while the
    // manifest still says less (a replica's op was lost, or the node's row did
    // not exist yet when the first one arrived).
    if (advanced || (recorded < cursor && now() - recordedAt >= 10_000)) {
      // The times go along once: the manifest keeps the first one it gets for a purge and node.
      options.writer.submit({ type: 'purge-applied', nodeId: options.nodeId, purgeId: cursor, applied: appliedTimes.splice(0) })
      recordedAt = now()
    }
  }

  function applyPending(): Promise<void> {
    if (pass) {
      again = true
      return pass
    }
    pass = (async () => {
      do {
        again = false
        try {
          await applyOnce()
        } catch (err) {
          // A replica before LiteFS has the file, a locked file: the next poll or nudge tries again.
          const t = now()
          if (t - lastFailureLog >= 30_000) {
            lastFailureLog = t
            log('warn', 'cannot read the purge log; will retry', { error: describeError(err) })
          }
          return
        }
      } while (again && !closed)
    })().finally(() => {
      pass = undefined
    })
    return pass
  }

  /** Apply one purge here (purge() and a peer's nudge): remember it for covers() first, then one pass over the index. */
  async function applyHere(purge: NewPurge): Promise<number> {
    // Bounded: a purge whose op never reached the manifest is never seen in the log.
    if (appliedLocally.size >= 10_000) appliedLocally.delete(appliedLocally.keys().next().value as string)
    appliedLocally.set(purge.requestId, now())
    // Remember first: a populate write that commits while deleteWhere runs is caught by covers().
    remember(purge)
    const removed = await applyToStore(options.store, [purge])
    // The time it took effect here: the history shows when each node applied it.
    if (appliedLocally.has(purge.requestId)) appliedLocally.set(purge.requestId, now())
    options.metrics?.purge(purge.kind)
    return removed
  }

  /**
   * Send the purge itself to every peer seen lately, at once: they apply it
   * without reading the manifest, so they do not wait for this node's writer
   * to deliver its queue (on a replica, a round trip to the primary behind
   * every op queued before the purge). A peer that misses the nudge applies
   * the purge from the log at its next poll.
   */
  async function nudgePeers(purge: NewPurge | undefined): Promise<void> {
    const secret = options.clusterSecret
    if (!secret) return
    const t = now()
    const peers = (await listNodes(options.readDb())).filter((n) => n.id !== options.nodeId && n.lastSeenAt >= t - PEER_MAX_SILENCE_MS)
    const body = purge ? JSON.stringify({ purge }) : undefined
    await Promise.all(
      peers.map(async (peer) => {
        try {
          const res = await fetchImpl(`${peer.internalUrl.replace(/\/+$/, '')}${PURGE_NUDGE_PATH}`, {
            method: 'POST',
            headers: { authorization: `Bearer ${secret}`, 'x-caje-node': options.nodeId, ...(body ? { 'content-type': 'application/json' } : {}) },
            body,
            signal: AbortSignal.any([abort.signal, AbortSignal.timeout(nudgeTimeoutMs)]),
            redirect: 'manual',
          })
          await res.body?.cancel()
          if (!res.ok) log('warn', 'a peer refused the purge nudge; it will apply the purge at its next poll', { peer: peer.id, status: res.status })
        } catch (err) {
          log('debug', 'could not nudge a peer; it will apply the purge at its next poll', { peer: peer.id, error: describeError(err) })
        }
      }),
    )
  }

  /**
   * Nudge the peers twice: at once with the purge (they apply it now), and
   * again once it is in the manifest, so they read the log and record their
   * progress without waiting for their poll. This node records its own
   * progress then too: the purge history counts it among the nodes that
   * applied the purge as soon as the purge is in the log.
   */
  async function announce(purge: NewPurge, recorded: Promise<void>): Promise<void> {
    try {
      await nudgePeers(purge)
      await Promise.race([recorded, aborted])
      if (!abort.signal.aborted) await Promise.all([applyPending(), nudgePeers(undefined)])
    } catch (err) {
      log('warn', 'nudging peers after a purge failed; they will apply it at their next poll', { error: describeError(err) })
    }
  }

  return {
    async purge(request, by) {
      const purge: NewPurge = {
        requestId: randomUUID(),
        kind: request.kind,
        value: request.kind === 'all' ? '' : request.value,
        host: request.host ?? null,
        createdAt: now(),
        createdBy: by ?? options.nodeId,
        nodeId: options.nodeId,
        soft: request.soft === true,
      }
      // Ahead of the ops queued here (a replica's backlog of 'stored' ops
      // after a fill): the purge covers only what was stored before it.
      // Recorded is what the admin waits for: the primary may remove the entries from the manifest after acknowledging it.
      const recorded = options.writer.submitFirst({ type: 'purge', purge, sweepAfterAck: true }, { timeoutMs: 30_000 })
      if (closed) recorded.catch(() => {})
      else track(announce(purge, recorded))
      const removed = await applyHere(purge)
      log('info', 'purge requested', { kind: purge.kind, value: purge.value, host: purge.host, soft: purge.soft, removed })
      return { removed }
    },

    applyPending,

    nudge(purge) {
      if (closed) return
      if (purge && !appliedLocally.has(purge.requestId)) {
        track(
          applyHere(purge).then(
            (removed) => log('info', 'applied a purge sent by a peer', { kind: purge.kind, value: purge.value, host: purge.host, soft: purge.soft, from: purge.nodeId, removed }),
            (err: unknown) => log('warn', 'applying a purge sent by a peer failed; it is applied from the log at the next poll', { error: describeError(err) }),
          ),
        )
      }
      track(applyPending())
    },

    covers(meta) {
      return recent.some((r) => !r.purge.soft && purgeCovers(r.purge, meta))
    },

    softPurgedAt(meta) {
      return softPurgedAt(
        recent.map((r) => r.purge),
        meta,
      )
    },

    lastApplied: () => cursor,

    start() {
      if (closed || started) return
      started = true
      track(applyPending())
      if (pollMs <= 0) return
      timer = setInterval(() => {
        if (!pass) track(applyPending())
      }, pollMs)
      timer.unref()
    },

    async close() {
      if (closed) return
      closed = true
      if (timer) clearInterval(timer)
      timer = undefined
      abort.abort()
      await Promise.allSettled([...background])
      await pass
    },
  }
}
