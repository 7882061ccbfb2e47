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
import { startFakeLitefs } from '../test-support/fake-litefs.ts'
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
    const file = path.join(dir, 'manifest.db')
    const common = { databasePath: file, litefsDir: dir, primaryUrlTemplate: 'http://127.0.0.1:{port}', clusterSecret: SECRET, reconnectDelayMs: 20, log: captureLog().log }

    // Each node asks its own LiteFS; here, a fake of LiteFS's HTTP API each.
    const primaryLitefs = await startFakeLitefs({ isPrimary: true })
    cleanups.push(() => primaryLitefs.close())
    const primary = await startManifest({ ...common, litefsApi: primaryLitefs.url, port: 0, nodeId: 'p' })
    cleanups.push(() => primary.close())
    const server = await listen(primary)
    cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))))
    const port = (server.address() as net.AddressInfo).port

    // The replica: LiteFS names the primary's host; the template adds the port.
    const replicaLitefs = await startFakeLitefs({ isPrimary: false, hostname: 'primary-host' })
    cleanups.push(() => replicaLitefs.close())
    const replica = await startManifest({ ...common, litefsApi: replicaLitefs.url, port, nodeId: 'r' })
    cleanups.push(() => replica.close())
    expect(replica.role.current()).toMatchObject({ kind: 'replica', primaryUrl: `http://127.0.0.1:${port}` })
    await expect(replica.readDb().insertInto('admins').values({ id: 'x', name: 'x', created_at: 1 }).execute()).rejects.toMatchObject({
      code: 'SQLITE_READONLY',
    })

    replica.writer.submit({ type: 'stored', nodeId: 'r', entry: entry({ url: 'https://ex.com/r' }) })
    await replica.writer.flush({ timeoutMs: 5000 })
    expect((await listManifest(replica.readDb())).entries.map((e) => [e.url, e.nodeIds])).toEqual([['https://ex.com/r', ['r']]])

    // LiteFS promotes the replica.
    replicaLitefs.promote()
    await waitFor(() => replica.writer.writableDb() !== undefined, 10_000, 'promotion')
    replica.writer.submit({ type: 'stored', nodeId: 'r', entry: entry({ url: 'https://ex.com/r2' }) })
    await replica.writer.flush({ timeoutMs: 5000 })
    expect(replica.writer.stats()).toMatchObject({ mode: 'direct', role: 'primary', written: 2 })
    expect(await countEntries(replica.readDb())).toBe(2)
  })

  it('under LiteFS with an internal listener: a replica sends its batches to the primary\'s internal port, not the public one', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const common = { databasePath: file, litefsDir: dir, primaryUrlTemplate: 'http://127.0.0.1:{port}', clusterSecret: SECRET, reconnectDelayMs: 20, log: captureLog().log }
    const primaryLitefs = await startFakeLitefs({ isPrimary: true })
    cleanups.push(() => primaryLitefs.close())
    const primary = await startManifest({ ...common, litefsApi: primaryLitefs.url, port: 0, nodeId: 'p' })
    cleanups.push(() => primary.close())
    // The primary's internal routes listen here; its public port (9) has nothing.
    const server = await listen(primary)
    cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))))
    const internalPort = (server.address() as net.AddressInfo).port

    const replicaLitefs = await startFakeLitefs({ isPrimary: false, hostname: 'primary-host' })
    cleanups.push(() => replicaLitefs.close())
    const replica = await startManifest({ ...common, litefsApi: replicaLitefs.url, port: 9, internalPort, nodeId: 'r' })
    cleanups.push(() => replica.close())
    // Admin relays use the public URL; the writer the internal one.
    expect(replica.role.current()).toMatchObject({ kind: 'replica', primaryUrl: 'http://127.0.0.1:9' })
    replica.writer.submit({ type: 'stored', nodeId: 'r', entry: entry({ url: 'https://ex.com/i' }) })
    await replica.writer.flush({ timeoutMs: 5000 })
    expect(replica.writer.stats()).toMatchObject({ mode: 'remote', target: `http://127.0.0.1:${internalPort}`, written: 1 })
    expect(await countEntries(primary.readDb())).toBe(1)
  })

  it('under LiteFS: with the primary unknown, writes wait in the queue (never written here) and go to the primary LiteFS names next', async () => {
    const { dir, cleanup } = tempDir()
    cleanups.push(cleanup)
    const file = path.join(dir, 'manifest.db')
    const common = { databasePath: file, litefsDir: dir, primaryUrlTemplate: 'http://127.0.0.1:{port}', clusterSecret: SECRET, reconnectDelayMs: 20, log: captureLog().log }
    const primaryLitefs = await startFakeLitefs({ isPrimary: true })
    cleanups.push(() => primaryLitefs.close())
    const primary = await startManifest({ ...common, litefsApi: primaryLitefs.url, port: 0, nodeId: 'p' })
    cleanups.push(() => primary.close())
    const server = await listen(primary)
    cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))))
    const port = (server.address() as net.AddressInfo).port

    // The node starts while LiteFS knows no primary: `.primary` would be missing, as on a primary.
    const litefs = await startFakeLitefs({ isPrimary: false, hostname: '' })
    cleanups.push(() => litefs.close())
    const node = await startManifest({ ...common, litefsApi: litefs.url, port, nodeId: 'n', remote: { backoffMs: 10, maxBackoffMs: 50 } })
    cleanups.push(() => node.close())
    expect(node.role.current()).toEqual({ kind: 'replica', primaryHost: undefined, primaryUrl: undefined })
    expect(node.writer.writableDb()).toBeUndefined()

    node.writer.submit({ type: 'stored', nodeId: 'n', entry: entry({ url: 'https://ex.com/queued' }) })
    await waitFor(() => node.writer.stats().failedAttempts >= 2, 10_000, 'delivery attempts while no primary is known')
    expect(node.writer.stats()).toMatchObject({ mode: 'remote', queued: 1, written: 0 })
    expect(await countEntries(primary.readDb())).toBe(0)

    litefs.follow('primary-host')
    await node.writer.flush({ timeoutMs: 10_000 })
    expect((await listManifest(primary.readDb())).entries.map((e) => [e.url, e.nodeIds])).toEqual([['https://ex.com/queued', ['n']]])
    expect(node.writer.stats()).toMatchObject({ mode: 'remote', queued: 0, written: 1 })
  })
})

async function listen(m: ManifestRuntime): Promise<Server> {
  const root = new Hono()
  root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => m.writer.writableDb(), role: () => m.role.current() }))
  return new Promise<Server>((resolve) => {
    const s = serve({ fetch: root.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server)) as Server
  })
}
