// Populate: warm this node with every manifest entry it lacks that is still
// fresh. Entries come from a peer that holds them, many per request (its
// internal /objects route streams them one after the other, authenticated
// with the cluster secret); what a peer cannot give is asked of the next
// holder one by one (/object) and, when no peer can give it, of the origin
// with the stored Vary request headers.
//
// A peer's copy is written through this node's own store.writer(), told the
// size and integrity the peer announced: the disk writer's thread hashes the
// body once, before writing it, and the store refuses the commit, before
// anything becomes visible or is written, unless both match. A batch reads its
// next frame while the copies before it are checked and written; it settles
// once all of them are. A run has bounded concurrency, counts each
// entry as done, skipped or failed, and never stops for one failure; there
// is never more than one run at a time.

import { setImmediate as nextTurn } from 'node:timers/promises'
import { turnBudget, type TurnBudget } from '../turn-budget.ts'
import type { Kysely } from 'kysely'
import { Agent, type Dispatcher } from '../undici-core.ts'
import type { PopulateStatus } from '../vocabulary.ts'
import type { CacheStore, EntryMeta, NewEntry } from '../cache/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, META_BYTES_HEADER, OBJECTS_CONTENT_TYPE } from './internal-routes.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { hottestMissingPage, type HotCursor } from './hot-set.ts'
import { type PeerBody, PeerStreamError, peerRequest } from './peer-request.ts'
import { entriesMissingOn } from './repositories.ts'
import type { Holder, MissingEntry } from './repositories.ts'

/** The peer route, under a node's internal URL. */
export const OBJECT_PATH = `${INTERNAL_BASE_PATH}/object`
/** The peer route for many objects in one response. */
export const OBJECTS_PATH = `${INTERNAL_BASE_PATH}/objects`

/** Request headers populate must not replay to the origin: the manifest keeps only a digest of them. */
const SECRET_VARY_FIELDS = new Set(['cookie', 'authorization', 'proxy-authorization'])
/** Holders not seen for this long are not asked (machines that are gone). */
const HOLDER_MAX_SILENCE_MS = 5 * 60_000
/** At most this many holders are tried per entry before the origin. */
const MAX_HOLDERS_TRIED = 3
/** Manifest entries read per statement (a page's requests all finish before the next page's start). */
const PAGE = 2000
/** Entries asked of one peer in one /objects request. */
export const OBJECTS_PER_REQUEST = 128
/**
 * Copies from one /objects response stored per turn of the event loop. Each costs about a
 * millisecond (hash, pack, hand to the disk writer), and with several peer requests at once a
 * turn stores this many per request: kept small so health checks and clients wait milliseconds.
 */
export const COPIES_PER_TURN = 4
/**
 * Rows read per manifest query while planning. The queries run on the read thread, but their rows
 * are decoded on the event loop: a page is read in parts with a turn of the loop between them.
 */
export const ROWS_PER_QUERY = 250

/** A part of a paged read, and the cursor the next part starts after (undefined: from the start). */
type PagedEntries<C> = { entries: MissingEntry[]; next: C | undefined }

/**
 * Up to `size` entries from `read`, starting after `after`, ROWS_PER_QUERY per query with a turn
 * of the loop between queries. A short part is the end of what `read` has.
 */
async function readInParts<C>(size: number, after: C | undefined, read: (limit: number, after: C | undefined) => Promise<PagedEntries<C>>): Promise<PagedEntries<C>> {
  const entries: MissingEntry[] = []
  let next = after
  while (entries.length < size) {
    if (entries.length > 0) await nextTurn()
    const limit = Math.min(ROWS_PER_QUERY, size - entries.length)
    const part = await read(limit, next)
    entries.push(...part.entries)
    next = part.next ?? next
    if (part.entries.length < limit) break
  }
  return { entries, next }
}
/** Failures logged one by one per run; the rest only in the run's summary. */
const FAILURES_LOGGED = 10

export type FillFn = (url: URL, varyHeaders: Record<string, string>, signal: AbortSignal) => Promise<{ stored: boolean; status: number; bytes: number }>

