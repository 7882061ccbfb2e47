// The disk tier: bodies and metadata in a cacache directory, served through
// an in-memory index so a hit costs one open/fstat/read/close and no cacache
// call. cacache stays the on-disk format (index buckets with our EntryMeta as
// `metadata`, content-addressed body files), so the directory survives
// restarts and can be inspected with cacache's own tools.
//
// Invariants:
// - The in-memory index is the truth while running; disk follows it.
// - Per entry, disk operations run in call order (KeyedSerial by entry id), so
//   the last commit() called wins; per content file likewise (by path).
// - A content file is shared by every entry with the same digest and removed
//   when the last one goes (reference count in ContentRecord.refs).

import { mkdir, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import cacache from 'cacache'
import { type ContentRead, SMALL_BODY_BYTES, contentDir, contentPath, isMissing, moveIntoPlace, readContent, readTrustedNow } from './content-file.ts'
import { type ContentRecord, EntryIndex, type IndexRecord, entryId } from './entry-index.ts'
import { type FinishedBody, PendingBody } from './pending-body.ts'
import { OpenFiles } from './open-files.ts'
import { KeyedSerial, SharedExclusiveGate, WorkQueue } from './serial.ts'
import type {
  ByteRange,
  CacheStore,
  EntryMeta,
  EntryWriter,
  ListOptions,
  ListedEntry,
  NewEntry,
  StoreEvent,
  StoreStats,
  StoredBody,
} from './types.ts'

export { SMALL_BODY_BYTES, entryId }

export type LogFn = (obj: Record<string, unknown>) => void

export interface DiskStoreOptions {
  /** The cacache directory; created when missing. One process per directory. */
  dir: string
  /** Budget for body bytes on disk; least recently read entries are evicted beyond it. */
  maxBytes: number
  /** Bodies larger than this are not stored. */
  maxObjectBytes: number
  log?: LogFn
}

export interface CommittedBody {
  meta: EntryMeta
  /** The body, when it was small enough to be buffered while writing. */
  body?: Buffer
}

export interface DiskEntryWriter extends EntryWriter {
  /** commit(), also handing back a buffered body so the memory tier can keep it without reading it back. */
  commitWithBody(): Promise<CommittedBody | undefined>
}

export interface DiskStore extends CacheStore {
  readonly dir: string
  writer(entry: NewEntry): DiskEntryWriter
  /** The current metadata of a variant, marking it recently used (memory-tier hits call this so disk LRU sees them). */
  touch(key: string, variant: string): EntryMeta | undefined
  /** read(), plus the metadata the returned body belongs to. */
  readWithMeta(key: string, variant: string, range?: ByteRange): Promise<{ body: StoredBody; meta: EntryMeta } | undefined>
}

/** Content files kept open for fast hits (the hottest ones; each costs one descriptor). */
const OPEN_FILES = 256

/** Updates append a line to the entry's cacache bucket; past this many, the bucket is rewritten with the newest only. */
const COMPACT_AFTER_LINES = 8
/** File removals in flight at once: enough to keep a disk busy, few enough to leave libuv's threads to reads and commits. */
const REMOVAL_CONCURRENCY = 8
/** Longest stretch a bulk delete runs before letting the event loop serve requests, in ms. */
const YIELD_EVERY_MS = 4

type DeleteReason = Extract<StoreEvent, { type: 'deleted' }>['reason']

export async function createDiskStore(opts: DiskStoreOptions): Promise<DiskStore> {
  for (const name of ['maxBytes', 'maxObjectBytes'] as const) {
    if (!Number.isSafeInteger(opts[name]) || opts[name] < 0) throw new RangeError(`disk store ${name} must be a non-negative integer, got ${opts[name]}`)
  }
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
function safeLog(log: LogFn): LogFn {
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

function isExpired(meta: EntryMeta, now: number): boolean {
  // A deleteAt that is not a finite number (lost Infinity, null) means "no limit".
  return typeof meta.deleteAt === 'number' && Number.isFinite(meta.deleteAt) && meta.deleteAt <= now
}

/** Metadata is shared with every caller of variants()/read(): freeze it so a caller cannot change the index by accident. */
function freezeMeta(meta: EntryMeta): EntryMeta {
  Object.freeze(meta.headers)
  Object.freeze(meta.varyHeaders)
  Object.freeze(meta.tags)
  return Object.freeze(meta)
}

/** What goes into cacache's `metadata`: everything but size and integrity, which cacache records itself. */
function storedMetadata(meta: NewEntry | EntryMeta): NewEntry {
  const { size: _size, integrity: _integrity, ...rest } = meta as EntryMeta
  return rest
}

function snapshot<T>(value: T): T {
  // A JSON round trip: the caller may keep mutating its object, and what is
  // in memory must be exactly what a restart will read back from disk.
  return JSON.parse(JSON.stringify(value)) as T
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

// @types/cacache leaves out options cacache supports: `time` on insert (keeps
// the commit time across metadata updates) and `removeFully` on delete
// (removes the bucket file instead of appending a tombstone line).
const insertIndex = cacache.index.insert as (
  cache: string,
  key: string,
  integrity: string,
  opts: { metadata: unknown; size: number; time: number },
) => Promise<cacache.CacheObject | undefined>
const removeIndex = cacache.rm.entry as (cache: string, key: string, opts: { removeFully: boolean }) => Promise<unknown>

class CacacheDiskStore implements DiskStore {
  readonly dir: string
  readonly #maxBytes: number
  readonly #maxObjectBytes: number
  readonly #log: LogFn
  readonly #tmpDir: string
  readonly #index = new EntryIndex()
  /** Content files by path. */
  readonly #contents = new Map<string, ContentRecord>()
  /** Bytes of all content files referenced (including ones being committed). */
  #bytes = 0
  #integrityFailures = 0
  #writeFailures = 0
  #evictions = 0
  readonly #listeners = new Set<(event: StoreEvent) => void>()
  readonly #entryOps = new KeyedSerial()
  readonly #contentOps = new KeyedSerial()
  readonly #gate = new SharedExclusiveGate()
  /** File removals (index buckets, content files), REMOVAL_CONCURRENCY at a time; see WorkQueue. */
  readonly #removals = new WorkQueue(REMOVAL_CONCURRENCY)
  readonly #files: OpenFiles
  /** Background work close() must wait for. Every tracked promise resolves; failures are logged where they happen. */
  readonly #inflight = new Set<Promise<unknown>>()
  #closed = false

  constructor(opts: DiskStoreOptions) {
    this.dir = opts.dir
    this.#maxBytes = opts.maxBytes
    this.#maxObjectBytes = opts.maxObjectBytes
    this.#log = safeLog(opts.log ?? defaultLog)
    this.#tmpDir = path.join(opts.dir, 'tmp')
    this.#files = new OpenFiles({
      max: OPEN_FILES,
      onCloseError: (error, file) => this.#log({ level: 'warn', msg: 'cache could not close a content file', path: file, ...describeError(error) }),
    })
  }

  // ---- start-up -----------------------------------------------------------

  /** Rebuilds the in-memory index from cacache's index, then cleans up in the background. */
  async load(): Promise<void> {
    const now = Date.now()
    const loaded: IndexRecord[] = []
    const unwanted: string[] = []
    // @types/cacache types the stream's items as the whole ls() object; each is one entry.
    const entries = cacache.ls.stream(this.dir) as unknown as AsyncIterable<cacache.CacheObject>
    for await (const entry of entries) {
      const record = this.#recordFromDisk(entry, now)
      if (record) loaded.push(record)
      else unwanted.push(entry.key)
    }
    loaded.sort((a, b) => a.committedAt - b.committedAt)
    for (const record of loaded) {
      record.content = this.#pin(record.meta.integrity, record.meta.size)
      this.#index.set(record)
    }
    if (unwanted.length > 0) this.#log({ level: 'info', msg: 'cache dropping expired or unreadable entries at start', count: unwanted.length })
    this.#track(this.#cleanUp(unwanted))
    // A budget lowered since the last run applies at once.
    this.#track(this.#evict())
  }

  #recordFromDisk(entry: cacache.CacheObject, now: number): IndexRecord | undefined {
    const metadata: unknown = entry.metadata
    if (!isMetadata(metadata) || entryId(metadata.key, metadata.variant) !== entry.key) return undefined
    const path = contentPath(this.dir, entry.integrity)
    if (!path || typeof entry.size !== 'number') return undefined
    const meta = freezeMeta({ ...metadata, size: entry.size, integrity: entry.integrity })
    if (isExpired(meta, now)) return undefined
    const content: ContentRecord = { integrity: entry.integrity, path, size: entry.size, refs: 0 }
    // lastAccess is not persisted (that would be a write per hit): after a
    // restart, recency starts from commit order.
    return { id: entry.key, meta, content, committedAt: entry.time, lastAccess: entry.time, urlLower: meta.url.toLowerCase(), indexLines: 1 }
  }

  /** Removes index buckets not loaded, then content files nothing references (crash leftovers, expired entries). */
  async #cleanUp(unwantedIds: string[]): Promise<void> {
    for (const id of unwantedIds) await this.#removeBucket(id)
    const root = path.join(contentDir(this.dir), 'sha512')
    let removed = 0
    try {
      for (const a of await readdirOrEmpty(root)) {
        for (const b of await readdirOrEmpty(path.join(root, a))) {
          for (const name of await readdirOrEmpty(path.join(root, a, b))) {
            const file = path.join(root, a, b, name)
            if (this.#contents.has(file)) continue
            const gone = await this.#gate.shared(() =>
              this.#contentOps.run(file, async () => {
                // Checked again in turn: a commit may have claimed the file meanwhile.
                if (this.#contents.has(file)) return false
                await rm(file, { force: true })
                return true
              }),
            )
            if (gone) removed++
          }
        }
      }
    } catch (error) {
      this.#log({ level: 'warn', msg: 'cache orphan sweep failed', dir: this.dir, ...describeError(error) })
    }
    if (removed > 0) this.#log({ level: 'info', msg: 'cache removed unreferenced content files', count: removed })
  }

  // ---- reads --------------------------------------------------------------

  /** The live record of a variant, or undefined; drops it when expired. */
  #current(key: string, variant: string, touch: boolean): IndexRecord | undefined {
    const id = entryId(key, variant)
    const now = Date.now()
    const record = touch ? this.#index.touch(id, now) : this.#index.get(id)
    if (!record) return undefined
    if (isExpired(record.meta, now)) {
      void this.#drop(record, 'expired')
      return undefined
    }
    return record
  }

  async variants(key: string): Promise<EntryMeta[]> {
    return this.variantsNow(key)
  }

  variantsNow(key: string): EntryMeta[] {
    const now = Date.now()
    const metas: EntryMeta[] = []
    for (const record of this.#index.variantsOf(key)) {
      if (isExpired(record.meta, now)) void this.#drop(record, 'expired')
      else metas.push(record.meta)
    }
    return metas
  }

  touch(key: string, variant: string): EntryMeta | undefined {
    return this.#current(key, variant, true)?.meta
  }

  async read(key: string, variant: string, range?: ByteRange): Promise<StoredBody | undefined> {
    return (await this.readWithMeta(key, variant, range))?.body
  }

  readNow(key: string, variant: string, range?: ByteRange): StoredBody | undefined {
    const record = this.#current(key, variant, true)
    if (!record) return undefined
    return readTrustedNow(this.#files, record.content, range ? clampRange(range, record.meta.size) : undefined)
  }

  async readWithMeta(key: string, variant: string, range?: ByteRange): Promise<{ body: StoredBody; meta: EntryMeta } | undefined> {
    const record = this.#current(key, variant, true)
    if (!record) return undefined
    const clamped = range ? clampRange(range, record.meta.size) : undefined
    let result: ContentRead
    try {
      result = await readContent(this.#files, record.content, clamped, { onStreamCorrupt: () => this.#corrupt(record, 'corrupt') })
    } catch (error) {
      // EMFILE, EIO...: not proof of corruption, so keep the entry and let the
      // caller fetch from the origin this time.
      this.#log({ level: 'warn', msg: 'cache read failed', key, variant, ...describeError(error) })
      return undefined
    }
    if (!result.ok) {
      this.#corrupt(record, result.reason)
      return undefined
    }
    return { body: result.body, meta: record.meta }
  }

  /** A body that does not match its integrity (or is gone) is never served: count it and drop the entry. */
  #corrupt(record: IndexRecord, reason: 'missing' | 'corrupt'): void {
    if (this.#index.get(record.id) !== record) return // already dropped or replaced: counted once
    this.#integrityFailures++
    record.content.verified = undefined
    this.#files.forget(record.content.path)
    this.#log({ level: 'warn', msg: 'cache body failed its integrity check', key: record.meta.key, variant: record.meta.variant, reason, path: record.content.path })
    this.#emit({ type: 'integrity-failure', key: record.meta.key, variant: record.meta.variant })
    void this.#drop(record, 'corrupt')
  }

  // ---- writes -------------------------------------------------------------

  writer(entry: NewEntry): DiskEntryWriter {
    return new DiskWriter(this.#writerHost, snapshot(storedMetadata(entry)))
  }

  readonly #writerHost: WriterHost = {
    closed: () => this.#closed,
    newBody: (onFailure) => new PendingBody({ tmpDir: this.#tmpDir, maxBytes: this.#maxObjectBytes, onFailure }),
    commit: (entry, body, reportFailure) => this.#commit(entry, body, reportFailure),
    discard: (entry, body) => this.#track(this.#discard(entry, body)),
    reportFailure: (key, error) => this.#writeFailed(key, error),
  }

  #commit(entry: NewEntry, body: PendingBody, reportFailure: (error: unknown) => void): Promise<CommittedBody | undefined> {
    const id = entryId(entry.key, entry.variant)
    // Hashing and flushing the temp file overlap with other commits; only the
    // publishing step waits for this entry's turn (taken now, in call order).
    const finished = body.finish().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error }),
    )
    const published = this.#entryOps.run(id, async () => {
      const outcome = await finished
      if (!outcome.ok) {
        reportFailure(outcome.error)
        await this.#discard(entry, body)
        return undefined
      }
      try {
        return await this.#gate.shared(() => this.#publish(id, entry, outcome.value))
      } catch (error) {
        reportFailure(error)
        await this.#discard(entry, body)
        return undefined
      }
    })
    return this.#track(
      published.then(async (result) => {
        if (result) await this.#evict()
        return result
      }),
    )
  }

  async #publish(id: string, entry: NewEntry, finished: FinishedBody): Promise<CommittedBody> {
    const filePath = contentPath(this.dir, finished.integrity)
    if (!filePath) throw new Error(`unexpected integrity format: ${finished.integrity}`)
    const content = this.#pin(finished.integrity, finished.size)
    let published = false
    try {
      content.verified = await this.#contentOps.run(filePath, () => moveIntoPlace(finished.tmpPath, filePath))
      const committedAt = Date.now()
      const previous = this.#index.get(id)
      await this.#insertIndex(id, entry, finished, committedAt)
      published = true
      const meta = freezeMeta({ ...entry, size: finished.size, integrity: finished.integrity })
      const record: IndexRecord = {
        id,
        meta,
        content,
        committedAt,
        lastAccess: committedAt,
        urlLower: meta.url.toLowerCase(),
        indexLines: (previous?.indexLines ?? 0) + 1,
      }
      const replaced = this.#index.set(record)
      if (replaced) {
        this.#release(replaced.content)
        this.#emit({ type: 'deleted', key: meta.key, variant: meta.variant, reason: 'replaced' })
      }
      this.#emit({ type: 'stored', meta })
      await this.#maybeCompact(record)
      return { meta, body: finished.body }
    } finally {
      if (!published) this.#release(content)
    }
  }

  async #insertIndex(id: string, metadata: NewEntry, body: { integrity: string; size: number }, time: number): Promise<void> {
    const opts = { metadata, size: body.size, time }
    // cacache returns undefined instead of failing when the bucket directory
    // vanished between its mkdir and its append (cache dir removed): once more.
    const inserted = (await insertIndex(this.dir, id, body.integrity, opts)) ?? (await insertIndex(this.dir, id, body.integrity, opts))
    if (!inserted) throw Object.assign(new Error('cache index directory keeps disappearing'), { code: 'ENOENT' })
  }

  async #maybeCompact(record: IndexRecord): Promise<void> {
    if (record.indexLines <= COMPACT_AFTER_LINES) return
    try {
      // Keep only the newest line (matchFn "every line is the same entry").
      await cacache.index.compact(this.dir, record.id, () => true)
      record.indexLines = 1
    } catch (error) {
      this.#log({ level: 'warn', msg: 'cache index compaction failed', key: record.meta.key, ...describeError(error) })
    }
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
    const next = snapshot(storedMetadata(meta))
    const id = entryId(next.key, next.variant)
    await this.#track(
      this.#entryOps.run(id, () =>
        this.#gate.shared(async () => {
          const record = this.#index.get(id)
          if (!record) return
          // The body is untouched, so size and integrity stay those of the stored body.
          record.meta = freezeMeta({ ...next, size: record.meta.size, integrity: record.meta.integrity })
          record.urlLower = record.meta.url.toLowerCase()
          this.#emit({ type: 'stored', meta: record.meta })
          try {
            await this.#insertIndex(id, next, record.meta, record.committedAt)
            record.indexLines++
            await this.#maybeCompact(record)
          } catch (error) {
            // The new metadata still applies in this process; a restart falls back to the previous one.
            this.#writeFailed(next.key, error)
          }
        }),
      ),
    )
  }

  // ---- deletes and eviction -----------------------------------------------

  /**
   * Removes a record from the index now (so it is no longer served and no
   * longer counts against the budget) and from disk in its turn. Resolves when
   * the files are gone; never rejects (failures are logged).
   */
  #drop(record: IndexRecord, reason: DeleteReason): Promise<void> {
    if (this.#index.get(record.id) !== record) return Promise.resolve()
    this.#index.delete(record.id)
    return this.#forget(record, reason)
  }

  /** The rest of a drop, for a record already out of the index: accounting, the event, the files (queued). */
  #forget(record: IndexRecord, reason: DeleteReason): Promise<void> {
    if (reason === 'evicted') this.#evictions++
    this.#release(record.content)
    this.#emit({ type: 'deleted', key: record.meta.key, variant: record.meta.variant, reason })
    return this.#removeBucket(record.id)
  }

  #removeBucket(id: string): Promise<void> {
    return this.#removals.push(async () => {
      try {
        await this.#entryOps.run(id, () =>
          this.#gate.shared(async () => {
            // A commit since the drop may have stored the entry again: keep its bucket.
            if (!this.#index.get(id)) await removeIndex(this.dir, id, { removeFully: true })
          }),
        )
      } catch (error) {
        this.#log({ level: 'error', msg: 'cache could not remove an index entry', id, ...describeError(error) })
      }
    })
  }

  #pin(integrity: string, size: number): ContentRecord {
    const filePath = contentPath(this.dir, integrity) as string
    let content = this.#contents.get(filePath)
    if (!content) {
      content = { integrity, path: filePath, size, refs: 0 }
      this.#contents.set(filePath, content)
      this.#bytes += size
    }
    content.refs++
    return content
  }

  /**
   * Drops one reference; the last one removes the file, in the background
   * (in the file's turn: a commit that put the same content back since keeps it).
   */
  #release(content: ContentRecord): void {
    content.refs--
    if (content.refs > 0 || this.#contents.get(content.path) !== content) return
    this.#contents.delete(content.path)
    this.#bytes -= content.size
    this.#files.forget(content.path)
    void this.#removals.push(async () => {
      try {
        await this.#gate.shared(() =>
          this.#contentOps.run(content.path, async () => {
            if (!this.#contents.has(content.path)) await rm(content.path, { force: true })
          }),
        )
      } catch (error) {
        this.#log({ level: 'error', msg: 'cache could not remove a content file', path: content.path, ...describeError(error) })
      }
    })
  }

  /** Evicts least recently read entries until the body bytes fit the budget. */
  async #evict(): Promise<void> {
    if (this.#bytes <= this.#maxBytes) return
    const removals: Promise<void>[] = []
    for (const record of this.#index.leastRecentlyUsed()) {
      if (this.#bytes <= this.#maxBytes) break
      removals.push(this.#drop(record, 'evicted'))
    }
    await Promise.all(removals)
  }

  async delete(key: string, variant?: string): Promise<number> {
    const records = variant === undefined ? this.#index.variantsOf(key) : [this.#index.get(entryId(key, variant))].filter((r) => r !== undefined)
    await Promise.all(records.map((record) => this.#drop(record, 'purged')))
    return records.length
  }

  /**
   * One pass over the index decides (a predicate that throws leaves the store
   * untouched), then a second drops the matches: from the index (so they are
   * no longer served), the accounting and the events. Both passes let the
   * event loop turn every few milliseconds, so a purge of 10,000 entries
   * never stalls the requests being served; an entry read (and so moved in
   * the LRU order) meanwhile is dropped once. The files are removed in the
   * background, a few at a time (close() waits for them).
   */
  async deleteWhere(predicate: (meta: EntryMeta) => boolean, reason: 'purged' | 'cleared' = 'purged'): Promise<number> {
    const matches: IndexRecord[] = []
    let turnStarted = performance.now()
    const nextTurn = async () => {
      await new Promise<void>((resolve) => setImmediate(resolve))
      turnStarted = performance.now()
    }
    for (const record of this.#index.values()) {
      if (predicate(record.meta)) matches.push(record)
      if (performance.now() - turnStarted >= YIELD_EVERY_MS) await nextTurn()
    }
    let dropped = 0
    for (const record of matches) {
      if (this.#index.get(record.id) === record) {
        dropped++
        void this.#drop(record, reason)
      }
      if (performance.now() - turnStarted >= YIELD_EVERY_MS) await nextTurn()
    }
    return dropped
  }

  async clear(): Promise<number> {
    return this.#gate.exclusive(async () => {
      const records = this.#index.clear()
      this.#contents.clear()
      this.#files.closeAll()
      this.#bytes = 0
      for (const record of records) this.#emit({ type: 'deleted', key: record.meta.key, variant: record.meta.variant, reason: 'cleared' })
      try {
        await cacache.rm.all(this.dir)
      } catch (error) {
        this.#log({ level: 'error', msg: 'cache clear could not remove files', dir: this.dir, ...describeError(error) })
        throw error
      }
      return records.length
    })
  }

  // ---- listing, stats, events, lifecycle ----------------------------------

  async list(options: ListOptions = {}): Promise<{ total: number; entries: ListedEntry[] }> {
    const page = this.#index.list(options)
    return {
      total: page.total,
      entries: page.records.map((record) => ({ ...record.meta, inMemory: false, lastAccess: record.lastAccess })),
    }
  }

  stats(): StoreStats {
    return {
      entries: this.#index.size,
      bytes: this.#bytes,
      memoryEntries: 0,
      memoryBytes: 0,
      integrityFailures: this.#integrityFailures,
      writeFailures: this.#writeFailures,
      evictions: this.#evictions,
    }
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
    while (this.#inflight.size > 0 || this.#removals.pending > 0) await Promise.all([...this.#inflight, this.#removals.idle()])
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

interface WriterHost {
  closed(): boolean
  newBody(onFailure: (error: unknown) => void): PendingBody
  commit(entry: NewEntry, body: PendingBody, reportFailure: (error: unknown) => void): Promise<CommittedBody | undefined>
  discard(entry: NewEntry, body: PendingBody): void
  reportFailure(key: string, error: unknown): void
}

class DiskWriter implements DiskEntryWriter {
  readonly #host: WriterHost
  readonly #entry: NewEntry
  readonly #body: PendingBody
  #state: 'open' | 'given-up' | 'committing' | 'aborted'
  #result: Promise<CommittedBody | undefined> | undefined
  #failureReported = false

  constructor(host: WriterHost, entry: NewEntry) {
    this.#host = host
    this.#entry = entry
    this.#body = host.newBody((error) => this.#reportFailure(error))
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
      if (this.#state === 'open') {
        this.#state = 'committing'
        this.#result = this.#host.commit(this.#entry, this.#body, (error) => this.#reportFailure(error))
      } else {
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
