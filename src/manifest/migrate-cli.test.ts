import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { openDatabase } from './database.ts'
import { MIGRATIONS, appliedMigrations } from './migrate.ts'
import { tempDir } from './test-helpers.ts'

const run = promisify(execFile)
const CLI = fileURLToPath(new URL('./migrate-cli.ts', import.meta.url))
const ROOT = path.resolve(path.dirname(CLI), '../..')

function cli(env: Record<string, string>) {
  return run(process.execPath, ['--import', 'tsx', CLI], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', CAJE_NODE_ID: 'test-node', ...env },
  })
}

describe('migrate-cli', () => {
  const cleanups: (() => void)[] = []
  afterEach(() => {
    for (const c of cleanups.splice(0)) c()
  })

  it('migrates one file from several processes started together', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const results = await Promise.all([1, 2].map(() => cli({ CAJE_DATABASE_PATH: file })))
    const logs = results.map((r) => r.stderr).join('')
    expect(logs.match(/"manifest migrated"/g), logs).toHaveLength(1)
    const { db } = openDatabase({ path: file, readonly: true })
    expect(await appliedMigrations(db)).toEqual(Object.keys(MIGRATIONS))
    await db.destroy()
  }, 60_000)

  it('does nothing on a LiteFS replica', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    fs.writeFileSync(path.join(dir, '.primary'), 'machine-a')
    const file = path.join(dir, 'manifest.db')
    const { stderr } = await cli({ CAJE_DATABASE_PATH: file, CAJE_LITEFS_DIR: dir, CAJE_CLUSTER_SECRET: 'x'.repeat(32) })
    expect(stderr).toContain('skipped')
    expect(fs.existsSync(file)).toBe(false)
  }, 60_000)
})