export interface PopulatorOptions {
  readDb: () => Kysely<Database>
  /**
   * Where a run reads what this node lacks (the hot set, then the manifest's
   * pages): the read thread (read-worker.ts), so those queries, tens of
   * milliseconds each at 10,000 entries, never run on the event loop. Default readDb.
   */
  listDb?: () => Kysely<Database>
  store: Pick<CacheStore, 'variants' | 'writer' | 'delete' | 'markStale' | 'writeRoom' | 'full'>
  nodeId: string
  /** Needed to ask peers; without it every entry comes from the origin. */
  clusterSecret: string | undefined
  /** Fetch from the origin and store if allowed (Proxy#fill). */
  fill: FillFn
  /** Entries fetched in parallel. */
  concurrency: number
  log?: ManifestLog
  metrics?: Pick<Metrics, 'populate'>
  /** How peers are reached (default: a keep-alive pool of this populator's own, closed with it). */
  dispatcher?: Dispatcher
  /** A purge this node knows of covers the copy (purge.ts covers()): such a copy is dropped, not kept. */
  isPurged?: (meta: EntryMeta) => boolean
  /** A soft purge this node knows of covers the copy (purge.ts softPurgedAt()): its time; such a copy is kept, marked stale. */
  softPurgedAt?: (meta: EntryMeta) => number | undefined
  /** Each run first fetches up to this many missing entries the cluster asks for most, hottest first (url_hits). Default 1,000; 0 keeps manifest order. */
  hotFirst?: number
  /** A peer that sends nothing for this long is given up on. Default 15 s. */
  peerIdleTimeoutMs?: number
  now?: () => number
}

export interface Populator {
  /**
   * Start a run now; `started: false` when one is already running (or the populator is closed).
   * With `key`, only that key's variants, and with `url` as well, those of every key of that URL.
   */
  run(options?: { key?: string; url?: string }): Promise<{ started: boolean }>
  /** The running or last finished run; undefined before the first. */
  status(): PopulateStatus | undefined
  /** Run every intervalSeconds in the background (0 disables); the first run comes sooner. */
  start(intervalSeconds: number): void
  /** Resolves when no run is going. */
  idle(): Promise<void>
  /** Stop the timer, cut the current run short and wait for it to settle. */
  close(): Promise<void>
}

type Outcome = { result: 'done'; bytes: number; from: 'peer' | 'origin' } | { result: 'skipped'; reason: string } | { result: 'failed'; reason: string }

/** Why a peer's copy was not used; the next holder, then the origin, is tried. */
class PeerMiss extends Error {}

