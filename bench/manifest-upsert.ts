// The per-op cost of recording a stored entry in the manifest, and the plans
// and times of the queries that read `entries`, at a given table size.
//
//   npx tsx bench/manifest-upsert.ts [--entries 1000000] [--ops 20000] [--schema latest|before]
//     [--without name,...] [--search inline] [--fts 'detail=none'] [--fts-automerge 4] [--checkpoint thread|inline] [--batch 1000] [--cache-mib 2] [--queries [--plans]]
//
// Ops are applied as the manifest's apply thread applies a replica's batch:
// 1,000 per transaction (--batch: the ops of several batches in one
// transaction, as the thread applies batches that waited behind each other),
// runs of stored ops many rows per statement (statements.ts recordStoredRun). `before` stops at the migration before the
// latest one, so the two schemas are measured side by side with the same
// statements and queries. `--without` drops the named indexes or triggers
// after seeding (what each one costs per op). `--fts-automerge` sets FTS5's automerge
// on the URL search index (default 4). `--search inline` indexes each
// transaction's URLs for the admin filter inside it, as the apply thread does
// once its backlog is past the bound. `--checkpoint inline` leaves the
// WAL's checkpoints in the commits that cross 1,000 pages (SQLite's default),
// `thread` (default) runs them on a manifest apply thread's timer as a node
// does (apply-thread.ts checkpointIntervalMs): the CPU figure then counts that thread too, the time does not. `--cache-mib` sets the handle's page
// cache (PRAGMA cache_size) for the timed ops (default: as the apply thread sets it). Each run
// builds its own temp file and removes it.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { openDatabase } from '../src/manifest/database.ts'
import { MIGRATIONS, migrateTo, migrateToLatest } from '../src/manifest/migrate.ts'
import { entriesMissingOn, listManifest, pruneExpired, sweepPurge } from '../src/manifest/repositories.ts'
import type { EntryRecord } from '../src/manifest/repositories.ts'
import { SEARCH_INDEX_SQL, indexQueuedNow } from '../src/manifest/search.ts'
import { hotStatements } from '../src/manifest/statements.ts'
import { APPLY_CACHE_MIB, startApplyThread } from '../src/manifest/apply-thread.ts'
import { BACKSTOP_WAL_PAGES, CHECKPOINT_INTERVAL_MS } from '../src/manifest/checkpointer.ts'
import type { StoredOp } from '../src/manifest/statements.ts'
import { queryPlans } from '../src/test-support/query-plans.ts'

const { values } = parseArgs({
  options: {
    entries: { type: 'string' },
    ops: { type: 'string' },
    schema: { type: 'string' },
    without: { type: 'string' },
    search: { type: 'string' },
    fts: { type: 'string' },
    'fts-automerge': { type: 'string' },
    checkpoint: { type: 'string' },
    queries: { type: 'boolean' },
    plans: { type: 'boolean' },
    batch: { type: 'string' },
    'cache-mib': { type: 'string' },
  },
})
const ENTRIES = Number(values.entries ?? 1_000_000)
const CACHE_MIB = Number(values['cache-mib'] ?? APPLY_CACHE_MIB)
const OPS = Number(values.ops ?? 20_000)
const BATCH = Number(values.batch ?? 1000)
const SCHEMA = values.schema ?? 'latest'
const NAMES = Object.keys(MIGRATIONS)
const BEFORE = NAMES[NAMES.length - 2]!
const WITHOUT = (values.without ?? '').split(',').filter((n) => n !== '')
const SEARCH_INLINE = values.search === 'inline'
const CHECKPOINT = values.checkpoint ?? 'thread'
if (!['thread', 'inline'].includes(CHECKPOINT)) throw new Error('--checkpoint: thread (as a node: on an apply thread, the writer past its backstop) or inline (in the commit past 1,000 pages)')
if (!['latest', 'before'].includes(SCHEMA)) throw new Error('--schema: latest or before')
if (values.search !== undefined && !SEARCH_INLINE) throw new Error('--search: inline (or leave it out)')

const HOSTS = ['www.example.com', 'static.example.com', 'api.example.net', 'rare.example.org']
const NOW = 1_760_000_000_000

function record(i: number, storedAt: number): EntryRecord {
  // One entry in 1000 is on the rare host: the host filter's selective case.
  const host = i % 1000 === 7 ? HOSTS[3]! : HOSTS[i % 3]!
  const url = `https://${host}/assets/${(i % 97).toString(36)}/file-${i}.js?v=${i % 13}`
  return {
    key: url,
    variant: i % 4 === 0 ? 'gzip-variant-digest-0123456789abcdef' : '',
    host,
    url,
    status: 200,
    size: 1000 + (i % 5000),
    contentType: 'application/javascript',
    storedAt,
    // Lifetimes vary, so the stale/delete columns are not in insertion order.
    staleAt: storedAt + 60_000 * (1 + (i % 120)),
    deleteAt: storedAt + 60_000 * (2 + (i % 240)),
    tags: i % 10 === 0 ? [`post-${i % 1000}`] : [],
    varyHeaders: i % 4 === 0 ? { 'accept-encoding': 'gzip' } : {},
  }
}

