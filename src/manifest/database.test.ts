import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openDatabase } from './database.ts'
import { migrateToLatest } from './migrate.ts'
import { tempDir } from './test-helpers.ts'

describe('openDatabase', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('opens a writable file with WAL, a busy timeout and foreign keys', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const { db, sqlite } = openDatabase({ path: path.join(dir, 'nested', 'manifest.db') })
    cleanups.push(() => db.destroy())
    expect(sqlite.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(sqlite.pragma('busy_timeout', { simple: true })).toBe(5000)
    expect(sqlite.pragma('foreign_keys', { simple: true })).toBe(1)
  })

  it('read-only mode refuses writes and never creates the file', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    expect(() => openDatabase({ path: file, readonly: true })).toThrow()

    const writable = openDatabase({ path: file })
    await migrateToLatest(writable.db)
    await writable.db.insertInto('admins').values({ id: 'a1', name: 'Ada', created_at: 1 }).execute()

    const replica = openDatabase({ path: file, readonly: true })
    cleanups.push(() => replica.db.destroy())
    // Reads work, and see the writer's WAL.
    expect(await replica.db.selectFrom('admins').select('name').execute()).toEqual([{ name: 'Ada' }])
    await expect(replica.db.insertInto('admins').values({ id: 'a2', name: 'Bob', created_at: 2 }).execute()).rejects.toMatchObject({
      code: 'SQLITE_READONLY',
    })
    expect(() => replica.sqlite.pragma('journal_mode = DELETE')).toThrow()
    await writable.db.destroy()
  })
})