export function createPopulator(options: PopulatorOptions): Populator {
  const log = options.log ?? jsonLog
  const now = options.now ?? Date.now
  const ownAgent = options.dispatcher ? undefined : new Agent({ keepAliveTimeout: 10_000 })
  const dispatcher: Dispatcher = options.dispatcher ?? ownAgent!
  const concurrency = Math.max(1, Math.floor(options.concurrency))
  const idleTimeoutMs = options.peerIdleTimeoutMs ?? 15_000
  const hotFirst = Math.max(0, Math.floor(options.hotFirst ?? 1000))
  const listDb = options.listDb ?? options.readDb

  let current: PopulateStatus | undefined
  let running: Promise<void> | undefined
  let abort: AbortController | undefined
  let timer: NodeJS.Timeout | undefined
  let firstTimer: NodeJS.Timeout | undefined
  let closed = false
  let agentClosed: Promise<void> | undefined

  async function execute(status: PopulateStatus, url: string | undefined, signal: AbortSignal): Promise<void> {
    const key = status.key ?? undefined
    let failuresLogged = 0
    const count = (outcome: Outcome, entry: MissingEntry) => {
      if (outcome.result === 'done') {
        status.done++
        if (outcome.from === 'peer') status.fromPeers++
        else status.fromOrigin++
        status.bytes += outcome.bytes
        options.metrics?.populate('done', outcome.bytes)
        return
      }
      if (outcome.result === 'skipped') status.skipped++
      else {
        status.failed++
        if (failuresLogged++ < FAILURES_LOGGED) log('warn', 'populate could not fetch an entry', { url: entry.url, variant: entry.variant, reason: outcome.reason })
      }
      options.metrics?.populate(outcome.result)
    }

    const run = async (entry: MissingEntry, skip?: string) => {
      let outcome: Outcome
      try {
        outcome = await populateOne(entry, signal, skip)
      } catch (err) {
        outcome = { result: 'failed', reason: describeError(err) }
      }
      count(outcome, entry)
    }

    type Unit = { holder: Holder | undefined; entries: MissingEntry[] }
    /** One unit of work: a batch from one peer, or entries asked for one by one. */
    const runUnit = async (unit: Unit) => {
      if (unit.holder === undefined) {
        for (const entry of unit.entries) await run(entry)
        return
      }
      let left: MissingEntry[]
      try {
        left = await fromPeerBatch(unit.holder, unit.entries, signal, count)
      } catch (err) {
        log('warn', 'populate: a batch from a peer failed; asking for each entry', { peer: unit.holder.nodeId, entries: unit.entries.length, error: describeError(err) })
        left = unit.entries
      }
      // What the batch did not bring: the next holders one by one, then the origin.
      for (const entry of left) {
        if (signal.aborted) break
        await run(entry, unit.holder.nodeId)
      }
    }

    // The entries the cluster asks for most come first: a node that starts
    // empty serves its first requests warm, and /_caje/ready (hot-set.ts)
    // waits for these. Pages go out in order, so with one worker the order is
    // exactly hottest first; with more, each page's hottest start first.
    const hotDone = new Set<string>()
    async function* pages(): AsyncGenerator<MissingEntry[]> {
      // A run for one key (the admin's "populate this URL") has nothing to order.
      if (hotFirst > 0 && key === undefined) {
        let cursor: HotCursor | undefined
        for (let read = 0; read < hotFirst && !signal.aborted; ) {
          const want = Math.min(PAGE, hotFirst - read)
          const page = await hotPage(cursor, want)
          if (page.entries.length === 0) break
          read += page.entries.length
          cursor = page.next
          for (const e of page.entries) hotDone.add(`${e.key}\n${e.variant}`)
          yield page.entries
          if (page.entries.length < want) break
        }
      }
      let after: { key: string; variant: string } | undefined
      while (!signal.aborted) {
        // A full disk takes a copy only by evicting an entry: the rest of the manifest, in its
        // order rather than by use, would push out what this node serves (and the hot set just
        // copied, least recently used of all). A run for one key is asked for by an admin.
        if (key === undefined && options.store.full()) {
          status.diskFull = true
          break
        }
        const page = await missingPage(after, key, key === undefined ? undefined : url)
        if (page.entries.length === 0) break
        // Already tried in the hot pass: counted once per run.
        yield hotDone.size === 0 ? page.entries : page.entries.filter((e) => !hotDone.has(`${e.key}\n${e.variant}`))
        after = page.next
        if (page.entries.length < PAGE) break
      }
    }

    // One queue of units for the whole run, in page order. The next page is read and planned
    // while the units before it are copied, and a worker done with its last unit of a page
    // takes the next page's first: a run that waited for every unit of a page before reading
    // the next left the disk writer idle at each page's end (about a tenth of a populate).
    const source = pages()
    const queue: Unit[] = []
    let exhausted = false
    let failure: unknown
    let refilling: Promise<void> | undefined
    const refill = (): Promise<void> =>
      (refilling ??= (async () => {
        try {
          const next = await source.next()
          if (next.done) exhausted = true
          else queue.push(...(await planUnits(next.value, count)))
        } catch (err) {
          failure ??= err
          exhausted = true
        } finally {
          refilling = undefined
        }
      })())
    const worker = async () => {
      while (!signal.aborted) {
        // Read ahead once the queue is down to a unit per worker.
        if (!exhausted && queue.length <= concurrency) void refill()
        const unit = queue.shift()
        if (unit !== undefined) await runUnit(unit)
        else if (exhausted) return
        else await refill()
      }
    }
    try {
      await Promise.all(Array.from({ length: concurrency }, worker))
    } finally {
      await refilling
      await source.return(undefined)
    }
    // The manifest could not be read: what was queued is done, and the run stops here.
    if (failure !== undefined) throw failure
    if (failuresLogged > FAILURES_LOGGED) log('warn', 'populate: more failures than logged', { notLogged: failuresLogged - FAILURES_LOGGED })
  }

  /** The next PAGE entries missing here after `after`. */
  function missingPage(after: { key: string; variant: string } | undefined, key: string | undefined, url: string | undefined): Promise<PagedEntries<{ key: string; variant: string }>> {
    return readInParts(PAGE, after, async (limit, from) => {
      const part = await entriesMissingOn(listDb(), options.nodeId, now(), { limit, after: from, key, url })
      const last = part[part.length - 1]
      return { entries: part, next: last && { key: last.key, variant: last.variant } }
    })
  }

  /** The next `size` hottest entries missing here after `after`. */
  function hotPage(after: HotCursor | undefined, size: number): Promise<PagedEntries<HotCursor>> {
    return readInParts(size, after, (limit, from) => hottestMissingPage(listDb(), options.nodeId, now(), limit, from))
  }

  /**
   * Entries grouped by the peer to ask first, OBJECTS_PER_REQUEST to a group; entries no peer
   * holds alone. An entry several peers hold goes to the one given the fewest so far, so the
   * work of reading and sending is shared among them rather than all asked of the first.
   */
  async function planUnits(page: MissingEntry[], count: (o: Outcome, e: MissingEntry) => void): Promise<Array<{ holder: Holder | undefined; entries: MissingEntry[] }>> {
    const t = now()
    const units: Array<{ holder: Holder | undefined; entries: MissingEntry[] }> = []
    const open = new Map<string, { holder: Holder; entries: MissingEntry[] }>()
    const given = new Map<string, number>()
    // A page is 2,000 entries, each looked up in the store: a few milliseconds per turn, not the page in one.
    const budget = turnBudget()
    for (const entry of page) {
      while (budget.spent()) await budget.next()
      const skip = await skipReason(entry, t)
      if (skip) {
        count({ result: 'skipped', reason: skip }, entry)
        continue
      }
      let holder: Holder | undefined
      for (const h of options.clusterSecret ? liveHolders(entry, t) : []) {
        if (holder === undefined || (given.get(h.nodeId) ?? 0) < (given.get(holder.nodeId) ?? 0)) holder = h
      }
      if (!holder) {
        units.push({ holder: undefined, entries: [entry] })
        continue
      }
      given.set(holder.nodeId, (given.get(holder.nodeId) ?? 0) + 1)
      let unit = open.get(holder.nodeId)
      if (!unit) {
        unit = { holder, entries: [] }
        open.set(holder.nodeId, unit)
        units.push(unit)
      }
      unit.entries.push(entry)
      if (unit.entries.length >= OBJECTS_PER_REQUEST) open.delete(holder.nodeId)
    }
    return units
  }

  function liveHolders(entry: MissingEntry, t: number): Holder[] {
    return entry.holders.filter((h) => h.lastSeenAt >= t - HOLDER_MAX_SILENCE_MS).slice(0, MAX_HOLDERS_TRIED)
  }

  async function skipReason(entry: MissingEntry, t: number): Promise<string | undefined> {
    if (entry.staleAt <= t) return 'no longer fresh'
    const local = await options.store.variants(entry.key)
    if (local.some((m) => m.variant === entry.variant)) return 'already held'
    return undefined
  }

  /** One entry: each live holder in turn (but `skip`, already asked), then the origin. */
  async function populateOne(entry: MissingEntry, signal: AbortSignal, skip?: string): Promise<Outcome> {
    const t = now()
    const skipped = await skipReason(entry, t)
    if (skipped) return { result: 'skipped', reason: skipped }

    const misses: string[] = []
    if (options.clusterSecret) {
      const holders = liveHolders(entry, t).filter((h) => h.nodeId !== skip)
      for (const holder of holders) {
        if (signal.aborted) return { result: 'failed', reason: 'populate was stopped' }
        try {
          return { result: 'done', bytes: await fromPeer(holder, entry, signal), from: 'peer' }
        } catch (err) {
          misses.push(`${holder.nodeId}: ${describeError(err)}`)
          if (!(err instanceof PeerMiss)) log('debug', 'populate: peer copy not used', { peer: holder.nodeId, url: entry.url, error: describeError(err) })
        }
      }
    }

    if (signal.aborted) return { result: 'failed', reason: 'populate was stopped' }
    // A stored part (206) is one range a client asked for; fetching the whole response in its
    // place would store another variant, and this one would stay missing on every run.
    if (entry.status === 206) return { result: 'skipped', reason: 'a stored part is copied from a peer or not at all; no peer could give it' }
    // No peer could give it: the origin, as a client with the stored Vary'd headers would.
    const secret = Object.keys(entry.varyHeaders).find((name) => SECRET_VARY_FIELDS.has(name) && entry.varyHeaders[name] !== '')
    if (secret) return { result: 'skipped', reason: `the variant depends on the client's ${secret}, which is not kept; no peer could give it` }
    // The key, not the URL: a rules-file key holds the query the origin is asked for and, after
    // '#', the header and cookie values that make it (fill() sends them again).
    const filled = await options.fill(new URL(entry.key), entry.varyHeaders, signal)
    if (filled.stored) return { result: 'done', bytes: filled.bytes, from: 'origin' }
    const peers = misses.length > 0 ? `; peers: ${misses.join('; ')}` : ''
    return { result: 'failed', reason: `the origin answered ${filled.status} and the response was not stored${peers}` }
  }

  /** Copy one variant from a peer into this node's store. Resolves to the body bytes written. */
  async function fromPeer(holder: Holder, entry: MissingEntry, runSignal: AbortSignal): Promise<number> {
    const secret = options.clusterSecret as string
    const res = await peerRequest(dispatcher, {
      url: `${holder.internalUrl.replace(/\/+$/, '')}${OBJECT_PATH}?key=${encodeURIComponent(entry.key)}&variant=${encodeURIComponent(entry.variant)}`,
      method: 'GET',
      headers: { authorization: `Bearer ${secret}`, 'x-caje-node': options.nodeId },
      signal: runSignal,
      idleTimeoutMs,
    })
    try {
      if (res.status === 404) throw new PeerMiss('the peer no longer holds it')
      const metaBytes = Number(res.headers[META_BYTES_HEADER])
      const ok = res.status >= 200 && res.status < 300
      if (!ok || !Number.isSafeInteger(metaBytes) || metaBytes <= 0 || metaBytes > 16 * 1024 * 1024) {
        throw new Error(`the peer answered ${res.status}${ok ? ` without a valid ${META_BYTES_HEADER}` : ''}`)
      }
      // The body opens with the EntryMeta as JSON (metaBytes long), then the stored body.
      const meta = parseMeta((await res.body.exact(metaBytes, 'inside the metadata')).toString('utf8'))
      return await (await storeCopy(holder, entry, meta, res.body, turnBudget())).settled
    } finally {
      // Whatever is left (an abandoned body) is not read: the request is ended so the connection is freed.
      res.body.cancel()
    }
  }

  /**
   * Write a peer's copy of `entry` (its meta already read, its body next in
   * `reader`) into this node's store, checked against the integrity the peer
   * announced before it becomes visible, and marked as copied from `holder`.
   * Resolves once the body is read, to `settled`: the body bytes once the
   * copy is stored (the disk writer checks and writes it meanwhile, so the
   * next frame is read without waiting for that). The store's work waits
   * for a slice of `budget` each time: a read that waited for the socket
   * resumes in the poll phase that brought the bytes, for every request of
   * the run at once, outside any slice.
   */
  async function storeCopy(holder: Holder, entry: MissingEntry, meta: EntryMeta, reader: PeerBody, budget: TurnBudget): Promise<{ settled: Promise<number> }> {
    if (meta.key !== entry.key || meta.variant !== entry.variant) throw new Error('the peer sent another entry')
    const fresh = meta.staleAt > now()
    // One copy of the parsed metadata, without the body's size and digest (the store works them out).
    const { size: _size, integrity: _integrity, ...newEntry } = meta as EntryMeta & { origin: unknown }
    if (typeof newEntry.origin !== 'string') newEntry.origin = undefined
    newEntry.via = `peer:${holder.nodeId}`
    // Copies arrive faster than a disk takes them: wait for room in the write queue (the
    // peer's stream waits meanwhile) rather than have the store skip the copy.
    if (fresh) await options.store.writeRoom(meta.size)
    let writer: ReturnType<CacheStore['writer']> | undefined = fresh ? options.store.writer(newEntry, { size: meta.size, integrity: meta.integrity }) : undefined
    try {
      let bytes = 0
      let refused = false
      // Read to the end of the body whatever happens: in a batch the next object follows it.
      while (bytes < meta.size) {
        const next = reader.upTo(meta.size - bytes, 'inside a body')
        const chunk = next instanceof Promise ? await next : next
        bytes += chunk.length
        if (writer && !refused) {
          while (budget.spent()) await budget.next()
          if (!writer.write(chunk)) refused = true
        }
      }
      if (!writer) throw new PeerMiss('the peer copy is no longer fresh')
      if (refused) throw new Error('this node refused to store the body (over the per-object limit, or a disk failure)')
      while (budget.spent()) await budget.next()
      const committing = writer.commit()
      writer = undefined
      return { settled: settleCopy(committing, bytes) }
    } finally {
      writer?.abort()
    }
  }

  /** What a commit of a peer's copy comes to: its bytes, or why it is not kept. */
  async function settleCopy(committing: Promise<EntryMeta | undefined>, bytes: number): Promise<number> {
    // The store refuses a body that is not the one the peer announced (code EINTEGRITY).
    const committed = await committing.catch((err: unknown) => {
      throw new Error(`the body does not match the peer's integrity: ${describeError(err)}`)
    })
    if (!committed) throw new Error('this node gave up storing the body')
    if (options.isPurged?.(committed)) {
      // The peer had not applied a purge this node already applied: keep nothing.
      await options.store.delete(committed.key, committed.variant)
      throw new PeerMiss('a purge covers the peer copy')
    }
    const softAt = options.softPurgedAt?.(committed)
    if (softAt !== undefined && committed.softPurgedAt === undefined) {
      // The peer had not applied a soft purge this node already applied: keep the copy, stale as here.
      await options.store.markStale((m) => (m.key === committed.key && m.variant === committed.variant ? softAt : undefined))
    }
    return bytes
  }

  /**
   * Ask one peer for many entries in one request (POST /objects): each
   * arrives as a frame (meta length, meta, body) and is checked and written
   * on its own, so one bad copy costs only itself. Resolves to the entries
   * not brought (the peer no longer holds them, or a copy failed); throws
   * when the request as a whole failed, so the caller asks for each.
   */
  async function fromPeerBatch(holder: Holder, entries: MissingEntry[], runSignal: AbortSignal, count: (o: Outcome, e: MissingEntry) => void): Promise<MissingEntry[]> {
    const secret = options.clusterSecret as string
    const left: MissingEntry[] = []
    /** Copies read and handed to the store whose commit has not settled yet. */
    const settling: Promise<void>[] = []
    let at = 0
    // Shared with every other bulk pass of this process (the other requests of this run among them).
    const budget = turnBudget()
    try {
      const res = await peerRequest(dispatcher, {
        url: `${holder.internalUrl.replace(/\/+$/, '')}${OBJECTS_PATH}`,
        method: 'POST',
        headers: { authorization: `Bearer ${secret}`, 'x-caje-node': options.nodeId, 'content-type': 'application/json' },
        body: JSON.stringify({ items: entries.map((e) => ({ key: e.key, variant: e.variant })) }),
        signal: runSignal,
        idleTimeoutMs,
      })
      const reader = res.body
      try {
        if (res.status < 200 || res.status >= 300 || res.headers['content-type'] !== OBJECTS_CONTENT_TYPE) {
          throw new Error(`the peer answered ${res.status} ${String(res.headers['content-type'] ?? '')}`.trim())
        }
        for (; at < entries.length; at++) {
          // Frames already buffered are stored without waiting for anything: let the loop turn
          // every few, or a whole response's copies are hashed and handed to the disk writer in
          // one turn while health checks and clients wait.
          if (at > 0 && at % COPIES_PER_TURN === 0) await budget.next()
          while (budget.spent()) await budget.next()
          const entry = entries[at]!
          const length = reader.exact(4, 'between objects')
          const metaBytes = (length instanceof Promise ? await length : length).readUInt32BE(0)
          if (metaBytes === 0 || metaBytes > 16 * 1024 * 1024) throw new Error(`the peer sent a frame of ${metaBytes} metadata bytes`)
          const json = reader.exact(metaBytes, 'inside the metadata')
          const head = parseFrameHead((json instanceof Promise ? await json : json).toString('utf8'))
          if (head === 'missing') {
            left.push(entry)
            continue
          }
          const notUsed = (err: unknown) => {
            if (!(err instanceof PeerMiss)) log('debug', 'populate: peer copy not used', { peer: holder.nodeId, url: entry.url, error: describeError(err) })
            left.push(entry)
          }
          try {
            const { settled } = await storeCopy(holder, entry, head, reader, budget)
            settling.push(settled.then((bytes) => count({ result: 'done', bytes, from: 'peer' }, entry), notUsed))
          } catch (err) {
            // The response broke off inside this body: nothing more will come (logged below).
            if (err instanceof PeerStreamError) throw err
            // Otherwise the body was read to its end, and the next frame follows.
            notUsed(err)
          }
        }
      } finally {
        reader.cancel()
      }
    } catch (err) {
      // Entries from `at` on were not brought; the ones before are settled.
      if (at === 0 && left.length === 0) throw err
      log('warn', 'populate: a batch from a peer broke off; asking for the rest one by one', { peer: holder.nodeId, framesRead: at, entries: entries.length, error: describeError(err) })
      left.push(...entries.slice(at))
    }
    // Every copy read is settled (stored, or left for the next holder) before the batch is.
    await Promise.all(settling)
    return left
  }

  function startRun(key?: string, url?: string): boolean {
    if (running || closed) return false
    const status: PopulateStatus = { running: true, key: key ?? null, done: 0, fromPeers: 0, fromOrigin: 0, skipped: 0, failed: 0, bytes: 0, diskFull: false, startedAt: now(), finishedAt: null }
    current = status
    const controller = new AbortController()
    abort = controller
    running = (async () => {
      try {
        await execute(status, url, controller.signal)
      } catch (err) {
        // The manifest could not be read (a replica before LiteFS has the file...).
        log('error', 'populate run stopped early', { error: describeError(err) })
      }
      status.running = false
      status.finishedAt = now()
      log('info', 'populate run finished', {
        key: status.key,
        done: status.done,
        fromPeers: status.fromPeers,
        fromOrigin: status.fromOrigin,
        skipped: status.skipped,
        failed: status.failed,
        bytes: status.bytes,
        diskFull: status.diskFull,
        ms: status.finishedAt - status.startedAt,
        stopped: controller.signal.aborted,
      })
    })().finally(() => {
      running = undefined
      abort = undefined
    })
    return true
  }

  return {
    async run(runOptions = {}) {
      return { started: startRun(runOptions.key, runOptions.url) }
    },

    status: () => (current ? { ...current } : undefined),

    start(intervalSeconds) {
      if (closed || timer || firstTimer || !(intervalSeconds > 0)) return
      const ms = intervalSeconds * 1000
      // A node that just started has the most to gain: first run soon, then on the interval.
      firstTimer = setTimeout(() => {
        firstTimer = undefined
        startRun()
        timer = setInterval(() => startRun(), ms)
        timer.unref()
      }, Math.min(ms, 10_000))
      firstTimer.unref()
    },

    async idle() {
      await running
    },

    async close() {
      closed = true
      if (firstTimer) clearTimeout(firstTimer)
      if (timer) clearInterval(timer)
      firstTimer = undefined
      timer = undefined
      abort?.abort()
      await running
      // close() may be called again: the pool is closed once.
      agentClosed ??= ownAgent?.close()
      await agentClosed
    },
  }
}

