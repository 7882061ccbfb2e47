// npm run bench:index-memory [-- options]: memory per entry of the disk tier's
// in-memory index. Every entry carries the metadata a real fill stores: response
// headers, a freshness policy from proxy/policy.ts, Vary'd request headers, tags.
//
//   --mode index  (default) the index filled as the disk store fills it at start,
//                 without files: fast enough for 1,000,000 entries
//   --mode store  the real disk store: N entries committed through DiskStore.put()
//                 (what a fill or a populate does), then the directory opened again
//                 (the index rebuilt from cacache's index buckets). Slow: the files
//                 are really written (about 2 ms per entry on this machine)
//
// Each figure is (heapUsed after - heapUsed before) / N and the same for RSS,
// both after a full GC (the script re-runs itself with --expose-gc). The index
// keeps its numbers in typed arrays and its packed metadata in buffers, outside
// V8's heap: offHeapPerEntry is what those add (ArrayBuffer memory), so an
// entry's whole cost in the index is heapPerEntry + offHeapPerEntry. Bodies are
// 32 bytes so the files stay small; the budget keeps every entry.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { createDiskStore, type DiskStore } from '../src/cache/disk-store.ts'
import { entryKeyOf, fillIndex, realisticEntry } from './index-entries.ts'

const HELP = `npm run bench:index-memory [-- options]

  --mode <m>      index (default) or store
  --entries <n>   entries stored (default 100000)
  --runs <n>      repetitions; medians are reported (default 3)
  --keep          keep the cache dir (printed)
`

function body(i: number): Buffer {
  return Buffer.from(`body of entry ${i}`.padEnd(32, '.'))
}

declare const gc: () => void

function usage(): { heap: number; rss: number; offHeap: number } {
  gc()
  gc()
  const m = process.memoryUsage()
  return { heap: m.heapUsed, rss: m.rss, offHeap: m.arrayBuffers }
}

/** The index alone: filled, then every entry looked up once (the hottest stay decoded). */
function measureIndex(n: number): Record<string, number> {
  const now = Date.now()
  const before = usage()
  const started = performance.now()
  const { index, contents } = fillIndex(n, now)
  const out: Record<string, number> = { fillSeconds: Math.round((performance.now() - started) / 100) / 10 }
  const filled = usage()
  out.heapPerEntry = Math.round((filled.heap - before.heap) / n)
  out.offHeapPerEntry = Math.round((filled.offHeap - before.offHeap) / n)
  out.rssPerEntry = Math.round((filled.rss - before.rss) / n)
  const lookups = performance.now()
  for (let i = 0; i < n; i++) {
    const { key, variant } = entryKeyOf(i)
    const handle = index.touch(key, variant, now)
    if (handle === undefined || index.meta(handle).key !== key) throw new Error(`entry ${i} not found`)
  }
  // Each one a lookup and a decode (only the last few thousand stay decoded).
  out.coldLookupMicros = Math.round(((performance.now() - lookups) * 1000) / n * 10) / 10
  const read = usage()
  // The decoded metadata kept for the hottest entries is a fixed amount, not a per-entry one.
  out.hotHeapBytes = read.heap - filled.heap
  if (index.size !== n || contents.size !== n) throw new Error('index lost entries')
  return out
}

async function measure(n: number, keep: boolean): Promise<Record<string, number>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'caje-index-memory-'))
  const options = { dir, maxBytes: Number.MAX_SAFE_INTEGER, maxObjectBytes: 1024 * 1024, log: () => {} }
  const now = Date.now()
  const out: Record<string, number> = {}
  try {
    const before = usage()
    let store: DiskStore | undefined = await createDiskStore(options)
    const started = performance.now()
    // Puts in slices: the write queue is bounded, so wait for it now and then.
    for (let i = 0; i < n; i += 1000) {
      const slice: Promise<unknown>[] = []
      for (let j = i; j < Math.min(n, i + 1000); j++) slice.push(store.put(realisticEntry(j, now), body(j)))
      await Promise.all(slice)
      await store.drain()
    }
    out.storeSeconds = Math.round((performance.now() - started) / 100) / 10
    if (store.stats().entries !== n) throw new Error(`stored ${store.stats().entries} of ${n}`)
    const stored = usage()
    out.storeHeapPerEntry = Math.round((stored.heap - before.heap) / n)
    out.storeRssPerEntry = Math.round((stored.rss - before.rss) / n)
    await store.close()
    store = undefined

    const beforeLoad = usage()
    const loadStarted = performance.now()
    store = await createDiskStore(options)
    out.loadSeconds = Math.round((performance.now() - loadStarted) / 100) / 10
    await store.drain()
    if (store.stats().entries !== n) throw new Error(`loaded ${store.stats().entries} of ${n}`)
    const loaded = usage()
    out.loadHeapPerEntry = Math.round((loaded.heap - beforeLoad.heap) / n)
    out.loadRssPerEntry = Math.round((loaded.rss - beforeLoad.rss) / n)
    // A lookup of every entry (what hits do): the index must not grow from being read.
    for (let i = 0; i < n; i++) {
      const e = realisticEntry(i, now)
      if (!store.variant(e.key, e.variant)) throw new Error(`entry ${i} not found after load`)
    }
    const read = usage()
    out.afterLookupsHeapPerEntry = Math.round((read.heap - beforeLoad.heap) / n)
    await store.close()
  } finally {
    if (keep) console.log(`kept ${dir}`)
    else await fs.rm(dir, { recursive: true, force: true })
  }
  return out
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { mode: { type: 'string' }, entries: { type: 'string' }, runs: { type: 'string' }, keep: { type: 'boolean' }, help: { type: 'boolean' }, child: { type: 'boolean' } },
  })
  if (values.help) {
    console.log(HELP)
    return
  }
  const n = Number(values.entries ?? 100_000)
  const runs = Number(values.runs ?? 3)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--entries must be a positive integer, got ${values.entries}`)
  if (!Number.isSafeInteger(runs) || runs <= 0) throw new Error(`--runs must be a positive integer, got ${values.runs}`)
  const mode = values.mode ?? 'index'
  if (mode !== 'index' && mode !== 'store') throw new Error(`--mode must be index or store, got ${mode}`)
  if (values.child) {
    console.log(JSON.stringify(mode === 'index' ? measureIndex(n) : await measure(n, values.keep ?? false)))
    return
  }
  // One fresh process per run, with a GC the script can call: no run inherits another's heap.
  const results: Record<string, number>[] = []
  for (let r = 0; r < runs; r++) {
    const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', process.argv[1]!, '--child', '--mode', mode, '--entries', String(n), ...(values.keep ? ['--keep'] : [])], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    if (child.status !== 0) throw new Error(`run ${r + 1} failed (exit ${child.status})`)
    const result = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as Record<string, number>
    console.log(`run ${r + 1}: ${JSON.stringify(result)}`)
    results.push(result)
  }
  const medians: Record<string, number> = {}
  for (const k of Object.keys(results[0]!)) medians[k] = median(results.map((x) => x[k]!))
  console.log(`\n${mode}: ${n} entries, medians of ${runs} run(s), node ${process.version}, ${new Date().toISOString()}`)
  console.log(JSON.stringify(medians, null, 2))
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
