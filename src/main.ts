// The only module with side effects at start: read config, start the node,
// announce it, reload the rules file on SIGHUP, and shut down gracefully on
// SIGTERM / SIGINT.

import { startBanner } from './banner.ts'
import { startCaje } from './caje.ts'
import { ConfigError, loadConfig } from './config.ts'
import { createLogger } from './log.ts'
import { HEAP_LOG_ENV, HEAP_LOG_INTERVAL_MS, logHeap } from './thread-heap.ts'

async function main(): Promise<void> {
  const heapLog = process.env[HEAP_LOG_ENV]
  if (heapLog) logHeap(heapLog, 'main', HEAP_LOG_INTERVAL_MS)
  let config
  try {
    config = loadConfig(process.env, process.argv.slice(2))
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`caje: configuration error: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
  const log = createLogger({ nodeId: config.nodeId })
  const node = await startCaje(config, log)

  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    log({ msg: 'shutting down', signal })
    node.close().then(
      () => {
        log({ msg: 'stopped' })
        process.exit(0)
      },
      (err: unknown) => {
        log({ level: 'error', msg: 'shutdown failed', error: (err as Error).message })
        process.exit(1)
      },
    )
  }
  // SIGHUP reloads the rules file (CAJE_CONFIG); a file with mistakes is logged and the running rules stay.
  process.on('SIGHUP', () => {
    if (!stopping) node.rules.reload()
  })
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))

  // Announced only once the handlers above are in place: whoever starts caje may signal it as
  // soon as it says it listens.
  const banner = startBanner({ config, url: node.url, demoOrigin: node.demoOrigin, internalListenUrl: node.internalListenUrl, notices: node.notices })
  process.stdout.write(banner.join('\n') + '\n')
  log({ msg: 'started', url: node.url, demo: node.demoOrigin !== undefined, cacheDir: config.cacheDir, cacheMaxBytes: config.cacheMaxBytes, cacheMaxEntries: config.cacheMaxEntries, cacheMaxEntriesFrom: config.cacheMaxEntriesMemoryBytes === undefined ? 'CAJE_CACHE_MAX_ENTRIES' : `auto: a quarter of ${Math.round(config.cacheMaxEntriesMemoryBytes / 2 ** 20)} MiB of memory`, database: config.databasePath })
}

main().catch((err: unknown) => {
  process.stderr.write(`caje: failed to start: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
