// The disk tier: bodies and metadata in a cacache directory, served through
// an in-memory index so a hit costs one open/fstat/read/close and no cacache
// call. cacache stays the on-disk format (index buckets with our EntryMeta as
// `metadata`, content-addressed body files), so the directory survives
// restarts and can be inspected with cacache's own tools.
//
// Invariants:
// - The in-memory index is the truth while running; disk follows it through
//   the disk writer (disk-writer.ts), whose jobs run in the order they were
//   queued: the last commit() called wins on disk as in memory, and a removal
//   never deletes a file a later write put in place.
// - A small body is served from memory from its commit until the writer has
//   put it on disk (write-behind); a large one becomes visible once on disk.
//   A small body is hashed by the writer's thread: until it reports the
//   digest, the entry's integrity is a placeholder of its own (types.ts
//   pendingIntegrity), with a content record nothing else shares.
// - A content file is shared by every entry with the same digest and removed
//   when the last one goes (reference count in ContentRecord.refs).

import { type TurnBudget, turnBudget } from '../turn-budget.ts'
import { plainCopy } from '../plain-copy.ts'
import { mkdir, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import cacache from 'cacache'
import { CONTENT_ALGORITHMS, type ContentAlgorithm, type ContentRead, algorithmOf, SMALL_BODY_BYTES, algorithmRoot, contentPath, integrityOfBytes, integrityOfPath, isMissing, readContent, readTrustedNow } from './content-file.ts'
import { BodyReader, type BodyFile } from './body-reader.ts'
import { DiskWriter, type DiskJob, type DiskWriterStats, type JobResult } from './disk-writer.ts'
import { ContentPaths, type ContentRecord, EntryIndex, type Handle, type RemovedEntry, StoredContent, entryId, freezeMeta } from './entry-index.ts'
import { type BufferedBody, type FinishedBody, PendingBody } from './pending-body.ts'
import { OpenFiles } from './open-files.ts'
import { RecentKeys } from './recent-keys.ts'
import type { SlabMaker } from './slab-arena.ts'
import { isMemoryOnlyIntegrity, isPendingIntegrity, memoryOnlyIntegrity, pendingIntegrity } from './types.ts'
import type {
  BodyLookup,
  ByteRange,
  CacheStore,
  EntryMeta,
  EntryWriter,
  ListOptions,
  ExpectedBody,
  ListedEntry,
  NewEntry,
  StoreEvent,
  StoreStats,
  StoredBody,
  PurgeFields,
  StoreAdmission,
} from './types.ts'

export { SMALL_BODY_BYTES, entryId }

export type LogFn = (obj: Record<string, unknown>) => void

export interface DiskStoreOptions {
  /** The cacache directory; created when missing. One process per directory. */
  dir: string
  /** Budget for body bytes on disk; least recently read entries are evicted beyond it. */
  maxBytes: number
  /**
   * Most entries on disk (default: no limit); least recently read entries are evicted beyond it.
   * Every entry costs the in-memory index memory whatever its body's size, so a cache of many
   * small bodies reaches this before maxBytes.
   */
  maxEntries?: number
  /** Bodies larger than this are not stored. */
  maxObjectBytes: number
  /** Most body bytes waiting for the disk writer; a body that does not fit is served but not stored (default 64 MiB). */
  writeQueueBytes?: number
  /** Most jobs waiting for the disk writer before a new body is served but not stored (default disk-writer.ts DEFAULT_MAX_QUEUE_JOBS). */
  writeQueueJobs?: number
  /** Most variants kept under one key; the least recently used goes first (default 32). */
  maxVariants?: number
  /**
   * Memory for a body buffered while it is written, which the disk writer's thread reads
   * without a copy: a view of a SharedArrayBuffer, or undefined for a SharedArrayBuffer of its
   * own. The tiered store passes its memory tier's, so a body the tier keeps is written into
   * the tier's memory once and never copied there.
   */
  allocateBody?: (length: number) => Buffer | undefined
  /**
   * Called once for every body allocateBody gave (after its commit, or when it was not
   * committed), when this store no longer reads it: its disk write is done, failed or was
   * never queued, and it is no longer served as a body not yet on disk. The memory can then be
   * used again (slab-arena.ts).
   */
  releaseBody?: (body: Buffer) => void
  /**
   * Where a buffered body goes while the disk write queue is full, instead of not being stored:
   * the memory tier, as the entry's only copy (see keepMemoryOnly). Without it such a body is
   * served but not stored.
   */
  memoryOnly?: MemoryOnlyBodies
  /** When a body small enough for the memory tier goes to disk (default 'first-request'; see DiskAdmission). */
  admission?: DiskAdmission
  /** Entries whose metadata the index keeps decoded, the most recently used (default 4096; see entry-index.ts). */
  hotEntries?: number
  /**
   * A budget for each bulk pass (a purge's, a filtered list's), which yields to the event loop
   * when its slice of the turn is used (default turn-budget.ts turnBudget, shared by the process).
   */
  turnBudget?: () => TurnBudget
  /** The clock (epoch ms) that expiry and commit times are read from (default Date.now). */
  now?: () => number
  log?: LogFn
}

/**
 * The memory tier as the only home of bodies the disk writer has no room for. Such an entry is
 * in the index (lookups, Vary, purges, revalidation see it) under a placeholder integrity
 * (memoryOnlyIntegrity), never on disk, never announced as held; the tier tells the store when
 * it lets go of the body (DiskStore.forgetMemoryOnly), and the entry goes with it.
 */
export interface MemoryOnlyBodies {
  /** Largest body the tier keeps. */
  readonly maxObjectBytes: number
  /** Keep `body` under `id`, tagged `integrity`; whether it was kept. The store reads it no more: releaseBody follows. */
  keep(id: string, body: Buffer, integrity: string): boolean
}

/**
 * When a stored body small enough for the memory tier (memoryOnly) is written to disk:
 * - 'first-request': as soon as it is stored (while the write queue has room).
 * - 'second-request': when its key is asked for again. The first request keeps it in the memory
 *   tier only (a memory-only entry: served from memory, never announced to peers); a hit on it
 *   there stores it again, to disk (promotion()), and a key asked for again after the tier let it
 *   go goes to disk with its new fill (recent-keys.ts remembers the keys). Larger bodies, and
 *   every body without a memory tier, go to disk at once either way.
 */
export type DiskAdmission = 'first-request' | 'second-request'

export const DEFAULT_WRITE_QUEUE_BYTES = 64 * 1024 * 1024
export const DEFAULT_MAX_VARIANTS = 32

export interface CommittedBody {
  meta: EntryMeta
  /** The body, when it was small enough to be buffered while writing. */
  body?: Buffer
  /**
   * With `body`: the variant's id (entryId) as the index holds it, a view of its packed
   * metadata. The memory tier keeps the body under it: a slice costs no copy of the key, where
   * entryId() would join key and variant again for every stored body.
   */
  id?: string
}

export interface DiskEntryWriter extends EntryWriter {
  /** commit(), also handing back a buffered body so the memory tier can keep it without reading it back. */
  commitWithBody(): Promise<CommittedBody | undefined>
}

/** A body with the metadata it belongs to, now or later. */
export type EntryLookup = EntryBody | undefined | Promise<EntryBody | undefined>
export interface EntryBody {
  body: StoredBody
  meta: EntryMeta
  /** readEntries(): the variant was replaced or dropped while its body was read. */
  replaced?: boolean
}

export interface DiskStore extends CacheStore {
  readonly dir: string
  writer(entry: NewEntry, expected?: ExpectedBody): DiskEntryWriter
  /** The current metadata of a variant, marking it recently used (memory-tier hits call this so disk LRU sees them). */
  /** `now` as for CacheStore.variant(). */
  touch(key: string, variant: string, now?: number): EntryMeta | undefined
  /**
   * With 'second-request' admission (DiskAdmission), for a hit on a variant kept in memory only:
   * the metadata to store it again under, so that its body goes to disk (the caller puts it with
   * the body it holds), or undefined when it stays as it is (another admission, not memory-only,
   * gone, or the write queue is full: a later hit asks again).
   */
  promotion(key: string, variant: string): EntryMeta | undefined
  /** touch() answering with the variant's content record instead of its metadata. */
  touchContent(key: string, variant: string, now?: number): ContentRecord | undefined
  /** read(), plus the metadata the returned body belongs to (the memory tier keeps the two together). */
  readEntry(key: string, variant: string, range?: ByteRange, now?: number): EntryLookup
  bodySize(key: string, variant: string): number | undefined
  readEntries(items: ReadonlyArray<{ key: string; variant: string }>): Promise<Array<EntryBody | undefined>>
  /** The disk writer's backlog. */
  writeQueue(): DiskWriterStats
  /**
   * The memory tier let go of the body of a variant kept in memory only (integrity
   * memoryOnlyIntegrity): the variant goes too (evicted), unless it has been replaced since.
   */
  forgetMemoryOnly(key: string, variant: string, integrity: string): void
  /**
   * Calls `listener` when the writer has hashed and written a body committed under a
   * placeholder integrity (pendingIntegrity): the variant's metadata now has `integrity`.
   */
  onDigest(listener: (id: string, placeholder: string, integrity: string) => void): () => void
  /** Slab memory made ready by the disk writer's thread (slab-arena.ts SlabMaker). */
  makeSlabs: SlabMaker
}

/** Content files kept open for fast hits (the hottest ones; each costs one descriptor). */
const OPEN_FILES = 256
/** Entries a filtered list reads between two looks at the turn's budget (about 70 µs of urls). */
const LIST_STEP = 256

/** Updates append a line to the entry's cacache bucket; past this many, the bucket is rewritten with the newest only. */
const COMPACT_AFTER_LINES = 8

/** A deleteWhere() call while it runs: what it covers, since when, and how many it dropped. */
interface Removal {
  predicate: (meta: PurgeFields) => boolean
  reason: 'purged' | 'cleared'
  since: number
  dropped: number
}

/** The share of a disk budget (bytes or entries) from which the store says it is full(). */
const FULL_SHARE = 0.95

type DeleteReason = Extract<StoreEvent, { type: 'deleted' }>['reason']

export async function createDiskStore(opts: DiskStoreOptions): Promise<DiskStore> {
  for (const name of ['maxBytes', 'maxObjectBytes'] as const) {
    if (!Number.isSafeInteger(opts[name]) || opts[name] < 0) throw new RangeError(`disk store ${name} must be a non-negative integer, got ${opts[name]}`)
  }
  if (opts.maxEntries !== undefined && !(Number.isSafeInteger(opts.maxEntries) && opts.maxEntries > 0)) throw new RangeError(`disk store maxEntries must be a positive integer, got ${opts.maxEntries}`)
  const dir = path.resolve(opts.dir)
  await mkdir(dir, { recursive: true })
  // Temp files belong to writes of a previous process that never finished.
  await rm(path.join(dir, 'tmp'), { recursive: true, force: true })
  const store = new CacacheDiskStore({ ...opts, dir })
  await store.load()
  return store
}

const defaultLog: LogFn = (obj) => {
  process.stderr.write(`${JSON.stringify(obj)}\n`)
}

/** commit() and friends must not reject because a logger threw: fall back to stderr then. */
export function safeLog(log: LogFn): LogFn {
  return (obj) => {
    try {
      log(obj)
    } catch (error) {
      defaultLog({ ...obj, logFailure: String(error) })
    }
  }
}

function describeError(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    return { error: error.message, code: (error as NodeJS.ErrnoException).code }
  }
  return { error: String(error) }
}

