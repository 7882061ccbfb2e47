// The manifest as main.ts uses it: the role watcher, the switching writer,
// the database handles and their lifetimes, wired the one right way.
//
//  - Without LiteFS every node writes the shared file: one writable handle,
//    migrated before start, serves reads and the DirectWriter.
//  - Under LiteFS the role comes from LiteFS's HTTP API (primary.ts). The
//    primary opens the file writable (migrating it first); a replica opens it
//    read-only and sends writes to the primary; a replica whose primary is
//    unknown queues them. When LiteFS moves the primary, the writer follows
//    (writer.ts) and a promoted node opens its writable handle, migrates,
//    then writes.

import type { Kysely } from 'kysely'
import { openDatabase } from './database.ts'
import { openReadWorkerDatabase } from './read-worker.ts'
import type { Database } from './database.ts'
import { jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { migrateToLatest } from './migrate.ts'
import { DEFAULT_LITEFS_API, primaryUrlFor, staticPrimary, watchLitefs } from './primary.ts'
import type { ClusterRole, PrimaryWatcher, RoleSource } from './primary.ts'
import { DirectWriter, createManifestWriter } from './writer.ts'
import type { BatchOptions, RemoteWriterOptions, SwitchingManifestWriter } from './writer.ts'

export interface ManifestRuntimeOptions {
  databasePath: string
  litefsDir: string | undefined
  /** LiteFS's HTTP API (CAJE_LITEFS_API); used when litefsDir is set. */
  litefsApi?: string
  primaryUrlTemplate: string
  port: number
  /** The port of every node's internal routes (CAJE_INTERNAL_LISTEN), when not `port`. */
  internalPort?: number
  nodeId: string
  clusterSecret: string | undefined
  log?: ManifestLog
  /** Tuning (tests): queue/batch options of both writers, the LiteFS /info poll and stream reconnect intervals. */
  direct?: BatchOptions
  remote?: Partial<Omit<RemoteWriterOptions, 'primaryUrl' | 'clusterSecret'>>
  pollIntervalMs?: number
  reconnectDelayMs?: number
}

export interface ManifestRuntime {
  role: PrimaryWatcher
  writer: SwitchingManifestWriter
  /**
   * The handle to read the manifest with now: the writable one while this
   * node writes, else a read-only one (opened on first use; it throws while
   * LiteFS has not yet replicated the file to this node).
   */
  readDb(): Kysely<Database>
  /**
   * A read-only handle whose queries run on a thread of their own
   * (read-worker.ts), for reads that may take long at a million entries
   * (the admin list): they never stop the event loop. Opened on first use.
   */
  listDb(): Kysely<Database>
  /** Deliver queued writes (bounded by the writers' close timeouts), stop watching, close handles. */
  close(): Promise<void>
}

export async function startManifest(options: ManifestRuntimeOptions): Promise<ManifestRuntime> {
  const log = options.log ?? jsonLog
  const path = options.databasePath

  if (!options.litefsDir) {
    // The WAL is checkpointed by the writer's apply thread: one thread fewer than a checkpointer of its own.
    const { db } = openDatabase({ path, checkpointInBackground: true })
    await migrateToLatest(db)
    const role = staticPrimary()
    const writer = createManifestWriter({
      role,
      openDirect: () => new DirectWriter({ applyThread: true, checkpointWal: true, ...options.direct, db, label: path, log }),
      // Never used without LiteFS (always primary), but the type wants it.
      remote: { clusterSecret: options.clusterSecret ?? '', nodeId: options.nodeId, log },
      log,
    })
    const lists = lazyReadWorker(path)
    return {
      role,
      writer,
      readDb: () => db,
      listDb: lists.get,
      async close() {
        await writer.close()
        role.close()
        await lists.close()
        await db.destroy()
      },
    }
  }

  if (!options.clusterSecret) {
    throw new Error('CAJE_CLUSTER_SECRET must be set when CAJE_LITEFS_DIR is set: replicas authenticate to the primary with it')
  }
  const role = watchLitefs({
    apiUrl: options.litefsApi ?? DEFAULT_LITEFS_API,
    primaryUrlTemplate: options.primaryUrlTemplate,
    port: options.port,
    pollIntervalMs: options.pollIntervalMs,
    reconnectDelayMs: options.reconnectDelayMs,
    log,
  })
  // Know the role before anything is written: primary now means migrate now.
  await role.refresh()
  const openDirect = () => {
    const { db } = openDatabase({ path, checkpointInBackground: true })
    return new DirectWriter({
      applyThread: true,
      checkpointWal: true,
      ...options.direct,
      db,
      label: path,
      log,
      // A node promoted while running may be newer than the old primary.
      prepare: async () => {
        await migrateToLatest(db)
      },
      onRelease: () => db.destroy(),
    })
  }
  const internalPort = options.internalPort
  const writer = createManifestWriter({
    // A replica sends its batches to the primary's internal routes, which may
    // have a port of their own (CAJE_INTERNAL_LISTEN); admin relays keep the public URL.
    role: internalPort === undefined || internalPort === options.port ? role : onInternalPort(role, options.primaryUrlTemplate, internalPort),
    openDirect,
    remote: { log, ...options.remote, clusterSecret: options.clusterSecret, nodeId: options.nodeId },
    log,
  })
  // Primary at start: the schema is ready before the node serves anything.
  const writable = writer.writableDb()
  if (writable) await migrateToLatest(writable)

  let reader: Kysely<Database> | undefined
  const lists = lazyReadWorker(path)
  return {
    role,
    writer,
    readDb() {
      const w = writer.writableDb()
      if (w) return w
      reader ??= openDatabase({ path, readonly: true }).db
      return reader
    },
    listDb: lists.get,
    async close() {
      await writer.close()
      role.close()
      await lists.close()
      await reader?.destroy()
    },
  }
}

/** The same roles, with the primary's URL on the internal listener's port. */
function onInternalPort(source: RoleSource, template: string, port: number): RoleSource {
  const map = (role: ClusterRole): ClusterRole =>
    role.kind === 'replica' && role.primaryHost !== undefined ? { ...role, primaryUrl: primaryUrlFor(template, role.primaryHost, port) } : role
  return {
    current: () => map(source.current()),
    subscribe: (listener) => source.subscribe((next, previous) => listener(map(next), map(previous))),
  }
}

/** The read thread for a file, started on first use. */
function lazyReadWorker(path: string): { get: () => Kysely<Database>; close: () => Promise<void> } {
  let db: Kysely<Database> | undefined
  return {
    get: () => (db ??= openReadWorkerDatabase({ path })),
    close: async () => {
      await db?.destroy()
      db = undefined
    },
  }
}