/** A frame of /objects: the entry's metadata, or `{"key", "variant", "missing": true}`. */
function parseFrameHead(text: string): EntryMeta | 'missing' {
  const v = parseJson(text)
  if (typeof v === 'object' && v !== null && (v as { missing?: unknown }).missing === true) return 'missing'
  return checkMeta(v)
}

/** The EntryMeta a peer sent, checked field by field: it is written to disk and served. */
function parseMeta(text: string): EntryMeta {
  return checkMeta(parseJson(text))
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    throw new Error('the peer sent metadata that is not JSON')
  }
}

const META_STRINGS = ['key', 'variant', 'url', 'host', 'integrity', 'contentType'] as const
const META_NUMBERS = ['status', 'storedAt', 'staleAt', 'deleteAt', 'size'] as const

/** Checked with plain loops: thousands of copies a second, and a closure per field and check was garbage for each. */
function checkMeta(v: unknown): EntryMeta {
  if (typeof v !== 'object' || v === null || !('policy' in v)) throw new Error('the peer sent incomplete metadata')
  const m = v as Record<string, unknown>
  for (const k of META_STRINGS) if (typeof m[k] !== 'string') throw new Error('the peer sent incomplete metadata')
  for (const k of META_NUMBERS) if (!Number.isFinite(m[k])) throw new Error('the peer sent incomplete metadata')
  if (!isStringRecord(m.headers) || !isStringRecord(m.varyHeaders) || !Array.isArray(m.tags)) throw new Error('the peer sent incomplete metadata')
  for (const t of m.tags as unknown[]) if (typeof t !== 'string') throw new Error('the peer sent incomplete metadata')
  return v as EntryMeta
}

function isStringRecord(x: unknown): boolean {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false
  for (const k in x) if (typeof (x as Record<string, unknown>)[k] !== 'string') return false
  return true
}