function isExpired(deleteAt: number, now: number): boolean {
  // A deleteAt that is not a finite number (lost Infinity, null) means "no limit".
  return Number.isFinite(deleteAt) && deleteAt <= now
}

/** What goes into cacache's `metadata`: everything but size and integrity, which cacache records itself. */
function storedMetadata(meta: NewEntry | EntryMeta): NewEntry {
  // A fill's new entry has neither: it is used as it is, without a copy of every field.
  if (!('size' in meta) && !('integrity' in meta)) return meta
  const { size: _size, integrity: _integrity, ...rest } = meta as EntryMeta
  return rest
}

function isMetadata(value: unknown): value is NewEntry {
  const m = value as Partial<NewEntry> | null
  return (
    typeof m === 'object' && m !== null &&
    typeof m.key === 'string' && typeof m.variant === 'string' && typeof m.url === 'string' &&
    typeof m.headers === 'object' && m.headers !== null &&
    typeof m.varyHeaders === 'object' && m.varyHeaders !== null &&
    Array.isArray(m.tags)
  )
}

/**
 * indexJson() around its integrity, for the disk writer to put in once it has hashed the body.
 * Each part is one flat string (see flatLine).
 */
function indexJsonAround(id: string, time: number, size: number, metadataJson: string): [string, string] {
  return [flatLine(['{"key":', JSON.stringify(id), ',"integrity":"']), flatLine(['","time":', String(time), ',"size":', String(size), ',"metadata":', metadataJson, '}'])]
}

/** The line cacache's index keeps for an entry (lib/entry-index.js insert): the same JSON as JSON.stringify of that object. */
function indexJson(id: string, integrity: string, time: number, size: number, metadataJson: string): string {
  // An integrity is an algorithm, '-' and base64 (contentPath checks it): nothing in it needs escaping.
  return flatLine(['{"key":', JSON.stringify(id), ',"integrity":"', integrity, '","time":', String(time), ',"size":', String(size), ',"metadata":', metadataJson, '}'])
}

/**
 * An index line as one flat string. A line joined with `+` or a template is a tree of V8 cons
 * strings that keeps its parts, the metadata's JSON among them, for as long as the write waits
 * in the queue (promoted to the old generation under a storm of misses); posting it to the
 * writer's thread then flattens it, and the flat copy, made in the young generation but held by
 * the old tree, is promoted too. Array join writes the parts into one new string once, and they
 * die young.
 */
export function flatLine(parts: string[]): string {
  return parts.join('')
}

function jobError(result: JobResult): Error {
  if (result.ok) return new Error('no error')
  return Object.assign(new Error(result.error.message), { code: result.error.code })
}

/** What a writer hands over on commit: its metadata (as stored and as JSON) and its body. */
interface Committing {
  entry: NewEntry
  metadataJson: string
  /** Order of commit() calls per entry: a large body finishing after a newer commit is dropped. */
  seq: number
}

class CacacheDiskStore implements DiskStore {
  readonly dir: string
  readonly #maxBytes: number
  readonly #maxEntries: number
  readonly #maxObjectBytes: number
  readonly #maxVariants: number
  readonly #allocateBody: ((length: number) => Buffer | undefined) | undefined
  readonly #releaseBody: (body: Buffer) => void
  readonly #log: LogFn
  readonly #turnBudget: () => TurnBudget
  readonly #tmpDir: string
  readonly #index: EntryIndex
  /** Content files by integrity. */
  readonly #contents = new Map<string, ContentRecord>()
  readonly #paths: ContentPaths
  /** Bytes of all content files referenced (including ones being committed). */
  #bytes = 0
  #integrityFailures = 0
  #writeFailures = 0
  #writesSkipped = 0
  #writesMemoryOnly = 0
  readonly #memoryOnly: MemoryOnlyBodies | undefined
  /** Keys asked for before, with 'second-request' admission (DiskAdmission); undefined otherwise. */
  readonly #recentKeys: RecentKeys | undefined
  #evictions = 0
  readonly #listeners = new Set<(event: StoreEvent) => void>()
  readonly #writer: DiskWriter
  /** Per entry id, the seq of the last commit() called (see Committing.seq). */
  readonly #lastCommit = new Map<string, number>()
  #commitSeq = 0
  #lastCommitAt = 0
  /** The start-up sweep is queueing removals of unreferenced content files (see #commitBuffered). */
  #sweeping = false
  /** Numbers the placeholder integrities of bodies the writer is hashing. */
  #pendingSeq = 0
  /** Bodies handed to the writer to hash whose digest has not come back yet. */
  #hashing = 0
  /**
   * Digests of files left by bodies whose entry went before they were hashed, removed once no
   * body is being hashed: until then another entry's body still being hashed may be the same
   * bytes, its file that very file (see #digested).
   */
  readonly #orphansAfterHashing = new Set<string>()
  /** Bodies being hashed whose entry's metadata changed meanwhile: their index line is written once digested. */
  readonly #relineAfterDigest = new Set<ContentRecord>()
  readonly #digestListeners = new Set<(id: string, placeholder: string, integrity: string) => void>()
  /**
   * deleteWhere() calls still running: a lookup of an entry one of them
   * covers drops it at once, so the entry is gone from the moment the call
   * starts, not only once the pass over the index reaches it.
   */
  readonly #removing = new Set<Removal>()
  readonly #files: OpenFiles
  /** Reads many small bodies off the event loop, for a peer's populate (body-reader.ts). */
  readonly #bodyReader = new BodyReader()
  /** Background work close() must wait for. Failures are logged where they happen (a commit refused for an unexpected body rejects to its caller). */
  readonly #inflight = new Set<Promise<unknown>>()
  #closed = false
  readonly #now: () => number

