// The manifest's tables, typed for Kysely, and the one way to open the file.
//
// Column names are snake_case as stored; timestamps are epoch milliseconds
// (better-sqlite3 returns INTEGER columns as numbers), booleans are 0/1
// integers, JSON lives in TEXT columns. Nullable columns are `T | null`,
// never optional, so a forgotten value is a type error rather than a NULL.

import fs from 'node:fs'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, SqliteDialect } from 'kysely'
import { BACKSTOP_WAL_PAGES } from './checkpointer.ts'
import type { PurgeKind } from '../vocabulary.ts'
import type { ColumnType, DatabaseConnection, Driver, Generated, Insertable, QueryCompiler, Selectable, TransactionSettings, Updateable } from 'kysely'

/** A column with a database default: optional on insert, always present when read. */
type WithDefault<T> = ColumnType<T, T | undefined, T>

/** One caje process that has joined the cluster (upserted by its heartbeat). */
export interface NodeTable {
  id: string
  region: string
  /** How peers reach this node's /_caje/internal routes (populate, purge nudges). */
  internal_url: string
  started_at: number
  last_seen_at: number
  /** Highest purges.id this node has applied to its own body cache (purges apply in id order). */
  last_purge_id: WithDefault<number>
}

/** One stored response variant known to the cluster; bodies never live here. */
export interface EntryTable {
  /** The rowid, made explicit so it never changes: holdings and the URL search index name the entry by it. */
  id: Generated<number>
  key: string
  /** '' when the response has no Vary. */
  variant: string
  host: string
  url: string
  status: number
  size: number
  content_type: string
  stored_at: number
  stale_at: number
  delete_at: number
  /** JSON array of cache tags, queried with json_each() for purge by tag. */
  tags: string
  /** JSON object of the Vary'd request headers, replayed by populate when fetching from the origin. */
  vary_headers: string
}

/** How many rows `entries` has: one row (id 0), kept by triggers on every insert and delete. */
export interface EntryCountTable {
  id: number
  n: number
}

/** How many variants a node holds (rows of entry_nodes), kept by triggers. */
export interface NodeHoldingsTable {
  node_id: string
  n: number
}

/** Which node holds which variant on its own disk. Cascades away with the entry. */
export interface EntryNodeTable {
  /** entries.id of the variant held. */
  entry_id: number
  node_id: string
  stored_at: number
}

/** The purge log: every node applies each row, in id order, to its own cache. */
export interface PurgeTable {
  id: Generated<number>
  /** Chosen by the node that asked, so a retried delivery records the purge once. */
  request_id: string
  kind: PurgeKind
  /** URL, URL prefix or tag; '' for kind 'all'. */
  value: string
  /** Restricts 'tag' and 'all' to one host; null means every host. */
  host: string | null
  created_at: number
  /** Admin id, API token name or 'system'. */
  created_by: string
  /** Node the purge was requested on. */
  node_id: string
  /** 1: a soft purge (covered entries are marked stale, not removed); 0: hard. */
  soft: WithDefault<number>
}

/** When one node applied one purge to its own cache (the purge history's per-node times). */
export interface PurgeNodeTable {
  purge_id: number
  node_id: string
  applied_at: number
}

/** One node's traffic in one minute (epoch ms of the minute's start), for the admin's charts. */
export interface NodeMinuteTable {
  node_id: string
  minute: number
  requests: number
  /** Answered from cache (fresh, stale-while-revalidate, or revalidated with a 304). */
  hits: number
  /** Fetched from the origin (stored or passed through). */
  misses: number
  bytes_cache: number
  bytes_origin: number
}

/** One of a node's top paths to the origin in one minute (bounded per minute), for the admin's top-misses tables. */
export interface NodeMinutePathTable {
  node_id: string
  minute: number
  /** Host and path, as the node counted it. */
  path: string
  misses: number
  origin_bytes: number
  /** JSON object: why it missed (reason → count). */
  reasons: string
}

export interface AdminTable {
  id: string
  name: string
  created_at: number
}

export interface PasskeyTable {
  /** Credential id, base64url. */
  id: string
  admin_id: string
  public_key: ColumnType<Buffer, Buffer | Uint8Array, Buffer | Uint8Array>
  counter: number
  /** JSON array of AuthenticatorTransport strings. */
  transports: string | null
  device_type: string
  /** 0 or 1. */
  backed_up: number
  name: string
  created_at: number
  last_used_at: number | null
}

export interface SessionTable {
  /** sha256 of the session id: a leaked database does not leak live sessions. */
  id_hash: string
  admin_id: string
  csrf_token: string
  created_at: number
  expires_at: number
  last_seen_at: number
  user_agent: string | null
}

