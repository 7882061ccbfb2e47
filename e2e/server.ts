// The server the e2e specs drive. For now: the admin app alone, mounted at
// /_caje like the main app does, over a migrated SQLite file in a temp dir and
// an in-process AdminActions over arrays. To run the specs against the full
// caje server, replace the body of `startServer` and keep its signature.

import fs from 'node:fs'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { createAdminApp } from '../src/admin/app.ts'
import { createMemoryActions, sampleEntries } from '../src/admin/memory-actions.ts'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/manifest/database.ts'
import { migrateToLatest } from '../src/manifest/migrate.ts'

export interface E2eServer {
  /** `http://localhost:PORT`: WebAuthn refuses IP-address origins. */
  origin: string
  /** The CAJE_ADMIN_PASSWORD the server was started with. */
  adminPassword: string
  /** A URL the list shows, for purge. */
  sampleUrl: string
  close(): Promise<void>
}

export async function startServer(): Promise<E2eServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caje-e2e-'))
  const adminPassword = 'e2e admin password 1234'
  let handler: (req: Request, env: unknown) => Response | Promise<Response> = () => new Response('starting', { status: 503 })
  const server = serve({ fetch: (req, env) => handler(req, env), port: 0, hostname: '127.0.0.1' })
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  const port = (server.address() as AddressInfo).port
  const origin = `http://localhost:${port}`

  const config = loadConfig({
    CAJE_DATA_DIR: dir,
    CAJE_NODE_ID: 'e2e-node-1',
    CAJE_REGION: 'ams',
    PORT: String(port),
    CAJE_PUBLIC_ORIGIN: origin,
    CAJE_ADMIN_PASSWORD: adminPassword,
  })
  const { db } = openDatabase({ path: config.databasePath })
  await migrateToLatest(db)
  const sample = sampleEntries({ n: 240, nodeId: config.nodeId, peers: ['e2e-node-2', 'e2e-node-3'], now: Date.now() })
  const actions = createMemoryActions({ nodeId: config.nodeId, region: config.region, hitRatio: 0.873, populateDelayMs: 10, ...sample })
  const app = new Hono().route('/_caje', createAdminApp({ config, db, actions, log: () => {} }))
  handler = (req, env) => app.fetch(req, env as object)

  return {
    origin,
    adminPassword,
    sampleUrl: sample.disk.find((e) => e.url.endsWith('/assets/app-2.js'))!.url,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await db.destroy()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}
