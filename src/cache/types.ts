// The storage contract the proxy depends on. Stores never parse Cache-Control
// or Vary: the proxy (proxy/policy.ts) decides, and hands the store absolute
// timestamps and an opaque serialised policy.

import type { Readable } from 'node:stream'

/** Metadata of one stored response variant. Everything here is JSON-safe. */
/** What a purge matches an entry on (manifest/purge.ts purgeCovers), and which variant it is: the store's bulk passes read only these. */
export type PurgeFields = Pick<EntryMeta, 'key' | 'variant' | 'url' | 'host' | 'tags' | 'storedAt'>

export interface EntryMeta {
  /** Primary cache key: scheme + host + path + query (see proxy/cache-key.ts). */
  key: string
  /** Variant id under the key: '' when the response has no Vary, else a digest of the Vary'd request headers. */
  variant: string
  /** Absolute request URL, for listings and purges by URL / prefix. */
  url: string
  /** Host the entry belongs to (lower case, no port when default). */
  host: string
  status: number
  /** Response headers exactly as they will be served (hop-by-hop and Set-Cookie already removed). */
  headers: Record<string, string>
  /** Request headers named by Vary (already normalised), needed to rebuild the policy. */
  varyHeaders: Record<string, string>
  /** The freshness policy proxy/policy.ts worked out when storing (FreshnessPolicy); only the proxy reads it. */
  policy: unknown
  /** Epoch ms when the response was received. */
  storedAt: number
  /** Epoch ms when the entry turns stale (no longer fresh). */
  staleAt: number
  /** Epoch ms after which the entry is useless even for stale-while-revalidate / stale-if-error; the store may drop it. */
  deleteAt: number
  /** Body length in bytes. */
  size: number
  /**
   * Subresource integrity of the body (sha256; sha512 for bodies stored by older versions, see
   * content-file.ts CONTENT_ALGORITHMS), set by the store. A body the store hashes as
   * it writes it behind (off the main thread) is known meanwhile by a placeholder unique to it
   * (see isPendingIntegrity), which gives way to the digest once the body is on disk.
   */
  integrity: string
  /** Cache tags from Surrogate-Key / Cache-Tag, for purge by tag. */
  tags: string[]
  contentType: string
  /**
   * The origin the response came from (its base URL, e.g. `https://origin.example/`). The proxy
   * treats an entry from another origin as absent (CAJE_ORIGIN or a site's origin changed).
   * Absent on entries stored before it was recorded.
   */
  origin?: string
  /** How this node got the entry: absent for a client's request; `populate` (from the origin) or `peer:<node id>`. */
  via?: string
  /**
   * Epoch ms of the soft purge that marked this entry stale (its staleAt is then no later). The
   * proxy revalidates such an entry with the origin before serving it again; a 304 or a new
   * response ends the mark. Absent: not soft-purged.
   */
  softPurgedAt?: number
}

/** The placeholder integrity of a body not hashed yet (EntryMeta.integrity): never a valid SRI. */
export function pendingIntegrity(seq: number): string {
  return `pending-${seq}`
}

export function isPendingIntegrity(integrity: string): boolean {
  return integrity.startsWith('pending-')
}

/**
 * The placeholder integrity of a body kept in the memory tier only (the disk write queue was
 * full when it was stored): a pending integrity that never gives way to a digest, as the body
 * is never written. Such an entry is not on disk, so it is never announced as held by this
 * node nor handed to a peer: its body goes when the memory tier lets go of it.
 */
export function memoryOnlyIntegrity(seq: number): string {
  return `pending-memory-${seq}`
}

export function isMemoryOnlyIntegrity(integrity: string): boolean {
  return integrity.startsWith('pending-memory-')
}

/**
 * Whether `now` is still the stored body `before` described: the same commit (storedAt, size),
 * with the same integrity, or with the digest that has since replaced `before`'s placeholder.
 */
export function sameStoredBody(before: EntryMeta, now: EntryMeta | undefined): boolean {
  if (now === undefined || now.storedAt !== before.storedAt || now.size !== before.size) return false
  return now.integrity === before.integrity || (isPendingIntegrity(before.integrity) && !isPendingIntegrity(now.integrity))
}

/** What the proxy hands the store to write: the store computes size and integrity itself. */
export type NewEntry = Omit<EntryMeta, 'size' | 'integrity'>

/**
 * A body read from the store. `buffer` when it came from memory (or is small), else a stream.
 * A buffer with a `loan` lives in memory the store uses again for other bodies once the loan is
 * given back: the reader gives it back (once) when nothing reads the buffer any more (the
 * response holding it written out, or its connection closed). A loan never given back only
 * keeps that memory from being used again.
 */
export type StoredBody =
  | { kind: 'buffer'; buffer: Buffer; tier: 'memory' | 'disk'; loan?: BodyLoan }
  | { kind: 'stream'; stream: Readable; tier: 'disk' }