export interface ChallengeTable {
  id: string
  challenge: string
  kind: 'registration' | 'authentication'
  admin_id: string | null
  expires_at: number
}

export interface InviteTable {
  token_hash: string
  created_by: string
  created_at: number
  expires_at: number
  used_at: number | null
}

export interface ApiTokenTable {
  id: string
  name: string
  token_hash: string
  created_by: string
  created_at: number
  last_used_at: number | null
  revoked_at: number | null
}

/** How often a cache key was asked for, summed over the cluster (hot-set.ts). */
export interface UrlHitsTable {
  key: string
  hits: number
  /** Epoch ms of the newest batch that counted this key; old rows are pruned. */
  last_hit_at: number
}

export interface Database {
  nodes: NodeTable
  entries: EntryTable
  entries_count: EntryCountTable
  entry_nodes: EntryNodeTable
  node_holdings: NodeHoldingsTable
  purges: PurgeTable
  purge_nodes: PurgeNodeTable
  admins: AdminTable
  passkeys: PasskeyTable
  sessions: SessionTable
  challenges: ChallengeTable
  invites: InviteTable
  api_tokens: ApiTokenTable
  url_hits: UrlHitsTable
  node_minutes: NodeMinuteTable
  node_minute_paths: NodeMinutePathTable
}

export type NodeRow = Selectable<NodeTable>
export type NewNodeRow = Insertable<NodeTable>
export type EntryRow = Selectable<EntryTable>
export type NewEntryRow = Insertable<EntryTable>
export type EntryNodeRow = Selectable<EntryNodeTable>
export type PurgeRow = Selectable<PurgeTable>
export type NewPurgeRow = Insertable<PurgeTable>
export type AdminRow = Selectable<AdminTable>
export type NewAdminRow = Insertable<AdminTable>
export type PasskeyRow = Selectable<PasskeyTable>
export type NewPasskeyRow = Insertable<PasskeyTable>
export type PasskeyUpdate = Updateable<PasskeyTable>
export type SessionRow = Selectable<SessionTable>
export type NewSessionRow = Insertable<SessionTable>
export type ChallengeRow = Selectable<ChallengeTable>
export type NewChallengeRow = Insertable<ChallengeTable>
export type InviteRow = Selectable<InviteTable>
export type NewInviteRow = Insertable<InviteTable>
export type ApiTokenRow = Selectable<ApiTokenTable>
export type NewApiTokenRow = Insertable<ApiTokenTable>

export interface OpenDatabaseOptions {
  path: string
  /**
   * Open without write access. A LiteFS replica must never write (LiteFS
   * rejects it, and a half-written page would be worse), so a replica opens
   * the file this way and sends its writes to the primary.
   */
  readonly?: boolean
  /** Milliseconds a statement waits for another writer's lock before SQLITE_BUSY. */
  busyTimeoutMs?: number
  /**
   * The WAL is copied back into the file by the apply thread of the
   * DirectWriter given this handle with checkpointWal (writer.ts,
   * apply-thread.ts), not inside the commits of this handle, which run on
   * the event loop: this handle checkpoints itself only past a backstop
   * (checkpointer.ts). For the handle a node writes the manifest with;
   * ignored when readonly or in memory.
   */
  checkpointInBackground?: boolean
}

export interface OpenedDatabase {
  db: Kysely<Database>
  /** The underlying handle, for pragmas and backups; `db.destroy()` closes it. */
  sqlite: SQLite.Database
}

/**
 * PRAGMA journal_mode = WAL, tried again while another process holds the file, for up to
 * `timeoutMs`. Two processes switching a new file at once (a local cluster started together)
 * each hold the read lock the other's switch waits for; SQLite answers one of them SQLITE_BUSY
 * at once instead of calling the busy handler, since waiting could not end. That one waits a
 * little (synchronously: this runs once, while a node opens its database) and tries again,
 * by which time the other has switched the file.
 */
function switchToWal(sqlite: SQLite.Database, timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      sqlite.pragma('journal_mode = WAL')
      return
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw err
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 40)
    }
  }
}

