// Shared set-up for the manifest tests: real SQLite files in temp dirs.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { openDatabase } from './database.ts'
import type { OpenedDatabase } from './database.ts'
import type { LogLevel, ManifestLog } from './log.ts'
import { migrateToLatest } from './migrate.ts'
import type { EntryRecord } from './repositories.ts'

export function tempDir(prefix = 'caje-manifest-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
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

export interface CapturedLog {
  log: ManifestLog
  lines: { level: LogLevel; msg: string; fields?: Record<string, unknown> }[]
}

export function captureLog(): CapturedLog {
  const lines: CapturedLog['lines'] = []
  return { lines, log: (level, msg, fields) => void lines.push({ level, msg, fields }) }
}

export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
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
 * Watches the event loop: a timer every 5 ms records the longest gap between
 * two of its runs. A synchronous SQLite busy wait shows up as a gap of
 * seconds; a loop that keeps turning, as a few milliseconds.
 */
export function loopWatch(): { stop: () => { longestGapMs: number; ticks: number } } {
  let last = performance.now()
  let longestGapMs = 0
  let ticks = 0
  const timer = setInterval(() => {
    const t = performance.now()
    longestGapMs = Math.max(longestGapMs, t - last)
    last = t
    ticks++
  }, 5)
  return {
    stop() {
      clearInterval(timer)
      longestGapMs = Math.max(longestGapMs, performance.now() - last)
      return { longestGapMs, ticks }
    },
  }
}