  constructor(opts: DiskStoreOptions) {
    this.dir = opts.dir
    this.#maxBytes = opts.maxBytes
    this.#maxEntries = opts.maxEntries ?? Infinity
    this.#maxObjectBytes = opts.maxObjectBytes
    this.#maxVariants = opts.maxVariants ?? DEFAULT_MAX_VARIANTS
    this.#allocateBody = opts.allocateBody
    this.#releaseBody = opts.releaseBody ?? (() => {})
    this.#memoryOnly = opts.memoryOnly
    this.#recentKeys = opts.admission === 'second-request' && opts.memoryOnly ? new RecentKeys() : undefined
    this.#log = safeLog(opts.log ?? defaultLog)
    this.#turnBudget = opts.turnBudget ?? turnBudget
    this.#now = opts.now ?? Date.now
    this.#tmpDir = path.join(opts.dir, 'tmp')
    this.#index = new EntryIndex({ hotEntries: opts.hotEntries })
    this.#paths = new ContentPaths((integrity) => contentPath(opts.dir, integrity) as string)
    this.#writer = new DiskWriter({
      dir: opts.dir,
      maxQueueBytes: opts.writeQueueBytes ?? DEFAULT_WRITE_QUEUE_BYTES,
      maxQueueJobs: opts.writeQueueJobs,
      onCallbackError: (error) => this.#log({ level: 'error', msg: 'cache could not record a finished disk write', ...describeError(error) }),
    })
    this.#files = new OpenFiles({
      max: OPEN_FILES,
      onCloseError: (error, file) => this.#log({ level: 'warn', msg: 'cache could not close a content file', path: file, ...describeError(error) }),
    })
  }

  // ---- start-up -----------------------------------------------------------

  /** Rebuilds the in-memory index from cacache's index, then cleans up in the background. */
  async load(): Promise<void> {
    const now = this.#now()
    const unwanted: string[] = []
    // @types/cacache types the stream's items as the whole ls() object; each is one entry.
    const entries = cacache.ls.stream(this.dir) as unknown as AsyncIterable<cacache.CacheObject>
    // Added as read (the metadata packed at once: a million entries must not all be objects at
    // the same time), then put in commit order.
    for await (const entry of entries) {
      if (!this.#loadEntry(entry, now)) unwanted.push(entry.key)
    }
    this.#index.orderByCommitTime()
    for (const handle of this.#index.handles()) this.#lastCommitAt = Math.max(this.#lastCommitAt, this.#index.committedAt(handle))
    // A lowered variant cap applies at once.
    for (const handle of this.#index.handles()) {
      if (this.#index.live(handle)) this.#capVariants(this.#index.key(handle))
    }
    if (unwanted.length > 0) this.#log({ level: 'info', msg: 'cache dropping expired or unreadable entries at start', count: unwanted.length })
    this.#sweeping = true
    this.#track(this.#cleanUp(unwanted))
    // A budget lowered since the last run applies at once.
    this.#evict()
  }

  #loadEntry(entry: cacache.CacheObject, now: number): boolean {
    const metadata: unknown = entry.metadata
    if (!isMetadata(metadata) || entryId(metadata.key, metadata.variant) !== entry.key) return false
    if (!contentPath(this.dir, entry.integrity) || typeof entry.size !== 'number') return false
    const meta: EntryMeta = { ...metadata, size: entry.size, integrity: entry.integrity }
    if (isExpired(meta.deleteAt, now)) return false
    // lastAccess is not persisted (that would be a write per hit): after a
    // restart, recency starts from commit order.
    const { content } = this.#pin(entry.integrity, entry.size)
    const { replaced } = this.#index.add({ meta, content, committedAt: entry.time, indexLines: 1, hot: false })
    if (replaced) this.#release(replaced.content)
    return true
  }

  /** Removes index buckets not loaded, then content files nothing references (crash leftovers, expired entries). */
  async #cleanUp(unwantedIds: string[]): Promise<void> {
    for (const id of unwantedIds) this.#removeBucket(id)
    const removals: Promise<JobResult>[] = []
    try {
      // Every digest a body may be named by: one stored by an older version is sha512's.
      for (const algorithm of CONTENT_ALGORITHMS) {
        const root = algorithmRoot(this.dir, algorithm)
        for (const a of await readdirOrEmpty(root)) {
          for (const b of await readdirOrEmpty(path.join(root, a))) {
            for (const name of await readdirOrEmpty(path.join(root, a, b))) {
              const file = path.join(root, a, b, name)
              // Decided when queued: a write of this content queued later puts it back after the removal.
              if (!this.#contents.has(integrityOfPath(algorithm, a, b, name))) removals.push(this.#writer.run({ op: 'rm-content', path: file }))
            }
          }
        }
      }
    } catch (error) {
      this.#log({ level: 'warn', msg: 'cache orphan sweep failed', dir: this.dir, ...describeError(error) })
    } finally {
      // Every removal is queued: a body hashed by the writer from now on is written after them.
      this.#sweeping = false
    }
    const removed = (await Promise.all(removals)).filter((r) => r.ok).length
    if (removed > 0) this.#log({ level: 'info', msg: 'cache removed unreferenced content files', count: removed })
  }

  // ---- reads --------------------------------------------------------------

  /** The live variant, or undefined; drops it when expired. */
  #current(key: string, variant: string, touch: boolean, now = this.#now()): Handle | undefined {
    const handle = touch ? this.#index.touch(key, variant, now) : this.#index.find(key, variant)
    if (handle === undefined) return undefined
    if (isExpired(this.#index.deleteAt(handle), now)) {
      this.#drop(handle, 'expired')
      return undefined
    }
    if (this.#removing.size > 0 && this.#dropIfRemoving(handle)) return undefined
    return handle
  }

  /** Drops the variant when a running deleteWhere() covers it (see #removing); whether it did. */
  #dropIfRemoving(handle: Handle): boolean {
    const meta = this.#index.meta(handle)
    for (const removal of this.#removing) {
      // Only what was stored before the call: the pass never sees what is stored after it.
      if (meta.storedAt <= removal.since && removal.predicate(meta)) {
        removal.dropped++
        void this.#drop(handle, removal.reason)
        return true
      }
    }
    return false
  }

  variants(key: string): EntryMeta[] {
    const now = this.#now()
    const metas: EntryMeta[] = []
    for (const handle of this.#index.variantsOf(key)) {
      if (isExpired(this.#index.deleteAt(handle), now)) this.#drop(handle, 'expired')
      else if (this.#removing.size === 0 || !this.#dropIfRemoving(handle)) metas.push(this.#index.meta(handle))
    }
    return metas
  }

  varyOf(key: string): readonly string[] {
    return this.#index.varyOf(key)
  }

  variant(key: string, variant: string, now?: number): EntryMeta | undefined {
    const handle = this.#current(key, variant, false, now)
    return handle === undefined ? undefined : this.#index.meta(handle)
  }

  bodySize(key: string, variant: string): number | undefined {
    const handle = this.#current(key, variant, false)
    return handle === undefined ? undefined : this.#index.content(handle).size
  }

  touch(key: string, variant: string, now?: number): EntryMeta | undefined {
    const handle = this.#current(key, variant, true, now)
    return handle === undefined ? undefined : this.#index.meta(handle)
  }

  touchContent(key: string, variant: string, now?: number): ContentRecord | undefined {
    const handle = this.#current(key, variant, true, now)
    return handle === undefined ? undefined : this.#index.content(handle)
  }

  read(key: string, variant: string, range?: ByteRange): BodyLookup {
    const found = this.readEntry(key, variant, range)
    if (found instanceof Promise) return found.then((f) => f?.body)
    return found?.body
  }

  readEntry(key: string, variant: string, range?: ByteRange, now?: number): EntryLookup {
    const handle = this.#current(key, variant, true, now)
    if (handle === undefined) return undefined
    const content = this.#index.content(handle)
    if (this.#bodyGone(handle, content)) return undefined
    const clamped = range ? clampRange(range, content.size) : undefined
    const atHand = readTrustedNow(this.#files, content, clamped)
    return atHand ? { body: atHand, meta: this.#index.meta(handle) } : this.#readFile(handle, content, clamped)
  }

  /**
   * Bodies up to SMALL_BODY_BYTES are read whole on the body reader thread, all in one message,
   * with the same integrity rules as readContent(): a body not seen intact before (or changed
   * since) is hashed there and must match, a corrupt or missing one drops its entry. Larger
   * bodies go the way read() takes them.
   */
  async readEntries(items: ReadonlyArray<{ key: string; variant: string }>): Promise<Array<EntryBody | undefined>> {
    const found: Array<EntryBody | undefined | Promise<EntryBody | undefined>> = new Array(items.length).fill(undefined)
    const files: BodyFile[] = []
    const reading: Array<{ at: number; handle: Handle; content: ContentRecord; meta: EntryMeta }> = []
    for (let i = 0; i < items.length; i++) {
      const { key, variant } = items[i]!
      const handle = this.#current(key, variant, true)
      if (handle === undefined) continue
      const content = this.#index.content(handle)
      // Kept in memory only: not held here, nothing to read (and the memory tier may still hold it).
      if (isMemoryOnlyIntegrity(content.integrity)) continue
      const meta = this.#index.meta(handle)
      if (content.pending) found[i] = { body: { kind: 'buffer', buffer: content.pending, tier: 'memory' }, meta }
      else if (content.size > SMALL_BODY_BYTES) found[i] = this.readEntry(key, variant)
      else {
        reading.push({ at: i, handle, content, meta })
        files.push({ path: content.path, size: content.size, integrity: content.integrity, verified: content.verified })
      }
    }
    const results = await this.#bodyReader.read(files)
    for (let r = 0; r < reading.length; r++) {
      const { at, handle, content, meta } = reading[r]!
      const result = results[r]!
      // The entry may have been replaced or dropped while the thread read: what it read is still
      // the body `meta` names (content files are named by their digest), and a failure is the
      // entry's only while it still holds that file.
      const current = this.#index.live(handle) && this.#index.content(handle) === content
      if (result.ok) {
        if (result.hashed) content.verified = result.signature
        found[at] = current ? { body: { kind: 'buffer', buffer: result.body, tier: 'disk' }, meta } : { body: { kind: 'buffer', buffer: result.body, tier: 'disk' }, meta, replaced: true }
      } else if (result.reason === 'failed') {
        this.#log({ level: 'warn', msg: 'cache read failed', key: meta.key, variant: meta.variant, error: result.message })
      } else if (current) {
        this.#corrupt(handle, result.reason)
      }
    }
    return Promise.all(found)
  }

  async #readFile(handle: Handle, content: ContentRecord, clamped: ByteRange | undefined): Promise<EntryBody | undefined> {
    const meta = this.#index.meta(handle)
    const { key, variant } = meta
    let result: ContentRead
    try {
      result = await readContent(this.#files, content, clamped, { onStreamCorrupt: () => this.#corrupt(handle, 'corrupt') })
    } catch (error) {
      // EMFILE, EIO...: not proof of corruption, so keep the entry and let the
      // caller fetch from the origin this time.
      this.#log({ level: 'warn', msg: 'cache read failed', key, variant, ...describeError(error) })
      return undefined
    }
    if (!result.ok) {
      this.#corrupt(handle, result.reason)
      return undefined
    }
    return { body: result.body, meta }
  }

  /**
   * A variant kept in memory only has no body here: asked for one, the memory tier no longer
   * holds it (it tells forgetMemoryOnly when it lets go, so this is a safety net), and the
   * variant goes.
   */
  #bodyGone(handle: Handle, content: ContentRecord): boolean {
    if (!isMemoryOnlyIntegrity(content.integrity)) return false
    this.#drop(handle, 'evicted')
    return true
  }

  forgetMemoryOnly(key: string, variant: string, integrity: string): void {
    const handle = this.#index.find(key, variant)
    if (handle !== undefined && this.#index.content(handle).integrity === integrity) this.#drop(handle, 'evicted')
  }

  /** A body that does not match its integrity (or is gone) is never served: count it and drop the entry. */
  #corrupt(handle: Handle, reason: 'missing' | 'corrupt'): void {
    if (!this.#index.live(handle)) return // already dropped or replaced: counted once
    this.#integrityFailures++
    const content = this.#index.content(handle)
    const { key, variant } = this.#index.meta(handle)
    content.verified = undefined
    this.#files.forget(content.path)
    this.#log({ level: 'warn', msg: 'cache body failed its integrity check', key, variant, reason, path: content.path })
    this.#emit({ type: 'integrity-failure', key, variant })
    this.#drop(handle, 'corrupt')
  }

  // ---- writes -------------------------------------------------------------

  writer(entry: NewEntry, expected?: ExpectedBody): DiskEntryWriter {
    // The JSON is the index line's metadata, taken now: a restart reads back exactly this. The
    // object itself is kept (and frozen on commit) rather than parsed back, so the strings it
    // shares with the proxy's own (key, url) are held once for the 100,000s of entries in memory.
    const metadata = storedMetadata(entry)
    return new EntryWriterImpl(this.#writerHost, metadata, JSON.stringify(metadata), expected)
  }

  async put(entry: NewEntry, body: Uint8Array): Promise<EntryMeta | undefined> {
    const writer = this.writer(entry)
    if (!writer.write(body)) {
      writer.abort()
      return undefined
    }
    return writer.commit()
  }

  admits(key: string, size: number | undefined): StoreAdmission {
    // A key's first request under 'second-request' admission: the memory tier only (#commitBuffered decides the same).
    if (this.#recentKeys && size !== undefined && this.#fitsMemoryOnly(size) && !this.#recentKeys.has(key)) return 'memory-only'
    if (this.#writer.hasRoom(size)) return 'disk'
    // An unknown size is taken for the memory tier; a body that turns out larger is not stored (#commitBuffered).
    if (this.#fitsMemoryOnly(size ?? 0)) return 'memory-only'
    this.#skipped(key)
    return false
  }

  #fitsMemoryOnly(size: number): boolean {
    return this.#memoryOnly !== undefined && this.#memoryOnly.maxObjectBytes > 0 && size <= this.#memoryOnly.maxObjectBytes
  }

  promotion(key: string, variant: string): EntryMeta | undefined {
    if (!this.#recentKeys || this.#closed) return undefined
    const handle = this.#index.find(key, variant)
    if (handle === undefined) return undefined
    const content = this.#index.content(handle)
    if (!isMemoryOnlyIntegrity(content.integrity) || !this.#writer.hasRoom(content.size)) return undefined
    // Its second request: the commit that follows goes to disk.
    this.#recentKeys.note(key)
    return this.#index.meta(handle)
  }

  #skipped(key: string): void {
    this.#writesSkipped++
    this.#emit({ type: 'write-skipped', key, reason: 'queue-full' })
  }

  readonly #writerHost: WriterHost = {
    closed: () => this.#closed,
    newBody: (onFailure, algorithm) => new PendingBody({ tmpDir: this.#tmpDir, maxBytes: this.#maxObjectBytes, onFailure, allocateBody: this.#allocateBody, algorithm }),
    commitBuffered: (entry, metadataJson, body) => this.#commitBuffered(entry, metadataJson, body),
    releaseBody: (body) => this.#releaseBody(body),
    commitSpilled: (entry, metadataJson, body, reportFailure, expected) => this.#commitSpilled(entry, metadataJson, body, reportFailure, expected),
    commitExpected: (entry, metadataJson, body, expected) => this.#commitExpected(entry, metadataJson, body, expected),
    discard: (entry, body) => this.#track(this.#discard(entry, body)),
    reportFailure: (key, error) => this.#writeFailed(key, error),
  }

  #nextCommit(id: string): number {
    const seq = ++this.#commitSeq
    this.#lastCommit.set(id, seq)
    return seq
  }

  /**
   * A body held in memory: visible at once (served from memory until the disk writer has
   * written it). When the write queue is full, kept in the memory tier only (#keepMemoryOnly),
   * or not stored at all when the tier does not take it.
   */
  #commitBuffered(entry: NewEntry, metadataJson: string, body: BufferedBody): CommittedBody | undefined {
    const id = entryId(entry.key, entry.variant)
    // 'second-request' admission: a key a client asks for the first time stays in the memory tier
    // (DiskAdmission). A populate's fill (entry.via) is of a URL other nodes' clients asked for.
    if (this.#recentKeys && entry.via === undefined && this.#fitsMemoryOnly(body.size) && !this.#recentKeys.note(entry.key)) {
      const kept = this.#keepMemoryOnly(id, entry, body)
      if (kept) return kept
      // The tier did not take it: to disk, as with 'first-request'.
    }
    if (!this.#writer.hasRoom(body.size)) {
      const kept = this.#keepMemoryOnly(id, entry, body)
      if (kept) return kept
      this.#skipped(entry.key)
      this.#releaseBody(body.body)
      return undefined
    }
    // A large body of this entry still being written is superseded by this later commit.
    this.#lastCommit.delete(id)
    // While the start-up sweep decides which files nothing references, a body is hashed here:
    // one the writer hashed later could be the file a removal the sweep queued after it takes.
    const integrity = body.integrity ?? (this.#sweeping ? integrityOfBytes(body.body) : undefined)
    if (integrity === undefined) return this.#commitUnhashed(id, entry, metadataJson, body.body, body.size)
    const { content, created } = this.#pin(integrity, body.size)
    if (created) content.pending = body.body
    const { handle, meta } = this.#publish(id, entry, content)
    const lines = this.#index.indexLines(handle)
    const line = this.#line(handle, meta, metadataJson)
    const compact = lines > COMPACT_AFTER_LINES
    // The same body under another entry (many URLs, one body): when its file is known good in
    // this process, or its write is queued ahead of this job, only the index line is written.
    // A file not verified yet is rewritten, which heals one that was corrupted on disk.
    const inPlace = !created && (content.pending !== undefined || content.verified !== undefined)
    const job: DiskJob = inPlace ? { op: 'index', id, line, compact } : { op: 'put', body: body.body, contentPath: content.path, id, line, compact }
    if (job.compact) this.#index.setIndexLines(handle, 1)
    // Not tracked: the writer's own drain() covers the job, and its callback runs before that resolves.
    this.#writer.enqueue(job, this.#whenWritten(handle, entry.key, content, body.body))
    this.#evict()
    return { meta, body: body.body, id: this.#index.id(handle) }
  }

  /**
   * A body the disk writer has no room for, kept by the memory tier as the entry's only copy:
   * published under a placeholder integrity of its own (memoryOnlyIntegrity) with a content
   * record no file and no byte budget go with, then handed to the tier. Nothing is queued for
   * the disk, so a restart (or a SIGKILL) simply finds it gone. Undefined when the tier does
   * not take it.
   */
  #keepMemoryOnly(id: string, entry: NewEntry, body: BufferedBody): CommittedBody | undefined {
    const memory = this.#memoryOnly
    if (!memory || body.size > memory.maxObjectBytes) return undefined
    // A large body of this entry still being written is superseded by this later commit.
    this.#lastCommit.delete(id)
    const content = new StoredContent(this.#paths, memoryOnlyIntegrity(++this.#pendingSeq), body.size)
    content.refs = 1
    const { handle, meta } = this.#publish(id, entry, content)
    // Published first: the replaced variant's 'deleted' ends its memory copy before this one is kept.
    if (!memory.keep(this.#index.id(handle), body.body, content.integrity)) {
      void this.#drop(handle, 'evicted')
      return undefined
    }
    this.#releaseBody(body.body)
    this.#writesMemoryOnly++
    this.#emit({ type: 'write-skipped', key: entry.key, reason: 'memory-only' })
    // No body handed back: the tier has it already.
    return { meta }
  }

  /**
   * The callbacks of queued writes, made outside #commitBuffered and #commitUnhashed so that each
   * holds only what it uses: a closure keeps its function's whole scope, and the entry (its
   * headers, policy and strings) would stay on the heap for every job queued behind a slow
   * disk writer.
   */
  #whenWritten(handle: Handle, key: string, content: ContentRecord, body: Buffer): (result: JobResult) => void {
    return (result) => this.#written(handle, key, content, body, result)
  }

  #whenDigested(handle: Handle, key: string, content: ContentRecord, body: Buffer): (result: JobResult) => void {
    return (result) => this.#digested(handle, key, content, body, result)
  }

  /**
   * A buffered body whose digest the disk writer's thread takes: published at once under a
   * placeholder integrity of its own (see pendingIntegrity), served from memory until the
   * writer reports the file written and its integrity, which then replaces the placeholder
   * (#digested). Its index line is written by the writer, with the integrity it worked out.
   */
  #commitUnhashed(id: string, entry: NewEntry, metadataJson: string, body: Buffer, size: number): CommittedBody {
    // The placeholder is never a valid SRI: contentPath() refuses it, so no file is ever named by it.
    const { content } = this.#pin(pendingIntegrity(++this.#pendingSeq), size)
    this.#hashing++
    content.pending = body
    const { handle, meta } = this.#publish(id, entry, content)
    const compact = this.#index.indexLines(handle) > COMPACT_AFTER_LINES
    if (compact) this.#index.setIndexLines(handle, 1)
    const line = indexJsonAround(id, this.#index.committedAt(handle), size, metadataJson)
    this.#writer.enqueue({ op: 'put-hashed', body, id, line, compact }, this.#whenDigested(handle, entry.key, content, body))
    this.#evict()
    return { meta, body, id: this.#index.id(handle) }
  }

  /** The disk writer's answer for a body it hashed: the placeholder integrity gives way to the real one. */
  #digested(handle: Handle, key: string, content: ContentRecord, body: Buffer, result: JobResult): void {
    this.#hashing--
    try {
      this.#takeDigest(handle, key, content, body, result)
    } finally {
      if (this.#hashing === 0) this.#removeOrphans()
    }
  }

  #takeDigest(handle: Handle, key: string, content: ContentRecord, body: Buffer, result: JobResult): void {
    const placeholder = content.integrity
    const held = this.#contents.get(placeholder) === content
    if (!result.ok || result.integrity === undefined) {
      if (held) this.#relineAfterDigest.delete(content)
      this.#written(handle, key, content, body, result.ok ? { ok: false, error: { message: 'the cache writer gave no integrity' } } : result)
      return
    }
    const integrity = result.integrity
    const existing = this.#contents.get(integrity)
    if (content.pending === body) content.pending = undefined
    this.#releaseBody(body)
    if (!held) {
      // Dropped, replaced or cleared before its write was done: the file it left goes too,
      // unless another entry holds that body. One still being hashed may (its job ran before
      // this answer came, finding the file in place): the file goes once none is.
      if (!existing) this.#orphansAfterHashing.add(integrity)
      return
    }
    this.#contents.delete(placeholder)
    let record = content
    if (existing) {
      // The same body as another entry's: one record for both. The writer found the file
      // holding these bytes, or replaced it with them: this version of it is known good.
      existing.refs += content.refs
      this.#bytes -= content.size
      // Usually left as it was (only the index line was written); replaced when it was torn.
      if (existing.verified?.ino !== result.file?.ino) this.#files.forget(existing.path)
      if (result.file) existing.verified = result.file
      record = existing
    } else {
      content.integrity = integrity
      if (result.file) content.verified = result.file
      this.#contents.set(integrity, content)
    }
    if (!this.#index.live(handle) || this.#index.content(handle) !== content) return
    this.#index.setContent(handle, record)
    const id = this.#index.id(handle)
    for (const listener of this.#digestListeners) listener(id, placeholder, integrity)
    // Metadata changed while the body was being written: its line, now with the integrity.
    if (this.#relineAfterDigest.delete(content)) this.#writeIndexLine(handle)
  }

  /** Removes the files of bodies dropped while being hashed that no entry holds now (a removal queued now runs after any write of them queued before). */
  #removeOrphans(): void {
    for (const integrity of this.#orphansAfterHashing) {
      if (!this.#contents.has(integrity)) void this.#track(this.#writer.run({ op: 'rm-content', path: contentPath(this.dir, integrity)! }))
    }
    this.#orphansAfterHashing.clear()
  }

  /**
   * Appends the variant's current metadata to its cacache bucket (compacting it now and then).
   * A body whose digest the writer has not reported yet has no integrity to write: its line
   * is written once it has (#digested).
   */
  #writeIndexLine(handle: Handle, meta = this.#index.meta(handle), metadataJson = JSON.stringify(storedMetadata(meta))): Promise<void> {
    const content = this.#index.content(handle)
    // Kept in memory only: nothing on disk to follow the metadata.
    if (isMemoryOnlyIntegrity(content.integrity)) return Promise.resolve()
    if (isPendingIntegrity(content.integrity)) {
      this.#relineAfterDigest.add(content)
      return Promise.resolve()
    }
    const lines = this.#index.indexLines(handle) + 1
    const compact = lines > COMPACT_AFTER_LINES
    this.#index.setIndexLines(handle, compact ? 1 : lines)
    return this.#track(
      this.#writer.run({ op: 'index', id: this.#index.id(handle), line: this.#line(handle, meta, metadataJson), compact }).then((result) => {
        // The metadata still applies in this process; a restart falls back to the previous one.
        if (!result.ok) this.#writeFailed(meta.key, jobError(result))
      }),
    )
  }

  /**
   * A buffered body that must be the one `expected` names (a peer's copy): the disk writer's
   * thread hashes it, compares and writes it, and only then does it become visible, as a spilled
   * body does. The main thread never hashes it. The content record is pinned under the expected
   * integrity before the job is queued, so no removal of a file with those bytes (another entry's,
   * dropped meanwhile) can run between the write and the publication, and a removal the start-up
   * sweep queued before runs before the write. When the write queue is full, it is hashed here and
   * committed as any buffered body (which may keep it in memory only).
   */
  #commitExpected(entry: NewEntry, metadataJson: string, body: BufferedBody, expected: ExpectedBody): Promise<CommittedBody | undefined> {
    const path = contentPath(this.dir, expected.integrity)
    if (!path || !this.#writer.hasRoom(body.size)) {
      // By the expected digest's algorithm: a peer running an older version announces sha512.
      const hashed: BufferedBody = { ...body, integrity: integrityOfBytes(body.body, algorithmOf(expected.integrity)) }
      const mismatch = unexpectedBody(expected, hashed)
      if (mismatch) {
        this.#releaseBody(body.body)
        return Promise.reject(mismatch)
      }
      return Promise.resolve(this.#commitBuffered(entry, metadataJson, hashed))
    }
    const id = entryId(entry.key, entry.variant)
    const seq = this.#nextCommit(id)
    const { content, created } = this.#pin(expected.integrity, body.size)
    const committedAt = this.#commitTime()
    const previous = this.#index.find(entry.key, entry.variant)
    const indexLines = (previous === undefined ? 0 : this.#index.indexLines(previous)) + 1
    const line = indexJsonAround(id, committedAt, body.size, metadataJson)
    const committing = new Promise<CommittedBody | undefined>((resolve, reject) => {
      this.#writer.enqueue({ op: 'put-hashed', body: body.body, id, line, compact: indexLines > COMPACT_AFTER_LINES, expect: expected.integrity }, (result) => {
        this.#releaseBody(body.body)
        if (!result.ok) {
          this.#release(content)
          if (result.error.code === 'EINTEGRITY') reject(Object.assign(new Error(result.error.message), { code: 'EINTEGRITY' }))
          else {
            if (!this.#closed) this.#writeFailed(entry.key, jobError(result))
            resolve(undefined)
          }
          return
        }
        // Just written (or found in place) holding these bytes: this version of the file is known good.
        if (!created && content.verified?.ino !== result.file?.ino) this.#files.forget(content.path)
        if (result.file) content.verified = result.file
        if (this.#lastCommit.get(id) !== seq || this.#closed) {
          // A newer commit or a delete came while this one was being written (see #commitSpilled).
          this.#release(content)
          resolve(undefined)
          return
        }
        this.#lastCommit.delete(id)
        const { handle, meta } = this.#publish(id, entry, content, committedAt)
        this.#index.setIndexLines(handle, indexLines > COMPACT_AFTER_LINES ? 1 : indexLines)
        this.#evict()
        resolve({ meta })
      })
    })
    return this.#track(committing)
  }

  /** A body that spilled to a temp file: the disk writer moves it into place, then it becomes visible. */
  #commitSpilled(
    entry: NewEntry,
    metadataJson: string,
    body: PendingBody,
    reportFailure: (error: unknown) => void,
    expected: ExpectedBody | undefined,
  ): Promise<CommittedBody | undefined> {
    const id = entryId(entry.key, entry.variant)
    const seq = this.#nextCommit(id)
    const committing = (async (): Promise<CommittedBody | undefined> => {
      let finished: FinishedBody
      try {
        finished = await body.finish()
      } catch (error) {
        reportFailure(error)
        await this.#discard(entry, body)
        return undefined
      }
      const mismatch = expected && unexpectedBody(expected, finished)
      if (mismatch) {
        await this.#discard(entry, body)
        throw mismatch
      }
      const path = contentPath(this.dir, finished.integrity)
      // Superseded by a later commit (or a delete) while the temp file was finishing: its
      // index line must not land after the newer one's.
      if (this.#lastCommit.get(id) !== seq || this.#closed || !path) {
        if (!path) reportFailure(new Error(`unexpected integrity format: ${finished.integrity}`))
        await this.#discard(entry, body)
        return undefined
      }
      const { content } = this.#pin(finished.integrity, finished.size)
      const committedAt = this.#commitTime()
      const previous = this.#index.find(entry.key, entry.variant)
      const indexLines = (previous === undefined ? 0 : this.#index.indexLines(previous)) + 1
      const line = indexJson(id, finished.integrity, committedAt, finished.size, metadataJson)
      const result = await this.#writer.run({ op: 'put', tmpPath: finished.tmpPath, contentPath: path, id, line, compact: indexLines > COMPACT_AFTER_LINES })
      if (!result.ok) {
        this.#release(content)
        reportFailure(jobError(result))
        return undefined
      }
      if (result.file) content.verified = result.file
      if (this.#lastCommit.get(id) !== seq) {
        // A newer commit or a delete came while this one was being written: it is on disk
        // before theirs, so theirs wins after a restart too; here it simply never shows.
        this.#release(content)
        return undefined
      }
      this.#lastCommit.delete(id)
      const { handle, meta } = this.#publish(id, entry, content, committedAt)
      this.#index.setIndexLines(handle, indexLines > COMPACT_AFTER_LINES ? 1 : indexLines)
      this.#evict()
      return { meta }
    })()
    return this.#track(committing)
  }

  /**
   * Commit times are milliseconds, strictly increasing in this store: commits in the same
   * millisecond keep their order in listings after a restart (which sorts by this time).
   */
  #commitTime(): number {
    this.#lastCommitAt = Math.max(this.#now(), this.#lastCommitAt + 1)
    return this.#lastCommitAt
  }

  /** Makes a committed variant visible in the index, replacing the one with the same id. */
  #publish(id: string, entry: NewEntry, content: ContentRecord, committedAt = this.#commitTime()): { handle: Handle; meta: EntryMeta } {
    const previous = this.#index.find(entry.key, entry.variant)
    const indexLines = (previous === undefined ? 0 : this.#index.indexLines(previous)) + 1
    const meta = freezeMeta(plainCopy(entry, { size: content.size, integrity: content.integrity }))
    // Not kept decoded (hot: false): under a run of misses, a fresh entry's metadata kept among
    // the hottest until its digest came back lived long enough to be promoted into V8's old
    // space, and died there. A hit decodes it again if it is asked for.
    const { handle, replaced } = this.#index.add({ meta, content, committedAt, indexLines, hot: false })
    if (replaced) {
      this.#release(replaced.content)
      const wasMemoryOnly = isMemoryOnlyIntegrity(replaced.content.integrity)
      if (isMemoryOnlyIntegrity(content.integrity) && !wasMemoryOnly) {
        // A variant on disk gives way to one kept in memory only: its index line goes (after any
        // write of it queued before), and this node no longer holds it.
        void this.#removeBucket(id)
        this.#emit({ type: 'deleted', key: meta.key, variant: meta.variant, reason: 'memory-only' })
      } else {
        this.#emit({ type: 'deleted', key: meta.key, variant: meta.variant, reason: 'replaced', ...(wasMemoryOnly && { memoryOnly: true as const }) })
      }
    }
    this.#emit({ type: 'stored', meta })
    this.#capVariants(meta.key)
    return { handle, meta }
  }

  #line(handle: Handle, meta: EntryMeta, metadataJson: string): string {
    return indexJson(entryId(meta.key, meta.variant), meta.integrity, this.#index.committedAt(handle), meta.size, metadataJson)
  }

  /** The disk writer's answer for a buffered body. */
  #written(handle: Handle, key: string, content: ContentRecord, body: Buffer, result: JobResult): void {
    if (content.pending === body) content.pending = undefined
    // Written (or not): neither the writer's thread nor a reader of pending bodies reads it from here on.
    this.#releaseBody(body)
    if (result.ok) {
      // Just written from bytes whose digest was taken on the way in: trust this version of the file.
      if (result.file && this.#contents.get(content.integrity) === content) content.verified = result.file
      return
    }
    this.#writeFailed(key, jobError(result))
    // Not on disk: it must not be served from a file that is not there, nor recorded as held.
    this.#drop(handle, 'corrupt')
  }

  async #discard(entry: NewEntry, body: PendingBody): Promise<void> {
    try {
      await body.discard()
    } catch (error) {
      this.#log({ level: 'warn', msg: 'cache could not remove a temp file', key: entry.key, ...describeError(error) })
    }
  }

  #writeFailed(key: string, error: unknown): void {
    this.#writeFailures++
    this.#log({ level: 'error', msg: 'cache write failed', key, ...describeError(error) })
    this.#emit({ type: 'write-failure', key, error })
  }

  async updateMeta(meta: EntryMeta): Promise<void> {
    const metadataJson = JSON.stringify(storedMetadata(meta))
    const next = JSON.parse(metadataJson) as NewEntry
    const id = entryId(next.key, next.variant)
    const handle = this.#index.find(next.key, next.variant)
    if (handle === undefined) return
    // The body is untouched, so size and integrity stay those of the stored body.
    const content = this.#index.content(handle)
    const updated = freezeMeta(plainCopy(next, { size: content.size, integrity: content.integrity }))
    this.#index.updateMeta(handle, updated)
    this.#emit({ type: 'stored', meta: updated })
    await this.#writeIndexLine(handle, updated, metadataJson)
  }

  // ---- deletes and eviction -----------------------------------------------

  /**
   * Removes a record from the index now (so it is no longer served and no
   * longer counts against the budget) and from disk in its turn. The promise
   * resolves when the files are gone; it never rejects (failures are logged).
   */
  #drop(handle: Handle, reason: DeleteReason): Promise<void> {
    const removed = this.#index.remove(handle)
    if (!removed) return Promise.resolve()
    return this.#forget(removed, reason)
  }

  /** The rest of a drop, for a variant already out of the index: accounting, the event, the files (queued). */
  #forget(removed: RemovedEntry, reason: DeleteReason): Promise<void> {
    const content = this.#release(removed.content)
    if (!this.#gone(removed, reason)) return Promise.resolve()
    const bucket = this.#removeBucket(removed.id)
    return content ? Promise.all([bucket, content]).then(() => undefined) : bucket
  }

  /**
   * The accounting and the event of a variant out of the index (#forget, #forgetLater). False
   * when it had nothing on disk: a memory-only body (a variant it replaced there had its index
   * line removed then).
   */
  #gone(removed: RemovedEntry, reason: DeleteReason): boolean {
    if (reason === 'evicted') this.#evictions++
    if (isMemoryOnlyIntegrity(removed.content.integrity)) {
      this.#emit({ type: 'deleted', key: removed.key, variant: removed.variant, reason, memoryOnly: true })
      return false
    }
    this.#emit({ type: 'deleted', key: removed.key, variant: removed.variant, reason })
    return true
  }

  #removeBucket(id: string): Promise<void> {
    // A commit queued after this removal puts its bucket back afterwards.
    return this.#track(this.#writer.run({ op: 'rm-bucket', id }).then((result) => this.#bucketRemoved(id, result)))
  }

  #bucketRemoved(id: string, result: JobResult): void {
    if (!result.ok) this.#log({ level: 'error', msg: 'cache could not remove an index entry', id, ...describeError(jobError(result)) })
  }

  #pin(integrity: string, size: number): { content: ContentRecord; created: boolean } {
    let content = this.#contents.get(integrity)
    const created = !content
    if (!content) {
      content = new StoredContent(this.#paths, integrity, size)
      this.#contents.set(integrity, content)
      this.#bytes += size
    }
    content.refs++
    return { content, created }
  }

  /** Drops one reference; the last one removes the file (queued after any write of it queued before). */
  #release(content: ContentRecord): Promise<void> | undefined {
    const file = this.#unpin(content)
    if (file === undefined) return undefined
    return this.#track(this.#writer.run({ op: 'rm-content', path: file }).then((result) => this.#contentRemoved(file, result)))
  }

  /** Drops one reference; the content file to remove when that was the last (none for a body the writer has not hashed: #digested removes it). */
  #unpin(content: ContentRecord): string | undefined {
    content.refs--
    if (content.refs > 0 || this.#contents.get(content.integrity) !== content) return undefined
    this.#contents.delete(content.integrity)
    this.#bytes -= content.size
    if (isPendingIntegrity(content.integrity)) return undefined
    this.#files.forget(content.path)
    return content.path
  }

  #contentRemoved(file: string, result: JobResult): void {
    if (!result.ok) this.#log({ level: 'error', msg: 'cache could not remove a content file', path: file, ...describeError(jobError(result)) })
  }

  /** Evicts least recently read entries until the body bytes and the entries on disk fit their budgets. */
  #evict(): void {
    if (!this.#overBudget()) return
    // Entries kept in memory only take nothing of the disk budgets (the memory tier evicts them):
    // the index leaves them out of this order and out of onDiskCount.
    for (const handle of this.#index.leastRecentlyUsed()) {
      if (!this.#overBudget()) break
      this.#drop(handle, 'evicted')
    }
  }

  #overBudget(): boolean {
    return this.#bytes > this.#maxBytes || this.#index.onDiskCount > this.#maxEntries
  }

  /** Keeps at most maxVariants variants under a key: the least recently used go (a Vary on a field with many values must not grow one key without bound). */
  #capVariants(key: string): void {
    const count = this.#index.variantCount(key)
    if (count <= this.#maxVariants) return
    const variants = this.#index.variantsOf(key).sort((a, b) => this.#index.recency(a) - this.#index.recency(b))
    for (let i = 0; i < count - this.#maxVariants; i++) this.#drop(variants[i]!, 'evicted')
  }

  async delete(key: string, variant?: string): Promise<number> {
    const handles = variant === undefined ? this.#index.variantsOf(key) : [this.#index.find(key, variant)].filter((h) => h !== undefined)
    // A large body still being written for this key must not appear after the delete.
    // (Its index line may be queued already: a bucket removal queued now runs after it.)
    const writing = variant === undefined ? [...this.#lastCommit.keys()].filter((id) => id.startsWith(`${key}\u0000`)) : [entryId(key, variant)].filter((id) => this.#lastCommit.has(id))
    for (const id of writing) {
      this.#lastCommit.delete(id)
      if (this.#index.find(key, id.slice(key.length + 1)) === undefined) void this.#removeBucket(id)
    }
    await Promise.all(handles.map((handle) => this.#drop(handle, 'purged')))
    return handles.length
  }

  /**
   * One pass over the index takes each match out of it (so it is no longer
   * served, listed or counted), letting the event loop turn every few
   * milliseconds, so a purge of 10,000 entries never stalls the requests
   * being served; while it runs, a lookup of an entry it covers and has not
   * reached yet drops that entry at once (#removing). It resolves then, with
   * the count. The rest of each drop (byte accounting, the 'deleted' event,
   * the files) follows in the background, yielding likewise; drain() and
   * close() wait for it. A predicate that throws stops the pass: what it
   * matched before is removed, the rest stays.
   */
  async deleteWhere(predicate: (meta: PurgeFields) => boolean, reason: 'purged' | 'cleared' = 'purged'): Promise<number> {
    const removed: RemovedEntry[] = []
    const budget = this.#turnBudget()
    const removal: Removal = { predicate, reason, since: this.#now(), dropped: 0 }
    this.#removing.add(removal)
    try {
      // Taken now: variants stored while this runs are newer than the purge.
      for (const handle of this.#index.handles()) {
        while (budget.spent()) await budget.next()
        if (this.#index.live(handle) && predicate(this.#index.purgeFields(handle))) {
          const entry = this.#index.remove(handle)
          if (entry) removed.push(entry)
        }
      }
    } finally {
      this.#removing.delete(removal)
      if (removed.length > 0) void this.#track(this.#forgetAll(removed, reason))
    }
    return removal.dropped + removed.length
  }

  /**
   * #forget for entries already out of the index, a few milliseconds per turn of the event loop,
   * their files' removals queued no faster than the disk writer carries them out (within its
   * bound on queued jobs, as a fill's writes are). A purge of 10,000 entries queued 20,000
   * removals at once, each with its promises and callbacks: they outlived young-generation
   * collections while the writer worked through them, and the nodes' event loops spent their
   * turns in scavenges copying them. drain() waits for the removals through the writer's.
   */
  async #forgetAll(removed: readonly RemovedEntry[], reason: DeleteReason): Promise<void> {
    const budget = this.#turnBudget()
    for (const entry of removed) {
      while (budget.spent()) await budget.next()
      if (!this.#writer.hasRoom(0)) await this.#writer.room(0)
      this.#forgetLater(entry, reason)
    }
  }

  /**
   * #forget for a variant taken out of the index some turns ago: its removals queued with a
   * callback each, no promise. Its index bucket stays if the variant was stored again meanwhile
   * (the new copy's bucket: its write is queued, or will be, and a removal queued now would run
   * after it and take it).
   */
  #forgetLater(removed: RemovedEntry, reason: DeleteReason): void {
    const file = this.#unpin(removed.content)
    if (!this.#gone(removed, reason)) return
    if (file !== undefined) this.#writer.enqueue({ op: 'rm-content', path: file }, (result) => this.#contentRemoved(file, result))
    if (this.#index.find(removed.key, removed.variant) !== undefined || this.#lastCommit.has(removed.id)) return
    this.#writer.enqueue({ op: 'rm-bucket', id: removed.id }, (result) => this.#bucketRemoved(removed.id, result))
  }

  /**
   * One pass over the index, letting the event loop turn every few
   * milliseconds like deleteWhere. Each mark is new metadata in the index now
   * (so the next lookup revalidates) and one index line queued for the disk
   * writer, so a restart loads the entry still marked.
   */
  async markStale(purgedAt: (meta: PurgeFields) => number | undefined): Promise<number> {
    const marks: Array<{ handle: Handle; at: number }> = []
    const budget = this.#turnBudget()
    const alreadyMarked = (meta: EntryMeta, at: number) => meta.softPurgedAt !== undefined && meta.softPurgedAt >= at
    for (const handle of this.#index.handles()) {
      while (budget.spent()) await budget.next()
      if (this.#index.live(handle)) {
        // Decoded whole only when the purge covers it.
        const at = purgedAt(this.#index.purgeFields(handle))
        if (at !== undefined && !alreadyMarked(this.#index.meta(handle), at)) marks.push({ handle, at })
      }
    }
    let marked = 0
    for (const { handle, at } of marks) {
      while (budget.spent()) await budget.next()
      // Gone, replaced or marked later meanwhile: the mark was for the entry as it was.
      const current = this.#index.live(handle) ? this.#index.meta(handle) : undefined
      if (current && !alreadyMarked(current, at)) {
        marked++
        const meta = freezeMeta(plainCopy(current, { softPurgedAt: at, staleAt: Math.min(current.staleAt, at) }))
        const metadataJson = JSON.stringify(storedMetadata(meta))
        this.#index.updateMeta(handle, meta)
        // Should the line not be written, the mark still applies in this process; a restart would load the entry unmarked.
        void this.#writeIndexLine(handle, meta, metadataJson)
      }
    }
    return marked
  }

  async clear(): Promise<number> {
    const removed = this.#index.clear()
    this.#contents.clear()
    this.#lastCommit.clear()
    this.#files.closeAll()
    this.#bytes = 0
    for (const entry of removed) this.#emit({ type: 'deleted', key: entry.key, variant: entry.variant, reason: 'cleared' })
    const result = await this.#track(this.#writer.run({ op: 'clear' }))
    if (!result.ok) {
      const error = jobError(result)
      this.#log({ level: 'error', msg: 'cache clear could not remove files', dir: this.dir, ...describeError(error) })
      throw error
    }
    return removed.length
  }

  // ---- listing, stats, events, lifecycle ----------------------------------

  /**
   * One page of the index, newest first, optionally filtered by url: a pass over every entry
   * (the total counts them all), LIST_STEP entries at a time, yielding to the event loop when
   * the turn's slice is used, so a filter over a million entries never holds a turn.
   */
  async list(options: ListOptions = {}): Promise<{ total: number; entries: ListedEntry[] }> {
    const scan = this.#index.listScan(options)
    const budget = this.#turnBudget()
    try {
      do {
        while (budget.spent()) await budget.next()
      } while (!scan.step(LIST_STEP))
    } finally {
      scan.close()
    }
    const page = scan.page()
    return {
      total: page.total,
      // A variant on the page removed while the scan went on is left out.
      entries: page.records.filter((handle) => this.#index.live(handle)).map((handle) => ({ ...this.#index.meta(handle), inMemory: false, lastAccess: this.#index.lastAccess(handle) })),
    }
  }

  stats(): StoreStats {
    const queue = this.#writer.stats()
    return {
      entries: this.#index.size,
      bytes: this.#bytes,
      diskEntries: this.#index.onDiskCount,
      ...(Number.isFinite(this.#maxEntries) ? { maxEntries: this.#maxEntries } : {}),
      memoryEntries: 0,
      memoryBytes: 0,
      integrityFailures: this.#integrityFailures,
      writeFailures: this.#writeFailures,
      writesSkipped: this.#writesSkipped,
      writesMemoryOnly: this.#writesMemoryOnly,
      writeQueueJobs: queue.jobs,
      writeQueueBytes: queue.bytes,
      writeThreadSharedBytes: queue.threadSharedBytes,
      indexBytes: this.#index.slotBytes + this.#index.packedBytes.held,
      indexPackedLiveBytes: this.#index.packedBytes.live,
      evictions: this.#evictions,
    }
  }

  writeQueue(): DiskWriterStats {
    return this.#writer.stats()
  }

  onDigest(listener: (id: string, placeholder: string, integrity: string) => void): () => void {
    this.#digestListeners.add(listener)
    return () => {
      this.#digestListeners.delete(listener)
    }
  }

  writeRoom(size: number): Promise<void> {
    return this.#writer.room(size)
  }

  full(): boolean {
    // Eviction keeps both just under their budget once the disk has filled: within 5% is full.
    return this.#bytes >= this.#maxBytes * FULL_SHARE || this.#index.onDiskCount >= this.#maxEntries * FULL_SHARE
  }

  readonly makeSlabs: SlabMaker = (bytes, count, ready) => this.#writer.makeSlabs(bytes, count, ready)

  /** Nothing here: a variant kept in memory only is the tiered store's to write (tiered-store.ts). */
  askedAgain(): void {}

  async drain(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
    await this.#writer.drain()
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    this.#listeners.add(listener)
    return () => {
      this.#listeners.delete(listener)
    }
  }

  #emit(event: StoreEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event)
      } catch (error) {
        // A broken subscriber must not break the store operation that emitted.
        this.#log({ level: 'error', msg: 'cache event listener failed', event: event.type, ...describeError(error) })
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.drain()
    await this.#writer.close()
    await this.#bodyReader.close()
    this.#files.closeAll()
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inflight.add(promise)
    const done = (): void => {
      this.#inflight.delete(promise)
    }
    promise.then(done, done)
    return promise
  }
}


function clampRange(range: ByteRange, size: number): ByteRange {
  const { start, end } = range
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || start >= size) {
    throw new RangeError(`unsatisfiable range ${start}-${end} for a body of ${size} bytes`)
  }
  return { start, end: Math.min(end, size - 1) }
}


async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir)
  } catch (error) {
    if (isMissing(error)) return []
    throw error
  }
}

// ---- the writer handed to the proxy -----------------------------------------

/** Why a body is not the one a writer was told to expect; undefined when it is. */
function unexpectedBody(expected: ExpectedBody, got: { size: number; integrity?: string }): Error | undefined {
  if (got.size === expected.size && got.integrity === expected.integrity) return undefined
  const what = got.size === expected.size ? 'its digest differs' : `${got.size} bytes instead of ${expected.size}`
  return Object.assign(new Error(`the body is not the one expected (${what}); nothing was stored`), { code: 'EINTEGRITY' })
}

interface WriterHost {
  closed(): boolean
  /** `algorithm`: what a body that spills is hashed by (an expected body's own; else the store's). */
  newBody(onFailure: (error: unknown) => void, algorithm: ContentAlgorithm | undefined): PendingBody
  commitBuffered(entry: NewEntry, metadataJson: string, body: BufferedBody): CommittedBody | undefined
  releaseBody(body: Buffer): void
  commitSpilled(
    entry: NewEntry,
    metadataJson: string,
    body: PendingBody,
    reportFailure: (error: unknown) => void,
    expected: ExpectedBody | undefined,
  ): Promise<CommittedBody | undefined>
  commitExpected(entry: NewEntry, metadataJson: string, body: BufferedBody, expected: ExpectedBody): Promise<CommittedBody | undefined>
  discard(entry: NewEntry, body: PendingBody): void
  reportFailure(key: string, error: unknown): void
}

class EntryWriterImpl implements DiskEntryWriter {
  readonly #host: WriterHost
  readonly #entry: NewEntry
  readonly #metadataJson: string
  readonly #expected: ExpectedBody | undefined
  readonly #body: PendingBody
  #state: 'open' | 'given-up' | 'committing' | 'aborted'
  #result: Promise<CommittedBody | undefined> | undefined
  #failureReported = false

  constructor(host: WriterHost, entry: NewEntry, metadataJson: string, expected: ExpectedBody | undefined) {
    this.#host = host
    this.#entry = entry
    this.#metadataJson = metadataJson
    this.#expected = expected
    this.#body = host.newBody((error) => this.#reportFailure(error), expected && algorithmOf(expected.integrity))
    this.#state = host.closed() ? 'given-up' : 'open'
  }

  write(chunk: Uint8Array): boolean {
    if (this.#state !== 'open') return false
    const outcome = this.#body.write(chunk)
    if (outcome === 'ok') return true
    // Too large or failed: give up now so the proxy stops feeding us; the
    // response itself keeps streaming to the client.
    this.#state = 'given-up'
    this.#host.discard(this.#entry, this.#body)
    return false
  }

  async commit(): Promise<EntryMeta | undefined> {
    return (await this.commitWithBody())?.meta
  }

  commitWithBody(): Promise<CommittedBody | undefined> {
    if (!this.#result) {
      if (this.#state === 'open' && !this.#host.closed()) {
        this.#state = 'committing'
        // Every buffered body is hashed by the disk writer's thread; one that must match an
        // expected digest becomes visible once that thread has checked and written it.
        const buffered = this.#body.buffered()
        const mismatch = buffered && this.#expected && buffered.size !== this.#expected.size ? unexpectedBody(this.#expected, buffered) : undefined
        if (mismatch) this.#host.releaseBody(buffered!.body)
        this.#result = mismatch
          ? Promise.reject(mismatch)
          : buffered
            ? this.#expected
              ? this.#host.commitExpected(this.#entry, this.#metadataJson, buffered, this.#expected)
              : Promise.resolve(this.#host.commitBuffered(this.#entry, this.#metadataJson, buffered))
            : this.#host.commitSpilled(this.#entry, this.#metadataJson, this.#body, (error) => this.#reportFailure(error), this.#expected)
      } else {
        if (this.#state === 'open') this.abort()
        this.#result = Promise.resolve(undefined)
      }
    }
    return this.#result
  }

  abort(): void {
    if (this.#state !== 'open') return
    this.#state = 'aborted'
    this.#host.discard(this.#entry, this.#body)
  }

  #reportFailure(error: unknown): void {
    if (this.#failureReported) return
    this.#failureReported = true
    this.#host.reportFailure(this.#entry.key, error)
  }
}