/** See StoredBody. */
export interface BodyLoan {
  giveBack(): void
}

/** The body a writer must receive (see CacheStore.writer). */
export interface ExpectedBody {
  size: number
  /** Subresource Integrity, as EntryMeta.integrity (sha256, or sha512 from a peer running an older version). */
  integrity: string
}

/** A body now, a body later, or none. */
export type BodyLookup = StoredBody | undefined | Promise<StoredBody | undefined>

/** Byte range (inclusive), for 206 answers straight from the store. */
export interface ByteRange {
  start: number
  end: number
}

/**
 * A pending write. The proxy feeds it the body as it streams to the client;
 * nothing becomes visible until commit() resolves, and abort() (or a body over
 * the per-object limit) leaves nothing behind.
 */
export interface EntryWriter {
  /** Append a chunk. Returns false once the writer has given up (too large or failed): stop feeding it. */
  write(chunk: Uint8Array): boolean
  /** Finish: verify, persist atomically, make visible. Resolves to the stored meta, or undefined if the write was given up. */
  commit(): Promise<EntryMeta | undefined>
  /** Discard everything written so far. Safe to call more than once or after commit. */
  abort(reason?: unknown): void
}

export type StoreEvent =
  /** A variant stored or its metadata updated; kept in memory only when its integrity says so (isMemoryOnlyIntegrity). */
  | { type: 'stored'; meta: EntryMeta }
  /**
   * reason 'memory-only': a variant on disk replaced by one kept in memory only, so this node no
   * longer holds it on disk. `memoryOnly`: the variant removed was kept in memory only (never
   * announced as held).
   */
  | { type: 'deleted'; key: string; variant: string; reason: 'evicted' | 'purged' | 'replaced' | 'expired' | 'corrupt' | 'cleared' | 'memory-only'; memoryOnly?: true }
  | { type: 'integrity-failure'; key: string; variant: string }
  | { type: 'write-failure'; key: string; error: unknown }
  /**
   * A response not written to disk because the disk write queue was full (it was still served):
   * not stored at all ('queue-full'), or kept in the memory tier only ('memory-only', after its
   * 'stored').
   */
  | { type: 'write-skipped'; key: string; reason: 'queue-full' | 'memory-only' }

/** See CacheStore.admits. */
export type StoreAdmission = 'disk' | 'memory-only' | false

export interface StoreStats {
  entries: number
  bytes: number
  /** Entries whose body is on disk (every one but those kept in memory only): what maxEntries bounds. */
  diskEntries?: number
  /** The disk tier's entry limit (CAJE_CACHE_MAX_ENTRIES); absent when it has none. */
  maxEntries?: number
  memoryEntries: number
  memoryBytes: number
  /** Memory the memory tier's slabs take (its budget bounds it); absent without a memory tier. */
  memoryHeldBytes?: number
  /** Memory of slabs the tier dropped that is not freed yet (held by disk writes, or waiting for the garbage collector). */
  memoryDroppedBytes?: number
  /** Part of memoryDroppedBytes: dropped slabs that bodies still being written to disk hold. */
  memoryDroppedHeldBytes?: number
  /** Memory of every slab the memory tier has allocated since it started (one used again counted once): its budget when none went to the garbage collector. */
  memorySlabsAllocatedBytes?: number
  integrityFailures: number
  writeFailures: number
  /** Responses not stored because the write queue was full. */
  writesSkipped: number
  /** Responses kept in the memory tier only because the write queue was full (memoryOnlyIntegrity). */
  writesMemoryOnly: number
  /** Disk writes queued and not yet done (jobs, and body bytes they hold in memory). */
  writeQueueJobs: number
  writeQueueBytes: number
  /** Shared memory (the memory tier's slabs) the disk writer's thread has not let go of yet (DiskWriterStats.threadSharedBytes). */
  writeThreadSharedBytes?: number
  /** Memory the disk tier's in-memory index holds outside V8's heap: its per-slot arrays and the chunks of packed metadata (entry-index.ts). */
  indexBytes?: number
  /** Part of indexBytes: the packed metadata of entries in the index (the rest of the chunks is room freed by removals, and the newest chunk's tail). */
  indexPackedLiveBytes?: number
  evictions: number
}

export interface ListOptions {
  /** Substring match on url (case-insensitive). */
  filter?: string
  offset?: number
  limit?: number
}

export interface ListedEntry extends EntryMeta {
  inMemory: boolean
  lastAccess: number
}