export function openDatabase(options: OpenDatabaseOptions): OpenedDatabase {
  const readonly = options.readonly ?? false
  if (!readonly && options.path !== ':memory:') fs.mkdirSync(path.dirname(options.path), { recursive: true })
  // fileMustExist: a replica that starts before LiteFS has synced the file
  // must fail loudly, not create an empty database beside the real one.
  const sqlite = new SQLite(options.path, readonly ? { readonly: true, fileMustExist: true } : {})
  try {
    // Several processes share the file in the local cluster: wait for the
    // writer's lock instead of failing at once. First, so that switching to
    // WAL below also waits when another process is mid-transaction.
    const busyTimeoutMs = Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))
    sqlite.pragma(`busy_timeout = ${busyTimeoutMs}`)
    // WAL lets readers (the admin list, populate) run while the writer
    // commits. Setting it is a write to the file header, so a read-only
    // handle skips it and reads whatever mode the writer chose.
    if (!readonly) switchToWal(sqlite, busyTimeoutMs)
    sqlite.pragma('foreign_keys = ON')
    // NORMAL is durable across application crashes in WAL mode; only an OS
    // crash can lose the last transactions, which the manifest can afford.
    if (!readonly) sqlite.pragma('synchronous = NORMAL')
  } catch (err) {
    sqlite.close()
    throw err
  }
  const key = options.path === ':memory:' ? undefined : fs.realpathSync(options.path)
  // The backstop: past it this handle checkpoints in its own commits again.
  if (options.checkpointInBackground && !readonly && key !== undefined) sqlite.pragma(`wal_autocheckpoint = ${BACKSTOP_WAL_PAGES}`)
  const db = new Kysely<Database>({ dialect: new FileLockedSqliteDialect(sqlite, key) })
  handles.set(db, sqlite)
  return { db, sqlite }
}

const handles = new WeakMap<Kysely<Database>, SQLite.Database>()

/**
 * The better-sqlite3 handle under a Kysely instance opened by openDatabase,
 * for the hot paths that run prepared statements directly (ops.ts). Only
 * while a Kysely transaction or connection of that instance is held: then
 * both run on the same (single) connection, in the same transaction.
 */
export function sqliteHandleOf(db: Kysely<Database>): SQLite.Database | undefined {
  return handles.get(db)
}

// ── one lock per file per process ───────────────────────────────────────
//
// better-sqlite3 is synchronous, and Kysely holds a transaction open across
// awaits. With two handles on one file in one process (the local cluster
// test runs several nodes in one process; a replica's read-only handle sits
// beside a writer's), handle B waiting for A's lock would block the whole
// thread in SQLite's busy handler, so A could never finish: both stall for
// busy_timeout and B fails with SQLITE_BUSY. Handles on the same file
// therefore take turns through this async lock, held from Kysely's
// acquireConnection to releaseConnection (a whole transaction). Separate
// processes still meet at SQLite's own lock, where busy_timeout is right.

class AsyncLock {
  private locked = false
  private waiters: (() => void)[] = []

  lock(): Promise<void> {
    if (!this.locked) {
      this.locked = true
      return Promise.resolve()
    }
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  unlock(): void {
    const next = this.waiters.shift()
    // Hand the lock straight to the next waiter so nobody can cut in.
    if (next) next()
    else this.locked = false
  }
}

const fileLocks = new Map<string, { lock: AsyncLock; refs: number }>()

function acquireFileLock(key: string): AsyncLock {
  let entry = fileLocks.get(key)
  if (!entry) {
    entry = { lock: new AsyncLock(), refs: 0 }
    fileLocks.set(key, entry)
  }
  entry.refs++
  return entry.lock
}

function releaseFileLock(key: string): void {
  const entry = fileLocks.get(key)
  if (entry && --entry.refs <= 0) fileLocks.delete(key)
}

class FileLockedDriver implements Driver {
  private released = false

  constructor(
    private readonly inner: Driver,
    private readonly lock: AsyncLock,
    private readonly key: string,
  ) {}

  init(): Promise<void> {
    return this.inner.init()
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.lock.lock()
    try {
      return await this.inner.acquireConnection()
    } catch (err) {
      this.lock.unlock()
      throw err
    }
  }

  beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return this.inner.beginTransaction(connection, settings)
  }

  commitTransaction(connection: DatabaseConnection): Promise<void> {
    return this.inner.commitTransaction(connection)
  }

  rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    return this.inner.rollbackTransaction(connection)
  }

  async savepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.inner.savepoint?.(connection, name, compileQuery)
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.inner.rollbackToSavepoint?.(connection, name, compileQuery)
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.inner.releaseSavepoint?.(connection, name, compileQuery)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    try {
      await this.inner.releaseConnection(connection)
    } finally {
      this.lock.unlock()
    }
  }

  async destroy(): Promise<void> {
    await this.inner.destroy()
    if (!this.released) {
      this.released = true
      releaseFileLock(this.key)
    }
  }
}

class FileLockedSqliteDialect extends SqliteDialect {
  constructor(
    database: SQLite.Database,
    private readonly fileKey: string | undefined,
  ) {
    super({ database })
  }

  override createDriver(): Driver {
    const driver = super.createDriver()
    return this.fileKey ? new FileLockedDriver(driver, acquireFileLock(this.fileKey), this.fileKey) : driver
  }
}
