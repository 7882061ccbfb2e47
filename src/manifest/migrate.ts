// Schema migrations, run at start by the node that may write (the primary, or
// every node when there is no LiteFS).
//
// The migrations are imported statically, not discovered with
// FileMigrationProvider: the list is fixed at build time, works the same under
// tsx, vitest and a bundler, and a stray file in the folder cannot run.

import { Migrator, NO_MIGRATIONS, sql } from 'kysely'
import type { Kysely, Migration, MigrationProvider, MigrationResult } from 'kysely'
import * as m2026112401 from './migrations/2026112401_initial.ts'
import * as m2026112402 from './migrations/2026112402_purge_progress.ts'
import * as m2026120101 from './migrations/2026120101_purge_created_at.ts'
import * as m2026120102 from './migrations/2026120102_entries_search.ts'
import * as m2026120107 from './migrations/2026120107_node_minutes.ts'
import * as m2026120108 from './migrations/2026120108_url_hits.ts'
import * as m2026120111 from './migrations/2026120111_soft_purge.ts'
import * as m2026120112 from './migrations/2026120112_node_minute_paths.ts'
import * as m2026120113 from './migrations/2026120113_entries_write_indexes.ts'
import * as m2026120114 from './migrations/2026120114_counts.ts'
import * as m2026120115 from './migrations/2026120115_holdings_by_entry_id.ts'
import * as m2026120201 from './migrations/2026120201_url_index_not_key.ts'
import * as m2026120202 from './migrations/2026120202_entries_search_rowids.ts'
import * as m2026120203 from './migrations/2026120203_stored_at_index_by_id.ts'
import * as m2026120501 from './migrations/2026120501_url_hits_prune_order.ts'

/** Every migration, by name; Kysely runs them in name order. Add new ones here. */
export const MIGRATIONS: Readonly<Record<string, Migration>> = {
  '2026112401_initial': m2026112401,
  '2026112402_purge_progress': m2026112402,
  '2026120101_purge_created_at': m2026120101,
  '2026120102_entries_search': m2026120102,
  '2026120107_node_minutes': m2026120107,
  '2026120108_url_hits': m2026120108,
  '2026120111_soft_purge': m2026120111,
  '2026120112_node_minute_paths': m2026120112,
  '2026120113_entries_write_indexes': m2026120113,
  '2026120114_counts': m2026120114,
  '2026120115_holdings_by_entry_id': m2026120115,
  '2026120201_url_index_not_key': m2026120201,
  '2026120202_entries_search_rowids': m2026120202,
  '2026120203_stored_at_index_by_id': m2026120203,
  '2026120501_url_hits_prune_order': m2026120501,
}

export class StaticMigrationProvider implements MigrationProvider {
  constructor(private readonly migrations: Readonly<Record<string, Migration>> = MIGRATIONS) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    return { ...this.migrations }
  }
}

export class MigrationFailedError extends Error {
  constructor(
    readonly migration: string | undefined,
    readonly results: readonly MigrationResult[],
    cause: unknown,
  ) {
    const detail = cause instanceof Error ? cause.message : String(cause)
    super(
      migration
        ? `manifest migration "${migration}" failed: ${detail}. Nothing of this run was applied (it is one transaction); fix the cause and restart.`
        : `manifest migrations could not run: ${detail}`,
      { cause },
    )
    this.name = 'MigrationFailedError'
  }
}

export interface MigrateOptions {
  migrations?: Readonly<Record<string, Migration>>
  /** Attempts when another process holds the write lock (local multi-node start). */
  attempts?: number
}

/** Apply every pending migration. Resolves to the names applied now; throws MigrationFailedError. */
export async function migrateToLatest<DB>(db: Kysely<DB>, options: MigrateOptions = {}): Promise<string[]> {
  return runMigrator(db, options, (migrator) => migrator.migrateToLatest())
}

/** Migrate up or down to one named migration (tests, and rolling back by hand). */
export async function migrateTo<DB>(db: Kysely<DB>, target: string | typeof NO_MIGRATIONS, options: MigrateOptions = {}): Promise<string[]> {
  return runMigrator(db, options, (migrator) => migrator.migrateTo(target))
}

/** Names of the migrations already applied to this database, in order. */
export async function appliedMigrations<DB>(db: Kysely<DB>, options: MigrateOptions = {}): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider(options.migrations) })
  const all = await migrator.getMigrations()
  return all.filter((m) => m.executedAt !== undefined).map((m) => m.name)
}

async function runMigrator<DB>(
  db: Kysely<DB>,
  options: MigrateOptions,
  run: (migrator: Migrator) => ReturnType<Migrator['migrateToLatest']>,
): Promise<string[]> {
  const attempts = Math.max(1, options.attempts ?? 10)
  for (let attempt = 1; ; attempt++) {
    try {
      return await runLocked(db, options, run)
    } catch (err) {
      // Another process holds the write lock past busy_timeout: wait, try again.
      if (isBusy(err) && attempt < attempts) {
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt))
        continue
      }
      throw err instanceof MigrationFailedError ? err : new MigrationFailedError(undefined, [], err)
    }
  }
}

/**
 * One migration run as one `BEGIN IMMEDIATE` transaction. Kysely's SQLite
 * adapter takes no lock, and its own deferred transaction lets two processes
 * sharing the file (the local cluster starting together) both read "nothing
 * applied" and both create the tables; the second then fails with "table
 * already exists". IMMEDIATE takes the write lock before the migrator reads
 * its state, so the second process waits and then finds nothing to do. It
 * also makes a failed run all-or-nothing.
 */
async function runLocked<DB>(
  db: Kysely<DB>,
  options: MigrateOptions,
  run: (migrator: Migrator) => ReturnType<Migrator['migrateToLatest']>,
): Promise<string[]> {
  return db.connection().execute(async (conn) => {
    await sql`begin immediate`.execute(conn)
    let result: Awaited<ReturnType<typeof run>>
    try {
      const migrator = new Migrator({ db: conn, provider: new StaticMigrationProvider(options.migrations), disableTransactions: true })
      result = await run(migrator)
    } catch (err) {
      await sql`rollback`.execute(conn)
      throw err
    }
    const { error, results = [] } = result
    if (error) {
      await sql`rollback`.execute(conn)
      const failed = results.find((r) => r.status === 'Error')?.migrationName
      throw new MigrationFailedError(failed, results, error)
    }
    await sql`commit`.execute(conn)
    return results.filter((r) => r.status === 'Success').map((r) => r.migrationName)
  })
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))
}
