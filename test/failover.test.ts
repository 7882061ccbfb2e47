// A replica that loses its primary and gets it back, as during a LiteFS
// failover, while traffic goes on: two caje processes sharing one manifest
// file, each with a fake of LiteFS's HTTP API. While LiteFS names no primary
// the replica keeps serving, queues its manifest writes (never writing the
// file itself), answers admin writes 503 with Retry-After and admin reads as
// usual; when a primary is named again the queue drains into it.

import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import type { Hono } from 'hono'
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import { Client, PASSWORD } from '../src/admin/test-setup.test-support.ts'
import { openDatabase } from '../src/manifest/database.ts'
import { migrateToLatest } from '../src/manifest/migrate.ts'
import { startFakeLitefs, type FakeLitefs } from '../src/test-support/fake-litefs.ts'
import { startCajeProcess, type CajeProcess } from '../src/test-support/caje-process.ts'
import { startOrigin, tempDir, waitFor, type TestOrigin } from '../src/test-support/servers.ts'

const SECRET = 'cluster-secret-for-the-failover-test'
const TOKEN = 'api-token-for-the-failover-test-0123456789'

type Proc = CajeProcess

const spawnCaje = (name: string, env: Record<string, string>): Promise<Proc> => startCajeProcess({ CAJE_NODE_ID: name, CAJE_SHUTDOWN_TIMEOUT_MS: '2000', ...env })

async function stop(p: Proc | undefined): Promise<void> {
  await p?.stop()
}

function get(p: Proc, pathname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: p.port, path: pathname, headers: { host: 'cdn.test' }, agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode!))
      })
      .on('error', reject)
  })
}

interface Health {
  role: string
  manifestWriter: { mode: string; queued: number; written: number; failedAttempts: number }
}
const health = async (p: Proc) => (await (await fetch(`${p.url}/_caje/health`)).json()) as Health
const internalRole = async (p: Proc) =>
  (await (await fetch(`${p.url}/_caje/internal/role`, { headers: { authorization: `Bearer ${SECRET}` } })).json()) as { role: string; primaryUrl?: string }

