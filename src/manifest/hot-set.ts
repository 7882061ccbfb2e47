// The cluster's hot set: how often each cache key is asked for, summed over
// every node in the manifest's url_hits table, and the use made of it when a
// node starts with an empty disk (a new machine, a lost volume).
//
//  - Each node counts the requests it serves per key in memory, with the rest
//    of its traffic (src/traffic.ts, one count per request), and adds them to
//    the manifest as 'hits' ops of up to MAX_KEYS_PER_HITS_OP keys (every
//    CAJE_HIT_FLUSH_SECONDS, or sooner when MAX_PENDING_HIT_KEYS distinct keys
//    are waiting), through the manifest writer like every other write: never
//    on the request path.
//  - Applying a batch also prunes keys not asked for within HIT_RETENTION_MS,
//    and the least asked-for keys past MAX_HIT_ROWS, so the table stays bounded.
//  - Populate fetches the hottest missing entries first (hottestMissingOn),
//    and a node that started empty answers /_caje/ready with 503 until it
//    holds a share of the hot set (createWarmUp).

import { CompiledQuery, sql } from 'kysely'
import type { Kysely } from 'kysely'
import type { CacheStore } from '../cache/types.ts'
import type { CacheStatusLabel } from '../vocabulary.ts'
import type { Database } from './database.ts'
import { HITS_SQL } from './hits-sql.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { HOLDERS_JSON, missingEntryFromRow } from './repositories.ts'
import type { MissingEntry } from './repositories.ts'

type Db = Kysely<Database>

/** Most keys one 'hits' op names: a batch stays well under the internal body limit. */
export const MAX_KEYS_PER_HITS_OP = 1000
/**
 * Most distinct keys counted in memory before they are handed over (as ops of at most
 * MAX_KEYS_PER_HITS_OP keys). A key is one row written per hand-over however often it was
 * asked for: under a mix of 10,000 URLs, handing over at every 1,000 keys wrote a row for
 * about every second request (each an upsert of two indexes on the manifest's apply thread).
 */
export const MAX_PENDING_HIT_KEYS = 10 * MAX_KEYS_PER_HITS_OP

export interface HitsOp {
  type: 'hits'
  nodeId: string
  /** Epoch ms the batch was taken. */
  at: number
  counts: Array<{ key: string; hits: number }>
}

/**
 * Add one batch of counts, then prune what is old or past the bound. Runs inside the writer's
 * transaction. The writer applies a batch with the hot writes' prepared statements instead
 * (statements.ts recordHits, on the manifest's apply thread when it has one).
 */
export async function recordHits(db: Db, op: HitsOp): Promise<void> {
  for (const { key, hits } of op.counts) await db.executeQuery(CompiledQuery.raw(HITS_SQL.add, [key, hits, op.at]))
  await db.executeQuery(CompiledQuery.raw(HITS_SQL.pruneOld, [op.at]))
  await db.executeQuery(CompiledQuery.raw(HITS_SQL.pruneOver, []))
}

/** Check a 'hits' op received from a peer; a string says what is wrong. */
export function parseHitsOp(v: Record<string, unknown>): HitsOp | string {
  if (typeof v.nodeId !== 'string' || v.nodeId === '') return 'nodeId must be a string'
  if (typeof v.at !== 'number' || !Number.isSafeInteger(v.at)) return 'at must be an integer (epoch ms)'
  if (!Array.isArray(v.counts)) return 'counts must be an array'
  if (v.counts.length > MAX_KEYS_PER_HITS_OP) return `counts names more than ${MAX_KEYS_PER_HITS_OP} keys`
  const counts: HitsOp['counts'] = []
  for (const c of v.counts as unknown[]) {
    const r = c as { key?: unknown; hits?: unknown } | null
    if (typeof r !== 'object' || r === null || typeof r.key !== 'string' || r.key === '') return 'each count needs a key (string)'
    if (typeof r.hits !== 'number' || !Number.isSafeInteger(r.hits) || r.hits < 1) return 'each count needs hits (a positive integer)'
    counts.push({ key: r.key, hits: r.hits })
  }
  return { type: 'hits', nodeId: v.nodeId, at: v.at, counts }
}

