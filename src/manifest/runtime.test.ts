import fs from 'node:fs'
import type { Server } from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import { MIGRATIONS, appliedMigrations } from './migrate.ts'
import { countEntries, listManifest } from './repositories.ts'
import { startManifest } from './runtime.ts'
import type { ManifestRuntime } from './runtime.ts'
import { captureLog, entry, tempDir, waitFor } from './test-helpers.ts'

const SECRET = 'a-cluster-secret-of-some-length'

describe('startManifest', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('without LiteFS: migrates, writes directly, reads through the same handle', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const m = await startManifest({
      databasePath: path.join(dir, 'm.db'),
      litefsDir: undefined,
      primaryUrlTemplate: 'http://{host}:{port}',
      port: 8080,
      nodeId: 'n1',
      clusterSecret: undefined,
      log: captureLog().log,
    })
    cleanups.push(() => m.close())
    expect(await appliedMigrations(m.readDb())).toEqual(Object.keys(MIGRATIONS))
    m.writer.submit({ type: 'stored', nodeId: 'n1', entry: entry({ url: 'https://ex.com/' }) })
    await m.writer.flush()
    expect(await countEntries(m.readDb())).toBe(1)
    expect(m.writer.stats()).toMatchObject({ mode: 'direct', role: 'primary' })
  })

  it('under LiteFS: a replica reads read-only and writes through the primary until it is promoted', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const litefs = path.join(dir, 'litefs')
    fs.mkdirSync(litefs)
    const file = path.join(litefs, 'manifest.db')
    const common = { databasePath: file, primaryUrlTemplate: 'http://127.0.0.1:{port}', clusterSecret: SECRET, pollIntervalMs: 20, log: captureLog().log }

    // The primary: no .primary file in its own (simulated) LiteFS dir.
    const primaryDir = path.join(dir, 'primary-litefs')
    fs.mkdirSync(primaryDir)
    const primary = await startManifest({ ...common, litefsDir: primaryDir, port: 0, nodeId: 'p' })
    cleanups.push(() => primary.close())
    const server = await listen(primary)
    cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))))
    const port = (server.address() as net.AddressInfo).port

    // The replica: .primary names the primary's host; the template adds the port.
    fs.writeFileSync(path.join(litefs, '.primary'), 'primary-host')
    const replica = await startManifest({ ...common, litefsDir: litefs, port, nodeId: 'r' })
    cleanups.push(() => replica.close())
    expect(replica.role.current()).toMatchObject({ kind: 'replica', primaryUrl: `http://127.0.0.1:${port}` })
    await expect(replica.readDb().insertInto('admins').values({ id: 'x', name: 'x', created_at: 1 }).execute()).rejects.toMatchObject({
      code: 'SQLITE_READONLY',
    })

    replica.writer.submit({ type: 'stored', nodeId: 'r', entry: entry({ url: 'https://ex.com/r' }) })
    await replica.writer.flush({ timeoutMs: 5000 })
    expect((await listManifest(replica.readDb())).entries.map((e) => [e.url, e.nodeIds])).toEqual([['https://ex.com/r', ['r']]])

    // LiteFS promotes the replica: .primary disappears.
    fs.rmSync(path.join(litefs, '.primary'))
    await waitFor(() => replica.writer.writableDb() !== undefined, 3000, 'promotion')
    replica.writer.submit({ type: 'stored', nodeId: 'r', entry: entry({ url: 'https://ex.com/r2' }) })
    await replica.writer.flush({ timeoutMs: 5000 })
    expect(replica.writer.stats()).toMatchObject({ mode: 'direct', role: 'primary', written: 2 })
    expect(await countEntries(replica.readDb())).toBe(2)
  })
})

async function listen(m: ManifestRuntime): Promise<Server> {
  const root = new Hono()
  root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => m.writer.writableDb(), role: () => m.role.current() }))
  return new Promise<Server>((resolve) => {
    const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
  })
}
