import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { BACKSTOP_WAL_PAGES } from './checkpointer.ts'
import { openDatabase } from './database.ts'
import { migrateToLatest } from './migrate.ts'
import { applyOps } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { captureLog, entry, tempDir, waitFor } from './test-helpers.ts'
import { DirectWriter } from './writer.ts'

describe('WAL checkpoints off the event loop', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  function open(checkpointInBackground: boolean) {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const opened = openDatabase({ path: file, checkpointInBackground })
    cleanups.push(() => opened.db.destroy())
    return { ...opened, file }
  }

  const stores = (from: number, n: number): ManifestOp[] =>
    Array.from({ length: n }, (_, i) => ({ type: 'stored', nodeId: 'a', entry: entry({ url: `https://h.test/${'p'.repeat(200)}/${from + i}`, storedAt: 1_700_000_000_000 + from + i }) }))

  it('copies the WAL back from the writer\'s apply thread when the handle leaves it that job', async () => {
    const { db, sqlite, file } = open(true)
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(BACKSTOP_WAL_PAGES)
    await migrateToLatest(db)
    const writer = new DirectWriter({ db, applyThread: true, checkpointWal: true, intervalMs: 10_000, log: captureLog().log })
    for (let b = 0; b < 5; b++) expect(await writer.applyReceived(stores(b * 500, 500))).toEqual({ applied: 500, failed: 0 })
    // More than SQLite's default 1,000 pages went through the WAL, past neither connection's backstop.
    await waitFor(() => writer.checkpoints().frames > 0, 10_000, 'the apply thread to copy the WAL back')
    expect(writer.checkpoints().lastError).toBeUndefined()
    // The thread's last checkpoint as the writer closes, then the handle's close: everything written is in the file.
    await writer.close()
    await db.destroy()
    cleanups.pop()
    expect(fs.existsSync(`${file}-wal`)).toBe(false)
    const reopened = openDatabase({ path: file, readonly: true })
    cleanups.push(() => reopened.db.destroy())
    expect(reopened.sqlite.prepare('select count(*) from entries').pluck().get()).toBe(2500)
  })

  it('leaves checkpoints to SQLite on handles that do not leave them to the apply thread', async () => {
    const { sqlite } = open(false)
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(1000)
  })
})