/**
 * The `limit` fresh entries this node lacks whose keys are asked for most,
 * hottest first, with their holders (as entriesMissingOn).
 */
export async function hottestMissingOn(db: Db, nodeId: string, now: number, limit: number): Promise<MissingEntry[]> {
  return (await hottestMissingPage(db, nodeId, now, limit)).entries
}

/** Where a page of hottestMissingPage ended: the next page starts after it. */
export interface HotCursor {
  hits: number
  key: string
  variant: string
}

/**
 * hottestMissingOn a page at a time: the `limit` after `after`, and the cursor
 * of the last one (undefined when the page is empty). Populate reads the hot
 * set this way, a few hundred rows per query with a turn of the loop between:
 * read whole (up to CAJE_READY_HOT_SET rows, 100,000 at most), its rows and
 * their holders' JSON were decoded in one turn.
 */
export async function hottestMissingPage(db: Db, nodeId: string, now: number, limit: number, after?: HotCursor): Promise<{ entries: MissingEntry[]; next: HotCursor | undefined }> {
  let q = db
    .selectFrom('url_hits as h')
    .innerJoin('entries as e', 'e.key', 'h.key')
    .selectAll('e')
    .select((eb) =>
      eb
        .selectFrom('entry_nodes as en')
        .innerJoin('nodes as n', 'n.id', 'en.node_id')
        .select(HOLDERS_JSON.as('h'))
        .whereRef('en.entry_id', '=', 'e.id')
        .where('en.node_id', '!=', nodeId)
        .as('holders'),
    )
    .where('e.stale_at', '>', now)
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('entry_nodes as mine')
            .select(sql`1`.as('one'))
            .whereRef('mine.entry_id', '=', 'e.id')
            .where('mine.node_id', '=', nodeId),
        ),
      ),
    )
  // Hits descending, then key and variant: past the cursor is fewer hits, or as many and a later key.
  if (after) {
    q = q.where('h.hits', '<=', after.hits).where((eb) => eb.or([eb('h.hits', '<', after.hits), eb(eb.refTuple('e.key', 'e.variant'), '>', eb.tuple(after.key, after.variant))]))
  }
  const rows = await q
    .select('h.hits as hot_hits')
    .orderBy('h.hits', 'desc')
    .orderBy('e.key')
    .orderBy('e.variant')
    .limit(Math.max(1, Math.floor(limit)))
    .execute()
  const last = rows[rows.length - 1]
  return { entries: rows.map(missingEntryFromRow), next: last && { hits: Number(last.hot_hits), key: last.key, variant: last.variant } }
}

// ── what a node counts ──────────────────────────────────────────────────

/**
 * Whether an answer counts as a request for its key in the hot set: a read (GET, or HEAD,
 * answered from the GET entry) that was served from the cache or stored, or went to the
 * origin for an entry caje holds or now holds (a hit, stale, revalidated or a stored miss).
 * Pass-through, bypass and errors name nothing a warming node could fetch ahead.
 */
export function countsTowardHotSet(label: CacheStatusLabel, method: string): boolean {
  return (label === 'hit' || label === 'stale' || label === 'miss' || label === 'revalidated') && (method === 'GET' || method === 'HEAD')
}

// ── warm-up and readiness ───────────────────────────────────────────────

export type WarmUpState =
  /** The disk was not empty at start: nothing to warm. */
  | 'not-empty'
  /** Warm-up is off (CAJE_READY_WARM_SHARE=0 or CAJE_POPULATE_INTERVAL=0). */
  | 'disabled'
  /** The cluster has no hit counts for fresh entries: nothing is hot. */
  | 'no-hot-set'
  /** The manifest could not be read at start (a replica LiteFS has not synced yet). */
  | 'manifest-unreadable'
  | 'warming'
  /** The share of the hot set is held. */
  | 'warm'
  /** CAJE_READY_TIMEOUT passed first: ready anyway, cold. */
  | 'timed-out'

