// Populate: warm this node with every manifest entry it lacks that is still
// fresh. Each entry comes from a peer that holds it (its internal /object
// route, authenticated with the cluster secret) and, when no peer can give
// it, from the origin with the stored Vary request headers.
//
// A peer's copy is written through this node's own store.writer(), so the
// store computes size and integrity itself; populate hashes the body as it
// arrives too and aborts the write, before it becomes visible, unless both
// match what the peer announced. A run has bounded concurrency, counts each
// entry as done, skipped or failed, and never stops for one failure; there
// is never more than one run at a time.

import { createHash } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { PopulateStatus } from '../vocabulary.ts'
import type { CacheStore, EntryMeta, NewEntry } from '../cache/types.ts'
import type { Metrics } from '../metrics.ts'
import type { Database } from './database.ts'
import { INTERNAL_BASE_PATH, META_BYTES_HEADER } from './internal-routes.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { entriesMissingOn } from './repositories.ts'
import type { Holder, MissingEntry } from './repositories.ts'

/** The peer route, under a node's internal URL. */
export const OBJECT_PATH = `${INTERNAL_BASE_PATH}/object`

/** Request headers populate must not replay to the origin: the manifest keeps only a digest of them. */
const SECRET_VARY_FIELDS = new Set(['cookie', 'authorization', 'proxy-authorization'])
/** Holders not seen for this long are not asked (machines that are gone). */
const HOLDER_MAX_SILENCE_MS = 5 * 60_000
/** At most this many holders are tried per entry before the origin. */
const MAX_HOLDERS_TRIED = 3
/** Manifest entries read per statement. */
const PAGE = 500
/** Failures logged one by one per run; the rest only in the run's summary. */
const FAILURES_LOGGED = 10

export type FillFn = (url: URL, varyHeaders: Record<string, string>, signal: AbortSignal) => Promise<{ stored: boolean; status: number; bytes: number }>

export interface PopulatorOptions {
  readDb: () => Kysely<Database>
  store: Pick<CacheStore, 'variants' | 'writer' | 'delete'>
  nodeId: string
  /** Needed to ask peers; without it every entry comes from the origin. */
  clusterSecret: string | undefined
  /** Fetch from the origin and store if allowed (Proxy#fill). */
  fill: FillFn
  /** Entries fetched in parallel. */
  concurrency: number
  log?: ManifestLog
  metrics?: Pick<Metrics, 'populate'>
  fetchImpl?: typeof fetch
  /** A purge this node knows of covers the copy (purge.ts covers()): such a copy is dropped, not kept. */
  isPurged?: (meta: EntryMeta) => boolean
  /** A peer that sends nothing for this long is given up on. Default 15 s. */
  peerIdleTimeoutMs?: number
  now?: () => number
}

export interface Populator {
  /** Start a run now; `started: false` when one is already running (or the populator is closed). */
  run(): Promise<{ started: boolean }>
  /** The running or last finished run; undefined before the first. */
  status(): PopulateStatus | undefined
  /** Run every intervalSeconds in the background (0 disables); the first run comes sooner. */
  start(intervalSeconds: number): void
  /** Resolves when no run is going. */
  idle(): Promise<void>
  /** Stop the timer, cut the current run short and wait for it to settle. */
  close(): Promise<void>
}

type Outcome = { result: 'done'; bytes: number } | { result: 'skipped'; reason: string } | { result: 'failed'; reason: string }

/** Why a peer's copy was not used; the next holder, then the origin, is tried. */
class PeerMiss extends Error {}

