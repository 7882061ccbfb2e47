import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { openDatabase } from './database.ts'
import { startFakeLitefs } from '../test-support/fake-litefs.ts'
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

  it('does nothing where LiteFS says this node is not the primary, including while no primary is known', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    for (const status of [{ isPrimary: false, hostname: 'machine-a' }, { isPrimary: false, hostname: '' }]) {
      // No `.primary` file in the dir: under LiteFS that is also what "no primary known" looks like.
      const litefs = await startFakeLitefs(status)
      try {
        const { stderr } = await cli({ CAJE_DATABASE_PATH: file, CAJE_LITEFS_DIR: dir, CAJE_LITEFS_API: litefs.url, CAJE_CLUSTER_SECRET: 'x'.repeat(32) })
        expect(stderr).toContain('skipped')
      } finally {
        await litefs.close()
      }
      expect(fs.existsSync(file)).toBe(false)
    }
  }, 60_000)

  it('migrates where LiteFS says this node is the primary, and fails clearly when LiteFS cannot be asked', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const litefs = await startFakeLitefs({ isPrimary: true })
    const env = { CAJE_DATABASE_PATH: file, CAJE_LITEFS_DIR: dir, CAJE_LITEFS_API: litefs.url, CAJE_CLUSTER_SECRET: 'x'.repeat(32) }
    try {
      const { stderr } = await cli(env)
      expect(stderr).toContain('"manifest migrated"')
    } finally {
      await litefs.close()
    }
    const failed = await cli(env).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    )
    expect(failed?.code).toBe(1)
    expect(failed?.stderr).toMatch(/cannot reach the LiteFS API/)
  }, 60_000)
})
