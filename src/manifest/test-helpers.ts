// Shared set-up for the manifest tests: real SQLite files in temp dirs.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import { afterEach, beforeEach } from 'vitest'
import { sql } from 'kysely'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { openDatabase } from './database.ts'
import type { OpenedDatabase } from './database.ts'
import type { LogLevel, ManifestLog } from './log.ts'
import { migrateToLatest } from './migrate.ts'
import { tempDirSync } from '../test-support/temp-dirs.ts'
import { WAIT_GUARD_MS } from '../test-support/wait-guard.ts'
import type { EntryRecord } from './repositories.ts'

export function tempDir(prefix = 'caje-manifest-'): { dir: string; cleanup: () => void } {
  const dir = tempDirSync(prefix)
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

/** A migrated manifest in a fresh temp dir. */
export async function freshManifest(): Promise<OpenedDatabase & { path: string; dir: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = tempDir()
  const file = path.join(dir, 'manifest.db')
  const opened = openDatabase({ path: file })
  await migrateToLatest(opened.db)
  return {
    ...opened,
    path: file,
    dir,
    cleanup: async () => {
      await opened.db.destroy()
      cleanup()
    },
  }
}

export type FreshManifest = Awaited<ReturnType<typeof freshManifest>>

/**
 * A fresh migrated manifest for every test of the enclosing describe, removed
 * after it; `use` receives each before the test runs. Hooks the describe adds
 * later run before the removal (vitest runs after-hooks last-added first).
 */
export function freshManifestPerTest(use: (m: FreshManifest) => void): void {
  let current: FreshManifest | undefined
  beforeEach(async () => {
    current = await freshManifest()
    use(current)
  })
  afterEach(async () => {
    await current?.cleanup()
    current = undefined
  })
}

export function entry(overrides: Partial<EntryRecord> & { url: string }): EntryRecord {
  const u = new URL(overrides.url)
  const now = 1_700_000_000_000
  return {
    key: overrides.url,
    variant: '',
    host: u.host,
    status: 200,
    size: 100,
    contentType: 'text/html',
    storedAt: now,
    staleAt: now + 60_000,
    deleteAt: now + 120_000,
    tags: [],
    varyHeaders: {},
    ...overrides,
  }
}

/**
 * Record a stored entry on a schema older than 2026120115 (holdings keyed by
 * the entry's key), as the code of that time did: the migration tests fill
 * old files with it, since recordStored speaks the latest schema only.
 */
export async function recordStoredOnOldSchema(db: Kysely<Database>, nodeId: string, e: EntryRecord): Promise<void> {
  await sql`insert into entries (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers)
    values (${e.key}, ${e.variant}, ${e.host}, ${e.url}, ${e.status}, ${e.size}, ${e.contentType}, ${e.storedAt}, ${e.staleAt}, ${e.deleteAt}, ${JSON.stringify(e.tags)}, ${JSON.stringify(e.varyHeaders)})
    on conflict (key, variant) do update set host = excluded.host, url = excluded.url, status = excluded.status, size = excluded.size,
      content_type = excluded.content_type, stored_at = excluded.stored_at, stale_at = excluded.stale_at, delete_at = excluded.delete_at,
      tags = excluded.tags, vary_headers = excluded.vary_headers
    where entries.stored_at < excluded.stored_at`.execute(db)
  await sql`insert into entry_nodes (key, variant, node_id, stored_at) values (${e.key}, ${e.variant}, ${nodeId}, ${e.storedAt})
    on conflict (key, variant, node_id) do update set stored_at = excluded.stored_at`.execute(db)
}

export interface CapturedLog {
  log: ManifestLog
  lines: { level: LogLevel; msg: string; fields?: Record<string, unknown> }[]
}

export function captureLog(): CapturedLog {
  const lines: CapturedLog['lines'] = []
  return { lines, log: (level, msg, fields) => void lines.push({ level, msg, fields }) }
}

/** Poll `check` until it returns true, failing after `timeoutMs` (WAIT_GUARD_MS at least: a guard, not a threshold). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = WAIT_GUARD_MS, what = 'condition'): Promise<void> {
  timeoutMs = Math.max(timeoutMs, WAIT_GUARD_MS)
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

export async function tableNames(db: Kysely<Database>): Promise<string[]> {
  const tables = await db.introspection.getTables()
  return tables.map((t) => t.name).sort()
}

/**
 * Another writer holding the manifest's write lock: a second connection, not
 * through openDatabase (so not behind this process's per-file queue), in
 * `BEGIN IMMEDIATE` until released. To the connection under test it is a
 * foreign lock, exactly like another node or `sqlite3` in a shell.
 */
export function holdWriteLock(file: string, mode: 'IMMEDIATE' | 'EXCLUSIVE' = 'IMMEDIATE'): { release: () => void; releaseAfter: (ms: number) => void } {
  const locker = new SQLite(file)
  locker.exec(`BEGIN ${mode}`)
  let released = false
  const release = () => {
    if (released) return
    released = true
    locker.exec('ROLLBACK')
    locker.close()
  }
  return { release, releaseAfter: (ms) => void setTimeout(release, ms) }
}

/**
 * A busy timeout longer than any test: an operation that waited for a lock in
 * SQLite's busy handler (synchronously, the event loop stopped) instead of on
 * timers would hold the test far past its timeout, so it cannot pass.
 */
export const TEST_BUSY_TIMEOUT_MS = 60_000

/**
 * Proof, by the order of events, that `pending` waits for a lock without
 * holding up the event loop: `turns` timers and file-system round trips
 * complete one after the other, and `pending` has still not settled. Call it
 * while a lock `pending` needs is held, with a retry window far longer than the
 * turns take, on a connection whose busy timeout is TEST_BUSY_TIMEOUT_MS.
 */
export async function loopTurnsWhile(pending: Promise<unknown>, turns = 10): Promise<void> {
  let settled = false
  pending.then(
    () => (settled = true),
    () => (settled = true),
  )
  for (let i = 0; i < turns; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1))
    await fs.promises.stat(os.tmpdir())
  }
  if (settled) throw new Error('the operation settled while the lock was still held: it did not wait for the lock')
}

/** The bytes cut into chunks of the given sizes, over and over (a body as the socket delivers it). */
export function chunked(body: Buffer | string, sizes: number[]): Buffer[] {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  const out: Buffer[] = []
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!
    out.push(bytes.subarray(at, at + n))
    at += n
  }
  return out
}

/** Every table a hot op or a replica's batch writes, as rows (the entries' ids included: new entries get theirs in the ops' order). */
export function manifestTables(sqlite: SQLite.Database): Record<string, unknown[]> {
  const all = (q: string) => sqlite.prepare(q).all()
  return {
    entries: all('select * from entries order by id'),
    holdings: all('select e.key, e.variant, h.node_id, h.stored_at from entry_nodes h join entries e on e.id = h.entry_id order by 1, 2, 3'),
    counts: all('select n from entries_count'),
    nodeHoldings: all('select * from node_holdings order by node_id'),
    searchQueue: all('select * from entries_search_queue order by rid'),
    nodes: all('select * from nodes order by id'),
  }
}

export { queryPlans } from '../test-support/query-plans.ts'