export function createPopulator(options: PopulatorOptions): Populator {
  const log = options.log ?? jsonLog
  const now = options.now ?? Date.now
  const fetchImpl = options.fetchImpl ?? fetch
  const concurrency = Math.max(1, Math.floor(options.concurrency))
  const idleTimeoutMs = options.peerIdleTimeoutMs ?? 15_000

  let current: PopulateStatus | undefined
  let running: Promise<void> | undefined
  let abort: AbortController | undefined
  let timer: NodeJS.Timeout | undefined
  let firstTimer: NodeJS.Timeout | undefined
  let closed = false

  async function execute(status: PopulateStatus, signal: AbortSignal): Promise<void> {
    let failuresLogged = 0
    const count = (outcome: Outcome, entry: MissingEntry) => {
      if (outcome.result === 'done') {
        status.done++
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

    let after: { key: string; variant: string } | undefined
    while (!signal.aborted) {
      const page = await entriesMissingOn(options.readDb(), options.nodeId, now(), { limit: PAGE, after })
      if (page.length === 0) break
      let next = 0
      const worker = async () => {
        while (!signal.aborted && next < page.length) {
          const entry = page[next++]!
          let outcome: Outcome
          try {
            outcome = await populateOne(entry, signal)
          } catch (err) {
            outcome = { result: 'failed', reason: describeError(err) }
          }
          count(outcome, entry)
        }
      }
      await Promise.all(Array.from({ length: Math.min(concurrency, page.length) }, worker))
      const last = page[page.length - 1]!
      after = { key: last.key, variant: last.variant }
      if (page.length < PAGE) break
    }
    if (failuresLogged > FAILURES_LOGGED) log('warn', 'populate: more failures than logged', { notLogged: failuresLogged - FAILURES_LOGGED })
  }

  async function populateOne(entry: MissingEntry, signal: AbortSignal): Promise<Outcome> {
    const t = now()
    if (entry.staleAt <= t) return { result: 'skipped', reason: 'no longer fresh' }
    const local = await options.store.variants(entry.key)
    if (local.some((m) => m.variant === entry.variant)) return { result: 'skipped', reason: 'already held' }

    const misses: string[] = []
    if (options.clusterSecret) {
      const holders = entry.holders.filter((h) => h.lastSeenAt >= t - HOLDER_MAX_SILENCE_MS).slice(0, MAX_HOLDERS_TRIED)
      for (const holder of holders) {
        if (signal.aborted) return { result: 'failed', reason: 'populate was stopped' }
        try {
          return { result: 'done', bytes: await fromPeer(holder, entry, signal) }
        } catch (err) {
          misses.push(`${holder.nodeId}: ${describeError(err)}`)
          if (!(err instanceof PeerMiss)) log('debug', 'populate: peer copy not used', { peer: holder.nodeId, url: entry.url, error: describeError(err) })
        }
      }
    }

    if (signal.aborted) return { result: 'failed', reason: 'populate was stopped' }
    // No peer could give it: the origin, as a client with the stored Vary'd headers would.
    const secret = Object.keys(entry.varyHeaders).find((name) => SECRET_VARY_FIELDS.has(name) && entry.varyHeaders[name] !== '')
    if (secret) return { result: 'skipped', reason: `the variant depends on the client's ${secret}, which is not kept; no peer could give it` }
    const filled = await options.fill(new URL(entry.url), entry.varyHeaders, signal)
    if (filled.stored) return { result: 'done', bytes: filled.bytes }
    const peers = misses.length > 0 ? `; peers: ${misses.join('; ')}` : ''
    return { result: 'failed', reason: `the origin answered ${filled.status} and the response was not stored${peers}` }
  }

  /** Copy one variant from a peer into this node's store. Resolves to the body bytes written. */
  async function fromPeer(holder: Holder, entry: MissingEntry, runSignal: AbortSignal): Promise<number> {
    const secret = options.clusterSecret as string
    const url = `${holder.internalUrl.replace(/\/+$/, '')}${OBJECT_PATH}?key=${encodeURIComponent(entry.key)}&variant=${encodeURIComponent(entry.variant)}`
    const idle = new AbortController()
    let idleTimer = setTimeout(() => idle.abort(new Error(`peer sent nothing for ${idleTimeoutMs} ms`)), idleTimeoutMs)
    const touch = () => {
      clearTimeout(idleTimer)
      idleTimer = setTimeout(() => idle.abort(new Error(`peer sent nothing for ${idleTimeoutMs} ms`)), idleTimeoutMs)
    }
    try {
      const res = await fetchImpl(url, {
        headers: { authorization: `Bearer ${secret}`, 'x-caje-node': options.nodeId },
        signal: AbortSignal.any([runSignal, idle.signal]),
        redirect: 'manual',
      })
      if (res.status === 404) {
        await res.body?.cancel()
        throw new PeerMiss('the peer no longer holds it')
      }
      const metaBytes = Number(res.headers.get(META_BYTES_HEADER))
      if (!res.ok || !res.body || !Number.isSafeInteger(metaBytes) || metaBytes <= 0 || metaBytes > 16 * 1024 * 1024) {
        await res.body?.cancel()
        throw new Error(`the peer answered ${res.status}${res.ok ? ` without a valid ${META_BYTES_HEADER}` : ''}`)
      }

      const reader = res.body.getReader()
      let writer: ReturnType<CacheStore['writer']> | undefined
      try {
        // The body opens with the EntryMeta as JSON (metaBytes long), then the stored body.
        let head = Buffer.alloc(0)
        let rest: Buffer | undefined
        while (rest === undefined) {
          const { done, value } = await reader.read()
          if (done) throw new Error('the peer closed the connection inside the metadata')
          touch()
          head = head.length === 0 ? Buffer.from(value) : Buffer.concat([head, value])
          if (head.length >= metaBytes) rest = head.subarray(metaBytes)
        }
        const meta = parseMeta(head.subarray(0, metaBytes).toString('utf8'))
        if (meta.key !== entry.key || meta.variant !== entry.variant) throw new Error('the peer sent another entry')
        if (meta.staleAt <= now()) throw new PeerMiss('the peer copy is no longer fresh')

        const { size: _size, integrity: _integrity, ...newEntry } = meta
        writer = options.store.writer(newEntry satisfies NewEntry)
        const hash = createHash('sha512')
        let bytes = 0
        const feed = (chunk: Buffer) => {
          if (chunk.length === 0) return
          bytes += chunk.length
          if (bytes > meta.size) throw new Error(`the peer sent more than the announced ${meta.size} bytes`)
          hash.update(chunk)
          if (!writer!.write(chunk)) throw new Error('this node refused to store the body (over the per-object limit, or a disk failure)')
        }
        feed(rest)
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          touch()
          feed(Buffer.from(value.buffer, value.byteOffset, value.byteLength))
        }
        const integrity = `sha512-${hash.digest('base64')}`
        if (bytes !== meta.size || integrity !== meta.integrity) {
          throw new Error(`the body does not match the peer's integrity (${bytes} of ${meta.size} bytes)`)
        }
        const committed = await writer.commit()
        writer = undefined
        if (!committed) throw new Error('this node gave up storing the body')
        if (committed.integrity !== meta.integrity) {
          await options.store.delete(committed.key, committed.variant)
          throw new Error('the stored body does not match the peer integrity')
        }
        if (options.isPurged?.(committed)) {
          // The peer had not applied a purge this node already applied: keep nothing.
          await options.store.delete(committed.key, committed.variant)
          throw new PeerMiss('a purge covers the peer copy')
        }
        return bytes
      } finally {
        writer?.abort()
        reader.releaseLock()
        // Whatever is left (an abandoned body) is not read: cancel it so the connection is freed.
        await res.body.cancel().catch(() => {})
      }
    } finally {
      clearTimeout(idleTimer)
    }
  }

  function startRun(): boolean {
    if (running || closed) return false
    const status: PopulateStatus = { running: true, done: 0, skipped: 0, failed: 0, bytes: 0, startedAt: now(), finishedAt: null }
    current = status
    const controller = new AbortController()
    abort = controller
    running = (async () => {
      try {
        await execute(status, controller.signal)
      } catch (err) {
        // The manifest could not be read (a replica before LiteFS has the file...).
        log('error', 'populate run stopped early', { error: describeError(err) })
      }
      status.running = false
      status.finishedAt = now()
      log('info', 'populate run finished', {
        done: status.done,
        skipped: status.skipped,
        failed: status.failed,
        bytes: status.bytes,
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
    async run() {
      return { started: startRun() }
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
    },
  }
}

/** The EntryMeta a peer sent, checked field by field: it is written to disk and served. */
function parseMeta(text: string): EntryMeta {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    throw new Error('the peer sent metadata that is not JSON')
  }
  const m = v as Record<string, unknown>
  const str = (k: string) => typeof m[k] === 'string'
  const num = (k: string) => typeof m[k] === 'number' && Number.isFinite(m[k])
  const strRecord = (x: unknown) => typeof x === 'object' && x !== null && !Array.isArray(x) && Object.values(x).every((s) => typeof s === 'string')
  const ok =
    typeof v === 'object' &&
    v !== null &&
    ['key', 'variant', 'url', 'host', 'integrity', 'contentType'].every(str) &&
    ['status', 'storedAt', 'staleAt', 'deleteAt', 'size'].every(num) &&
    strRecord(m.headers) &&
    strRecord(m.varyHeaders) &&
    Array.isArray(m.tags) &&
    m.tags.every((t) => typeof t === 'string') &&
    'policy' in m
  if (!ok) throw new Error('the peer sent incomplete metadata')
  return v as EntryMeta
}
