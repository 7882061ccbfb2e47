// `node --import tsx src/manifest/migrate-cli.ts`: bring the manifest schema
// up to date and exit. litefs.yml runs it on candidate nodes, after LiteFS
// has promoted them and before the app starts, so a deploy with a new
// migration fails visibly before serving. The app also migrates at start when
// it is the writer; both are idempotent.
//
// Under LiteFS it migrates only when LiteFS's API says this node is primary:
// a replica, or a node that knows no primary (the `.primary` file is missing
// then too), must not write. Exit codes: 0 done or skipped, 1 migration or
// LiteFS API failure, 2 configuration error.
//
// An entry point like main.ts: the only other file here with side effects.

import { ConfigError, loadConfig } from '../config.ts'
import { openDatabase } from './database.ts'
import { jsonLog } from './log.ts'
import { migrateToLatest } from './migrate.ts'
import { describeRole, fetchLitefsStatus, roleFromStatus } from './primary.ts'

async function run(): Promise<number> {
  let config
  try {
    config = loadConfig(process.env, process.argv.slice(2))
  } catch (err) {
    if (err instanceof ConfigError) {
      jsonLog('error', `configuration error: ${err.message}`, { variable: err.variable })
      return 2
    }
    throw err
  }
  if (config.litefsDir) {
    let role
    try {
      role = roleFromStatus(await fetchLitefsStatus(config.litefsApi), config.primaryUrlTemplate, config.port)
    } catch (err) {
      jsonLog('error', `manifest migrations not run: ${err instanceof Error ? err.message : String(err)}`, { api: config.litefsApi })
      return 1
    }
    if (role.kind === 'replica') {
      // A candidate that did not win the lease, or no primary yet: the primary
      // migrates (caje does so at start and on promotion).
      jsonLog('info', 'manifest migrations skipped: LiteFS says this node is not the primary', describeRole(role))
      return 0
    }
  }
  const { db } = openDatabase({ path: config.databasePath })
  try {
    const applied = await migrateToLatest(db)
    jsonLog('info', applied.length ? 'manifest migrated' : 'manifest schema already up to date', { database: config.databasePath, applied })
    return 0
  } catch (err) {
    jsonLog('error', err instanceof Error ? err.message : String(err), { database: config.databasePath })
    return 1
  } finally {
    await db.destroy()
  }
}

process.exitCode = await run()