export interface ReadyStatus {
  ready: boolean
  state: WarmUpState
  /** Entries in the hot set (at most CAJE_READY_HOT_SET). */
  hotSet: number
  /** Hot-set entries to hold before ready. */
  target: number
  /** Hot-set entries held so far. */
  fetched: number
  /** fetched / target, 0..1. */
  progress: number
  elapsedSeconds: number
  timeoutSeconds: number
}

export interface WarmUp {
  status(): ReadyStatus
  close(): void
}

export interface WarmUpOptions {
  store: Pick<CacheStore, 'subscribe' | 'stats'>
  readDb: () => Db
  nodeId: string
  /** Share of the hot set to hold before ready, 0..1; 0 turns warm-up off. */
  share: number
  /** Entries in the hot set. */
  hotSetSize: number
  /** Ready after this long whatever was fetched. */
  timeoutMs: number
  /** False turns warm-up off (populate is off: nothing would fetch the hot set). */
  populateEnabled: boolean
  /** Start fetching (a populate run, hottest first). */
  populate: () => void
  log?: ManifestLog
  now?: () => number
}

/**
 * Decide at start whether this node must warm up, and follow it: a node whose
 * disk is empty is not ready until it holds `share` of the hot set (stores of
 * hot-set entries are counted as they happen), or until `timeoutMs` passed.
 * Readiness only ever goes from not ready to ready: a warm node that later
 * evicts is still serving, and a load balancer must not drop it for that.
 */
export async function createWarmUp(options: WarmUpOptions): Promise<WarmUp> {
  const log = options.log ?? jsonLog
  const now = options.now ?? Date.now
  const started = now()
  const timeoutSeconds = Math.round(options.timeoutMs / 1000)
  let state: WarmUpState = 'warming'
  let hotSet = 0
  let target = 0
  let fetched = 0
  const pending = new Set<string>()
  let unsubscribe = () => {}
  let timer: NodeJS.Timeout | undefined

  const status = (): ReadyStatus => ({
    ready: state !== 'warming',
    state,
    hotSet,
    target,
    fetched,
    progress: target === 0 ? 1 : Math.min(1, fetched / target),
    elapsedSeconds: Math.round((now() - started) / 1000),
    timeoutSeconds,
  })
  const finish = (next: WarmUpState) => {
    if (state !== 'warming') return
    state = next
    unsubscribe()
    if (timer) clearTimeout(timer)
    pending.clear()
  }

  if (options.store.stats().entries > 0) state = 'not-empty'
  else if (!options.populateEnabled || !(options.share > 0)) state = 'disabled'
  else {
    try {
      const hot = await hottestMissingOn(options.readDb(), options.nodeId, now(), options.hotSetSize)
      for (const e of hot) pending.add(`${e.key}\n${e.variant}`)
    } catch (err) {
      state = 'manifest-unreadable'
      log('warn', 'warm-up skipped: the manifest could not be read; this node is ready cold', { error: describeError(err) })
    }
    hotSet = pending.size
    target = Math.min(hotSet, Math.ceil(hotSet * Math.min(1, options.share)))
    if (state === 'warming' && target === 0) state = 'no-hot-set'
  }
  if (state !== 'warming') return { status, close: () => {} }

  unsubscribe = options.store.subscribe((event) => {
    if (event.type !== 'stored' || !pending.delete(`${event.meta.key}\n${event.meta.variant}`)) return
    fetched++
    if (fetched >= target) {
      finish('warm')
      log('info', 'warm-up done: this node holds its share of the hot set and is ready', { fetched, target, hotSet, ms: now() - started })
    }
  })
  timer = setTimeout(() => {
    if (state !== 'warming') return
    finish('timed-out')
    log('warn', 'warm-up gave up: the hot set could not be fetched in time (no peer holds it, or the origin is down); this node is ready cold', {
      fetched,
      target,
      hotSet,
      timeoutSeconds,
    })
  }, options.timeoutMs)
  timer.unref()
  log('info', 'warm-up started: this node started with an empty disk and fetches the hot set, hottest first, before it is ready', { hotSet, target, timeoutSeconds })
  options.populate()
  return {
    status,
    close: () => {
      unsubscribe()
      if (timer) clearTimeout(timer)
    },
  }
}
