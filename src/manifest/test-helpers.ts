// Shared set-up for the manifest tests: real SQLite files in temp dirs.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
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
