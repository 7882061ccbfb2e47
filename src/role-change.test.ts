// An admin stays signed in while LiteFS moves the primary: two nodes sharing
// one manifest file, each with a fake of LiteFS's HTTP API. A promotion gives
// a node a writable handle and a demotion destroys it, so the admin must take
// the handle of the moment for each request, never the one from start-up.

import path from 'node:path'
import fs from 'node:fs/promises'
import type { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { Client, PASSWORD } from './admin/test-setup.test-support.ts'
import { openDatabase } from './manifest/database.ts'
import { startFakeLitefs, type FakeLitefs } from './test-support/fake-litefs.ts'
import { startNode, startOrigin, tempDir, waitFor, type TestNode } from './test-support/servers.ts'

const SECRET = 'cluster-secret-for-the-role-change-test'

/** The admin test client, over HTTP to a running node (redirects are the client's to see). */
function httpClient(node: TestNode): Client {
  const app = { request: (p: string, init: RequestInit) => fetch(node.url + p, { ...init, redirect: 'manual' }) }
  return new Client(app as unknown as Hono)
}

describe('admin while LiteFS moves the primary', () => {
  const cleanups: (() => Promise<void> | void)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('a signed-in admin keeps working on a node that is promoted (writes) and on one that is demoted (reads)', async () => {
    const origin = await startOrigin((_req, res) => res.end('ok'))
    cleanups.push(() => origin.close())
    const root = await tempDir('caje-role-change-')
    cleanups.push(() => fs.rm(root, { recursive: true, force: true }))
    const database = path.join(root, 'shared', 'manifest.db')
    await fs.mkdir(path.dirname(database))

    // LiteFS hostnames carry the port here, so one URL template serves both nodes.
    const env = (litefs: FakeLitefs, name: string) => ({
      CAJE_NODE_ID: name,
      CAJE_DATABASE_PATH: database,
      CAJE_LITEFS_DIR: root,
      CAJE_LITEFS_API: litefs.url,
      CAJE_PRIMARY_URL_TEMPLATE: 'http://{host}',
      CAJE_CLUSTER_SECRET: SECRET,
      CAJE_ADMIN_PASSWORD: PASSWORD,
    })
    const litefsA = await startFakeLitefs({ isPrimary: true })
    cleanups.push(() => litefsA.close())
    const a = await startNode(origin.url, env(litefsA, 'node-a'), { dir: path.join(root, 'a') })
    cleanups.push(() => a.close())
    const hostA = `127.0.0.1:${a.port}`
    const litefsB = await startFakeLitefs({ isPrimary: false, hostname: hostA })
    cleanups.push(() => litefsB.close())
    const b = await startNode(origin.url, env(litefsB, 'node-b'), { dir: path.join(root, 'b') })
    cleanups.push(() => b.close())
    const hostB = `127.0.0.1:${b.port}`
    expect(b.manifest.role.current()).toMatchObject({ kind: 'replica', primaryUrl: `http://${hostA}` })

    // Signed in on both: on A directly, on B through A (B's sign-in is relayed to its primary).
    const adminA = httpClient(a)
    const adminB = httpClient(b)
    expect((await adminA.signInWithPassword()).status).toBe(303)
    expect((await adminB.signInWithPassword()).status).toBe(303)
    expect(adminB.csrfToken).toBeDefined()
    const createToken = (client: Client, name: string) => client.request('/_caje/tokens', { json: { name } })
    const tokens = async () => {
      const { db } = openDatabase({ path: database, readonly: true })
      try {
        return (await db.selectFrom('api_tokens').select('name').orderBy('name').execute()).map((r) => r.name)
      } finally {
        await db.destroy()
      }
    }
    expect((await createToken(adminB, 'from-b-as-replica')).status).toBe(201)

    // LiteFS hands the lease from A to B (a rolling deploy with promote: true does this).
    litefsA.follow(hostB)
    litefsB.promote()
    await waitFor(() => b.manifest.writer.writableDb() !== undefined && a.manifest.writer.writableDb() === undefined, 'B promoted and A demoted', 10_000)

    // B, promoted: its admin writes go into its new writable handle (a read-only handle kept from start-up would say SQLITE_READONLY).
    const onB = await createToken(adminB, 'from-b-as-primary')
    expect(onB.status, await onB.clone().text()).toBe(201)
    // A, demoted: its writable handle is gone; reads use the read-only one (a kept handle would say "driver has already been destroyed").
    const page = await adminA.page('/_caje/passkeys')
    expect(page.res.status, page.html.slice(0, 300)).toBe(200)
    expect(page.html).toContain('from-b-as-primary')
    // And A's admin writes now reach B.
    expect((await createToken(adminA, 'from-a-as-replica')).status).toBe(201)
    expect(await tokens()).toEqual(['from-a-as-replica', 'from-b-as-primary', 'from-b-as-replica'])

    // Back again: A promoted, B demoted, both still signed in.
    litefsB.follow(hostA)
    litefsA.promote()
    await waitFor(() => a.manifest.writer.writableDb() !== undefined && b.manifest.writer.writableDb() === undefined, 'A promoted again', 10_000)
    expect((await createToken(adminA, 'from-a-as-primary')).status).toBe(201)
    expect((await adminB.page('/_caje/passkeys')).res.status).toBe(200)
    expect(await tokens()).toEqual(['from-a-as-primary', 'from-a-as-replica', 'from-b-as-primary', 'from-b-as-replica'])
  })
})
