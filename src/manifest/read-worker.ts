// Reads of the manifest on a thread of their own, for the queries that may
// take long: the admin list at a million entries (a URL filter reads the
// trigram index for a common substring in a few hundred ms). better-sqlite3
// is synchronous, so on the event loop such a query stopped every request,
// health probe and new connection for as long as it ran.
//
// This is a Kysely dialect whose one connection lives in a worker thread
// with its own read-only better-sqlite3 handle: queries are compiled here
// and run there, so a slow one costs the event loop nothing but the
// message. Reads only: the handle is opened read-only, and writes keep going
// through the node's writer.

import { createRequire } from 'node:module'
import type { Worker } from 'node:worker_threads'
import { startWorker } from '../thread-heap.ts'
import { CompiledQuery, Kysely, SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler } from 'kysely'
import type { DatabaseConnection, Dialect, Driver, QueryResult } from 'kysely'
import type { Database } from './database.ts'

export interface ReadWorkerOptions {
  /** The manifest file; it must exist (a replica waits for LiteFS to sync it). */
  path: string
  /** Milliseconds a read waits for a lock (WAL recovery) before SQLITE_BUSY. Default 5000. */
  busyTimeoutMs?: number
  /** Called with each thread started: the first, and any started again after one ended. */
  onThread?: (thread: Worker) => void
}

/** A read-only Kysely instance whose queries run on a worker thread. `destroy()` ends the thread. */
export function openReadWorkerDatabase(options: ReadWorkerOptions): Kysely<Database> {
  return new Kysely<Database>({ dialect: new ReadWorkerDialect(options) })
}

class ReadWorkerDialect implements Dialect {
  constructor(private readonly options: ReadWorkerOptions) {}
  createAdapter() {
    return new SqliteAdapter()
  }
  createDriver(): Driver {
    return new ReadWorkerDriver(this.options)
  }
  createQueryCompiler() {
    return new SqliteQueryCompiler()
  }
  createIntrospector(db: Kysely<unknown>) {
    return new SqliteIntrospector(db)
  }
}

interface Reply {
  id: number
  rows?: unknown[]
  changes?: number
  error?: { message: string; code?: string }
}

class ReadWorkerDriver implements Driver {
  private worker: Worker | undefined
  private closed = false
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>()
  // One connection, one query at a time, as Kysely's own SQLite driver does.
  private queue: Promise<void> = Promise.resolve()
  private readonly connection: DatabaseConnection

  constructor(private readonly options: ReadWorkerOptions) {
    this.connection = {
      executeQuery: async <R>(compiled: CompiledQuery): Promise<QueryResult<R>> => {
        const reply = await this.send(compiled.sql, compiled.parameters)
        if (reply.rows) return { rows: reply.rows as R[] }
        return { rows: [], numAffectedRows: BigInt(reply.changes ?? 0) }
      },
      streamQuery: () => {
        throw new Error('the manifest read thread does not stream query results')
      },
    }
  }

  async init(): Promise<void> {
    this.start()
  }

  /**
   * A thread for the reads. Also called by a read that finds the last one ended (it died of an
   * error, or was terminated): the reads in flight then failed with that reason, and the next
   * ones get a new thread rather than an admin list that fails until the node restarts.
   */
  private start(): Worker {
    const resolveFrom = createRequire(import.meta.url).resolve('better-sqlite3')
    const worker = startWorker(WORKER_SOURCE, { workerData: { path: this.options.path, busyTimeoutMs: this.options.busyTimeoutMs ?? 5000, resolveFrom } }, 'manifest read')
    // An idle read thread must not keep the process alive.
    worker.unref()
    worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id)
      this.pending.delete(reply.id)
      p?.resolve(reply)
    })
    const failAll = (err: Error) => {
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
      if (this.worker === worker) this.worker = undefined
    }
    worker.on('error', (err) => failAll(err))
    worker.on('exit', () => failAll(new Error('the manifest read thread ended')))
    this.worker = worker
    this.options.onThread?.(worker)
    return worker
  }

  private async send(sql: string, parameters: readonly unknown[]): Promise<Reply> {
    if (this.closed) throw new Error('the manifest read thread was closed with the node')
    const worker = this.worker ?? this.start()
    const id = this.nextId++
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      worker.postMessage({ id, sql, params: parameters })
    })
    if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code })
    return reply
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    let release!: () => void
    const previous = this.queue
    this.queue = new Promise<void>((resolve) => (release = resolve))
    await previous
    this.release = release
    return this.connection
  }

  private release: (() => void) | undefined

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin'))
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'))
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'))
  }

  async releaseConnection(): Promise<void> {
    const release = this.release
    this.release = undefined
    release?.()
  }

  async destroy(): Promise<void> {
    this.closed = true
    const worker = this.worker
    this.worker = undefined
    await worker?.terminate()
  }
}

/**
 * The thread's body, run as a script of its own (eval): it must not refer
 * to anything outside this function.
 */
function readThread(): void {
  const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads')
  const { createRequire: requireFrom } = process.getBuiltinModule('node:module')
  const data = workerData as { path: string; busyTimeoutMs: number; resolveFrom: string }
  type Statement = { reader: boolean; all(...p: unknown[]): unknown[]; run(...p: unknown[]): { changes: number } }
  type Handle = { prepare(sql: string): Statement; pragma(source: string): unknown }
  const SQLite = requireFrom(data.resolveFrom)(data.resolveFrom) as new (path: string, options: { readonly: boolean; fileMustExist: boolean; timeout: number }) => Handle
  const port = parentPort!
  let db: Handle | undefined
  const statements = new Map<string, Statement>()
  port.on('message', (m: { id: number; sql: string; params: unknown[] }) => {
    try {
      db ??= new SQLite(data.path, { readonly: true, fileMustExist: true, timeout: data.busyTimeoutMs })
      let stmt = statements.get(m.sql)
      if (!stmt) {
        stmt = db.prepare(m.sql)
        // The admin's queries are a handful of shapes; keep them prepared.
        if (statements.size < 200) statements.set(m.sql, stmt)
      }
      if (stmt.reader) port.postMessage({ id: m.id, rows: stmt.all(...m.params) })
      else port.postMessage({ id: m.id, changes: stmt.run(...m.params).changes })
    } catch (err) {
      const e = err as { message?: string; code?: string }
      port.postMessage({ id: m.id, error: { message: e.message ?? String(err), code: e.code } })
    }
  })
}

const WORKER_SOURCE = `var __name = (f) => f;\n(${readThread.toString()})()`