export interface CacheStore {
  /** All variants stored under a primary key (metadata only: it lives in memory, so no waiting). */
  variants(key: string): EntryMeta[]
  /**
   * The distinct Vary header values (as stored; '' for none) among a key's variants, nearly
   * always one: the caller works out the request's variant id per value and asks variant().
   * Empty when nothing is stored under the key.
   */
  varyOf(key: string): readonly string[]
  /**
   * One variant's metadata by its id (no body I/O), or undefined (absent or expired). `now`: the
   * caller's clock reading (epoch ms) when it has one, so that expiry is judged by the same clock
   * without reading it again (as for read()).
   */
  variant(key: string, variant: string, now?: number): EntryMeta | undefined
  /**
   * The body of one variant (marks it recently used). When the body is at hand (memory tier, a
   * write not yet on disk, a small file verified before and already open) it is returned at
   * once; otherwise a promise, as undici's cache store get() does. Undefined, now or from the
   * promise, when the entry is gone or its integrity check fails (then it is dropped and
   * counted). With `range`, only those bytes are returned.
   */
  read(key: string, variant: string, range?: ByteRange, now?: number): BodyLookup
  /**
   * The whole bodies of many variants at once (a peer's populate), one result per item in
   * order, each with the metadata it belongs to (unpacked once, as the read took it), undefined
   * where read() would give undefined. Small bodies on disk are read off the event loop, many
   * per round trip; the integrity rules are read()'s. `replaced`: the variant was replaced or
   * dropped while its body was read (the body is still the one `meta` names). Optional: a store
   * without it is read one variant at a time.
   */
  readEntries?(items: ReadonlyArray<{ key: string; variant: string }>): Promise<Array<{ body: StoredBody; meta: EntryMeta; replaced?: boolean } | undefined>>
  /** The body size of one variant held (no metadata unpacked), or undefined (absent or expired). Optional. */
  bodySize?(key: string, variant: string): number | undefined
  /**
   * How a response for `key` with a body of `size` bytes (undefined: not known yet) would be
   * stored now: 'disk' (served from memory while written behind), 'memory-only' while the disk
   * write queue is full and the memory tier takes a body of that size (kept there only, see
   * memoryOnlyIntegrity; a body that turns out larger is not stored), or false: the queue is
   * full and the body is not for the memory tier, so the response is served without being
   * stored, and the store counts it (stats().writesSkipped, a 'write-skipped' event).
   */
  admits(key: string, size: number | undefined): StoreAdmission
  /**
   * A stored variant answered without its body being read (a HEAD, a 304 to a conditional
   * request): it was asked for again all the same, which second-request disk admission counts
   * (disk-store.ts DiskAdmission). A body read for an answer counts by itself.
   */
  askedAgain(key: string, variant: string): void
  /** Resolves once every write queued so far is on disk. */
  drain(): Promise<void>
  /**
   * Resolves once a body of `size` bytes fits in the disk write queue. A writer that can wait
   * (populate, copying thousands of objects) waits here instead of having its copies skipped.
   */
  writeRoom(size: number): Promise<void>
  /**
   * The disk holds its budget of bytes or of entries (CAJE_CACHE_MAX_BYTES, CAJE_CACHE_MAX_ENTRIES),
   * or nearly: a new entry evicts the least recently used. Populate stops copying there.
   */
  full(): boolean
  /**
   * Store a variant whose whole body is at hand (populate): the same write path as writer()
   * (write-behind, bounded queue). Resolves to the stored meta, or undefined when not stored.
   */
  put(entry: NewEntry, body: Uint8Array): Promise<EntryMeta | undefined>
  /**
   * Start writing a new variant; replaces an existing one with the same key+variant on commit.
   * With `expected` (a copy from a peer, whose digest is known beforehand), commit() rejects
   * with code EINTEGRITY and stores nothing unless the body is exactly that: the store hashes
   * the body once, and the caller need not hash it again.
   */
  writer(entry: NewEntry, expected?: ExpectedBody): EntryWriter
  /** Replace the metadata of a stored variant (after a 304 revalidation), keeping its body. */
  updateMeta(meta: EntryMeta): Promise<void>
  /** Delete one variant, or every variant of a key when variant is omitted. Resolves to how many were removed. */
  delete(key: string, variant?: string): Promise<number>
  /** Delete every entry matching the predicate (purge by prefix, tag, host...); it sees only the fields a purge matches on. */
  deleteWhere(predicate: (meta: PurgeFields) => boolean, reason?: 'purged' | 'cleared'): Promise<number>
  /**
   * Mark stale every entry for which `purgedAt` returns a time (a soft purge at that time): sets
   * softPurgedAt and ends staleAt there, keeping the body, durably (a restart keeps the mark).
   * An entry already marked at that time or later is left alone. Emits no events: the purge is
   * one record in the manifest, not one per entry. Resolves to how many entries were marked.
   */
  markStale(purgedAt: (meta: PurgeFields) => number | undefined): Promise<number>
  /** Remove everything (admin "Clear FS"). */
  clear(): Promise<number>
  /** Page through entries, newest first. */
  list(options?: ListOptions): Promise<{ total: number; entries: ListedEntry[] }>
  stats(): StoreStats
  /** Subscribe to store / delete events (used to record the manifest). Returns an unsubscribe function. */
  subscribe(listener: (event: StoreEvent) => void): () => void
  /** Wait for pending writes and release resources. */
  close(): Promise<void>
}