/** A shuffled order, so keys land all over the primary-key index as real traffic does. */
function permutation(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i)
  let s = seed
  for (let i = n - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff
    const j = s % (i + 1)
    ;[a[i], a[j]] = [a[j]!, a[i]!]
  }
  return a
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caje-upsert-'))
const opened = openDatabase({ path: path.join(dir, 'manifest.db'), checkpointInBackground: CHECKPOINT === 'thread' })
// As a node: an apply thread, started once the schema is in place, checkpoints the WAL on its timer.
let checkpointThread: ReturnType<typeof startApplyThread> | undefined
try {
  if (SCHEMA === 'latest') await migrateToLatest(opened.db)
  else await migrateTo(opened.db, BEFORE)
  if (CHECKPOINT === 'thread') checkpointThread = startApplyThread({ path: path.join(dir, 'manifest.db'), checkpointIntervalMs: CHECKPOINT_INTERVAL_MS, walAutocheckpointPages: BACKSTOP_WAL_PAGES })
  const { sqlite } = opened
  // As the apply thread's handle (apply-thread.ts): statement journals in memory.
  sqlite.pragma('temp_store = 2')
  const hot = hotStatements(sqlite)
  const search = {
    removeMany: sqlite.prepare(SEARCH_INDEX_SQL.removeMany),
    addMany: sqlite.prepare(SEARCH_INDEX_SQL.addMany),
    dequeueMany: sqlite.prepare(SEARCH_INDEX_SQL.dequeueMany),
  }
  const nodes = ['node1', 'node2', 'node3']
  for (const id of nodes) hot.upsertNode({ id, region: 'r', internalUrl: `http://127.0.0.1/${id}`, startedAt: NOW }, NOW)
  const stored = (nodeId: string, entry: EntryRecord): StoredOp => ({ type: 'stored', nodeId, entry })

  // Seed in batches of 1000 ops, as the writer applies them.
  const seedOrder = permutation(ENTRIES, 1)
  const batch = sqlite.transaction((ops: StoredOp[]) => hot.recordStoredRun(ops, 0, ops.length, hot.newestPurgeAt()))
  for (let n = 0; n < ENTRIES; n += 1000) {
    const ops: StoredOp[] = []
    for (let k = n; k < Math.min(ENTRIES, n + 1000); k++) ops.push(stored(nodes[seedOrder[k]! % 3]!, record(seedOrder[k]!, NOW - ENTRIES + seedOrder[k]!)))
    batch(ops)
  }
  if (values.fts !== undefined) {
    // The URL search index made again with other FTS5 options (e.g. `detail=none`), to measure them.
    sqlite.exec(`drop table entries_search; create virtual table entries_search using fts5(url, content='entries', content_rowid='rowid', tokenize='trigram', ${values.fts})`)
  }
  if (values['fts-automerge'] !== undefined) {
    // FTS5's automerge: how many segments of one level it lets gather before merging them into one of the next.
    sqlite.exec(`insert into entries_search (entries_search, rank) values ('automerge', ${Math.floor(Number(values['fts-automerge']))})`)
  }
  // Index the URLs so the filter's trigram path is what runs.
  sqlite.exec(`insert into entries_search(entries_search) values ('rebuild'); delete from entries_search_queue`)
  for (const name of WITHOUT) {
    const kind = sqlite.prepare('select type from sqlite_schema where name = ?').pluck().get(name)
    if (kind !== 'index' && kind !== 'trigger') throw new Error(`--without ${name}: no index or trigger of that name`)
    sqlite.exec(`drop ${kind} ${name}`)
  }
  sqlite.pragma('wal_checkpoint(TRUNCATE)')
  sqlite.pragma(`cache_size = ${-1024 * CACHE_MIB}`)

  /** This thread's CPU time in µs (Linux, ticks of 10 ms): without the checkpoint thread's. */
  const threadCpuUs = () => {
    const fields = fs.readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10_000
  }

  function timeOps(label: string, make: (n: number) => { node: string; entry: EntryRecord }): void {
    const list = Array.from({ length: OPS }, (_, n) => stored(make(n).node, make(n).entry))
    const apply = sqlite.transaction((from: number, to: number) => {
      hot.recordStoredRun(list, from, to, hot.newestPurgeAt())
      if (SEARCH_INLINE) indexQueuedNow(search, to - from + 100)
    })
    const t0 = process.hrtime.bigint()
    const cpu0 = process.cpuUsage()
    const thread0 = threadCpuUs()
    for (let n = 0; n < OPS; n += BATCH) apply(n, Math.min(OPS, n + BATCH))
    const threadUs = (threadCpuUs() - thread0) / OPS
    const us = Number(process.hrtime.bigint() - t0) / 1000 / OPS
    // CPU time, unlike the wall clock, hardly moves with other work on the machine.
    const cpu = process.cpuUsage(cpu0)
    const cpuUs = (cpu.user + cpu.system) / OPS
    console.log(JSON.stringify({ schema: SCHEMA, without: WITHOUT, fts: values.fts, ftsAutomerge: values['fts-automerge'], search: SEARCH_INLINE ? 'inline' : 'later', batch: BATCH, cacheMib: CACHE_MIB, entries: ENTRIES, case: label, usPerOp: Math.round(us * 10) / 10, cpuUsPerOp: Math.round(cpuUs * 10) / 10, threadCpuUsPerOp: Math.round(threadUs * 10) / 10, checkpoint: CHECKPOINT, opsPerSecond: Math.round(1e6 / us) }))
  }
  const pick = permutation(ENTRIES, 2)
  // A new entry (a miss anywhere in the cluster).
  timeOps('new entry', (n) => ({ node: 'node1', entry: record(ENTRIES + n, NOW + n) }))
  // Another node stores the same entry again (its own miss): newer stored_at, new lifetime.
  timeOps('re-stored', (n) => {
    const i = pick[n % ENTRIES]!
    return { node: 'node2', entry: record(i, NOW + OPS + n) }
  })
  // A node populated a copy: the same record, another holder.
  timeOps('copy recorded', (n) => {
    const i = pick[(OPS + n) % ENTRIES]!
    return { node: nodes[(i + 1) % 3]!, entry: record(i, NOW - ENTRIES + i) }
  })

  if (values.queries) {
    const q = async (label: string, run: () => Promise<unknown>) => {
      const plans = await queryPlans(sqlite, run)
      const times: number[] = []
      for (let r = 0; r < 3; r++) {
        const t0 = performance.now()
        await run()
        times.push(performance.now() - t0)
      }
      times.sort((a, b) => a - b)
      console.log(JSON.stringify({ schema: SCHEMA, entries: ENTRIES, query: label, ms: Math.round(times[1]! * 10) / 10 }))
      if (values.plans) for (const p of plans) console.log(`    ${p}`)
    }
    const now = NOW - ENTRIES / 2
    await q('list first page', () => listManifest(opened.db, { limit: 50 }))
    await q('list deepest page by offset (9950)', () => listManifest(opened.db, { limit: 50, offset: 9_950 }))
    await q('list host filter (common host)', () => listManifest(opened.db, { limit: 50, host: HOSTS[0] }))
    await q('list host filter (rare host)', () => listManifest(opened.db, { limit: 50, host: HOSTS[3] }))
    await q('list host filter rare, deep page', () => listManifest(opened.db, { limit: 50, host: HOSTS[3], offset: 900 }))
    await q('list url filter', () => listManifest(opened.db, { limit: 50, filter: 'file-12345' }))
    await q('list node filter', () => listManifest(opened.db, { limit: 50, nodeId: 'node2' }))
    await q('populate missing page (1000)', () => entriesMissingOn(opened.db, 'node1', now, { limit: 1000 }))
    await q('populate missing, one key', () => entriesMissingOn(opened.db, 'node1', now, { key: record(123, 0).key, url: record(123, 0).url }))
    // Purge sweeps in a transaction rolled back, so every rep sees the same rows.
    const rolledBack = (run: () => Promise<unknown>) => async () => {
      sqlite.exec('savepoint bench')
      try {
        await run()
      } finally {
        sqlite.exec('rollback to bench; release bench')
      }
    }
    const at = NOW + 10 * OPS
    await q('purge prefix (1 dir of 97)', rolledBack(() => sweepPurge(opened.db, { kind: 'prefix', value: `https://${HOSTS[0]}/assets/1/`, host: null, createdAt: at, soft: false })))
    await q('purge rare host (all)', rolledBack(() => sweepPurge(opened.db, { kind: 'all', value: '', host: HOSTS[3]!, createdAt: at, soft: false })))
    await q('purge tag', rolledBack(() => sweepPurge(opened.db, { kind: 'tag', value: 'post-10', host: null, createdAt: at, soft: false })))
    await q('soft purge rare host, chunk 500', rolledBack(() => sweepPurge(opened.db, { kind: 'all', value: '', host: HOSTS[3]!, createdAt: at, soft: true }, 500)))
    await q('prune expired (none due)', rolledBack(() => pruneExpired(opened.db, NOW - 10 * ENTRIES)))
    await q('prune expired (0.1% due)', rolledBack(() => pruneExpired(opened.db, NOW - ENTRIES + ENTRIES / 1000 + 120_000)))
  }
} finally {
  await checkpointThread?.close()
  await opened.db.destroy()
  fs.rmSync(dir, { recursive: true, force: true })
}