describe('a replica loses and regains its primary while traffic continues', () => {
  let origin: TestOrigin
  let root: string
  let primary: Proc | undefined
  let replica: Proc | undefined
  const fakes: FakeLitefs[] = []

  afterAll(async () => {
    await Promise.all([stop(primary), stop(replica)])
    await Promise.all(fakes.map((f) => f.close()))
    await origin?.close()
    if (root) await fs.rm(root, { recursive: true, force: true })
  })

  it('keeps serving, queues writes, answers admin writes 503 while no primary is known, and catches up after', async () => {
    origin = await startOrigin((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' })
      res.end(`origin: ${req.url}`)
    })
    root = await tempDir('caje-failover-')
    const database = path.join(root, 'shared', 'manifest.db')
    await fs.mkdir(path.dirname(database))
    const { db } = openDatabase({ path: database })
    await migrateToLatest(db)
    await db.destroy()
    const common = {
      CAJE_ORIGIN: origin.url,
      CAJE_DATABASE_PATH: database,
      CAJE_LITEFS_DIR: root,
      CAJE_CLUSTER_SECRET: SECRET,
      CAJE_API_TOKEN: TOKEN,
      CAJE_ADMIN_PASSWORD: PASSWORD,
      // LiteFS hostnames carry the port here: one template for both nodes.
      CAJE_PRIMARY_URL_TEMPLATE: 'http://{host}',
    }
    const litefsP = await startFakeLitefs({ isPrimary: true })
    fakes.push(litefsP)
    primary = await spawnCaje('primary', { ...common, CAJE_LITEFS_API: litefsP.url, CAJE_CACHE_DIR: path.join(root, 'cache-p') })
    const primaryHost = `127.0.0.1:${primary.port}`
    const litefsR = await startFakeLitefs({ isPrimary: false, hostname: primaryHost })
    fakes.push(litefsR)
    replica = await spawnCaje('replica', { ...common, CAJE_LITEFS_API: litefsR.url, CAJE_CACHE_DIR: path.join(root, 'cache-r') })
    const r = replica
    expect(await internalRole(r)).toMatchObject({ role: 'replica', primaryUrl: `http://${primaryHost}` })

    const admin = new Client({ request: (p: string, init: RequestInit) => fetch(r.url + p, { ...init, redirect: 'manual' }) } as unknown as Hono)
    expect((await admin.signInWithPassword()).status).toBe(303)
    const createToken = (name: string) => admin.request('/_caje/tokens', { json: { name } })

    // Traffic that never stops: proxied misses (each one a manifest write) and admin reads.
    const failures: string[] = []
    let n = 0
    let adminReads = 0
    let running = true
    const traffic = (async () => {
      while (running) {
        try {
          const status = await get(r, `/load/${n++}`)
          if (status !== 200) failures.push(`GET /load/${n - 1}: ${status}`)
          const list = await fetch(`${r.url}/_caje/list?limit=5`, { headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json' } })
          await list.arrayBuffer()
          if (list.status !== 200) failures.push(`GET /_caje/list: ${list.status}`)
          adminReads++
        } catch (error) {
          // A request that fails outright is a failure of the test, reported below, not a stray rejection.
          failures.push(`request failed: ${String(error)}`)
          break
        }
      }
    })()
    onTestFinished(() => {
      running = false
    })
    const heldByReplica = async () => {
      const { db } = openDatabase({ path: database, readonly: true })
      try {
        const rows = await db.selectFrom('entry_nodes').select('node_id').where('node_id', '=', 'replica').execute()
        return rows.length
      } finally {
        await db.destroy()
      }
    }
    await waitFor(async () => (await heldByReplica()) >= 5, 'the replica to record entries through the primary', 15_000)

    // LiteFS loses the primary (for the replica, `.primary` would now be missing).
    const failedBefore = (await health(r)).manifestWriter.failedAttempts
    litefsR.losePrimary()
    await waitFor(async () => (await internalRole(r)).primaryUrl === undefined, 'the replica to know no primary', 10_000)
    // A delivery attempt that failed for want of a primary: any batch in flight before has landed.
    await waitFor(async () => (await health(r)).manifestWriter.failedAttempts > failedBefore, 'a delivery attempt without a primary', 10_000)
    const recordedBefore = await heldByReplica()
    const nBefore = n
    await waitFor(async () => n >= nBefore + 10 && (await health(r)).manifestWriter.queued > 0, 'traffic during the outage', 15_000)
    const during = await health(r)
    expect(during.role).toBe('replica, primary unknown')
    // Writes wait in the queue; the replica never switched to writing the file itself
    // (health shows counts only; the held count below is unchanged).
    expect(during.manifestWriter.queued).toBeGreaterThan(0)
    expect(await heldByReplica()).toBe(recordedBefore)
    // Admin writes: the documented 503 with a retry hint. Admin reads: as usual (the traffic loop checks them).
    const refused = await createToken('during-the-outage')
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/)
    expect(await refused.text()).toMatch(/does not know its primary/)
    expect((await admin.page('/_caje/passkeys')).res.status).toBe(200)

    // LiteFS names the primary again: the queue drains into it and admin writes work.
    litefsR.follow(primaryHost)
    const nAfter = n
    await waitFor(async () => (await health(r)).manifestWriter.queued === 0 && n > nAfter + 5, 'the queue to drain', 20_000)
    running = false
    await traffic
    // Stores finish after their responses: every one of them reaches the manifest.
    await waitFor(async () => (await heldByReplica()) === n, 'every proxied response recorded as held by the replica', 15_000)
    expect((await createToken('after-the-outage')).status).toBe(201)
    expect(failures).toEqual([])
    expect(adminReads).toBe(n)
    console.log(`failover: ${n} proxied requests and ${adminReads} admin reads on the replica, ${nAfter - nBefore} of them while no primary was known; 0 failures`)
  }, 90_000)
})
