// Where caje's CPU goes, thread by thread, per request: a cold Zipf mix over 10,000 objects
// (misses and hits), the same mix again warm (mostly hits; scenario zipf-cold leaves it out), and a unique-URL miss storm, each on
// a fresh caje, 50 connections. The CPU of every thread (/proc/<pid>/task/*/stat) is read before
// the load and once the process has gone idle after it (work the load queued counts), and divided
// by the requests caje counted. caje's worker threads are named through CAJE_THREAD_MAP
// (src/thread-heap.ts); the rest by the order Node starts them (V8's delayed-task thread, then its
// four platform workers, which do most of the garbage collection off the event loop; after those,
// libuv's pool). With --bundle-b or --env-b a second build or setting alternates with the first
// (A B, then B A, ...). With --varnish, Varnish takes the same load after each cold run.
//
//   node --import tsx bench/thread-cpu.ts [--duration 8] [--runs 1] [--scenarios zipf,zipf-cold,storm] [--varnish]
//     [--bundle <main.js>] [--bundle-b <main.js>] [--env-a K=V,...] [--env-b K=V,...]
// Run it under the benchmark lock like any load.

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { buildCaje } from './build.ts'
import { runLoad, type Workload } from './load.ts'
import { findExecutable, startCaje, startNodeScript, startVarnish, type RunningSystem, type Workspace } from './systems.ts'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    runs: { type: 'string', default: '1' },
    varnish: { type: 'boolean', default: false },
    scenarios: { type: 'string', default: 'zipf,storm' },
    bundle: { type: 'string' },
    /** A second caje to alternate with the first: its bundle and/or extra env (K=V,K=V). */
    'bundle-b': { type: 'string' },
    'env-b': { type: 'string' },
    'env-a': { type: 'string' },
  },
})
const durationSec = Number(values.duration)
const runs = Number(values.runs)
const TICK_US = 1e6 / 100

interface Thread {
  tid: string
  comm: string
  ticks: number
}

async function threads(pid: number): Promise<Thread[]> {
  const out: Thread[] = []
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const comm = (await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8')).trim()
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.push({ tid, comm, ticks: Number(f[11]) + Number(f[12]) })
    } catch {
      // ended meanwhile
    }
  }
  return out
}

/** Group name: comm, with tid order within a comm for caje's own workers (comm "node" after the main thread). */
let threadMap = new Map<string, string>()
function groups(pid: number, list: Thread[]): Map<string, number> {
  const m = new Map<string, number>()
  const sorted = [...list].sort((a, b) => Number(a.tid) - Number(b.tid))
  let n = 0
  for (const t of sorted) {
    let name: string
    if (Number(t.tid) === pid) name = 'main'
    else if (threadMap.has(t.tid)) name = threadMap.get(t.tid)!
    else {
      n++
      name = n === 1 ? 'V8 delayed tasks' : n <= 5 ? 'V8 platform (GC, compile)' : 'libuv pool, other'
    }
    m.set(name, (m.get(name) ?? 0) + t.ticks)
  }
  return m
}

async function metric(baseUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${baseUrl}/_caje/metrics`)).text()
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    const m = /^caje_requests_total\{cache_status="([a-z]+)"\} (\d+)/.exec(line)
    if (m) out[m[1]!] = Number(m[2])
    const s = /^caje_cache_(stored|writes_memory_only|writes_skipped)_total (\d+)/.exec(line)
    if (s) out[s[1]!] = Number(s[2])
  }
  return out
}

function envOf(list: string | undefined): Record<string, string> {
  return Object.fromEntries((list ?? '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
}

async function main() {
  const repoDir = process.cwd()
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'caje-thread-cpu-'))
  const ws: Workspace = { tmpDir, outDir: path.join(repoDir, 'bench', 'out'), repoDir }
  const wrkPath = findExecutable('wrk')!
  const bundle = values.bundle ?? buildCaje(repoDir, `thread-cpu-${process.pid}.js`)
  const origin = await startNodeScript(ws, { name: 'origin', kind: 'origin', script: 'bench/origin.ts' })
  let varnish: RunningSystem | undefined
  if (values.varnish) varnish = await startVarnish(ws, findExecutable('varnishd')!, { originPort: Number(new URL(origin.baseUrl).port) })
  const load = (baseUrl: string, workload: Workload) =>
    runLoad({ tool: 'wrk', wrkPath, baseUrl, workload, connections: 50, durationSec, threads: 1, timeoutSec: 10, scratchDir: ws.outDir })
  const report: string[] = []
  try {
    for (let run = 0; run < runs; run++) {
      const variants: Array<{ name: string; bundle: string; env: Record<string, string> }> = [{ name: 'A', bundle, env: envOf(values['env-a']) }]
      if (values['bundle-b'] || values['env-b']) variants.push({ name: 'B', bundle: values['bundle-b'] ?? bundle, env: envOf(values['env-b']) })
      if (run % 2 === 1) variants.reverse()
      for (const variant of variants)
      for (const scenario of values.scenarios!.split(',')) {
        const mapFile = path.join(tmpDir, `threads-${run}-${scenario}`)
        const caje = await startCaje(ws, { name: `caje tc ${run} ${scenario}`, originUrl: origin.baseUrl, memoryCacheBytes: 268435456, env: { ...variant.env, CAJE_BUNDLE: variant.bundle, CAJE_THREAD_MAP: mapFile } })
        try {
          threadMap = new Map((await readFile(mapFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => [l.split(' ')[0]!, l.split(' ').slice(1).join(' ')] as [string, string]))
          console.log((await threads(caje.pid)).map((t) => `${t.tid}:${t.comm}:${threadMap.get(t.tid) ?? ''}`).join(' '))
          const q = `tc=${process.pid}-${run}`
          const phases: Array<[string, Workload]> =
            scenario === 'zipf' || scenario === 'zipf-cold'
              ? [
                  ['zipf cold', { kind: 'zipf', count: 10_000, exponent: 1, pathPrefix: '/obj/', query: q }],
                  ['zipf warm', { kind: 'zipf', count: 10_000, exponent: 1, pathPrefix: '/obj/', query: q }],
                ].slice(0, scenario === 'zipf' ? 2 : 1) as Array<[string, Workload]>
              : [['miss storm', { kind: 'unique', count: 10_000, pathPrefix: '/obj/', query: `s${q}` }]]
          for (const [label, workload] of phases) {
            const m0 = await metric(caje.baseUrl)
            const t0raw = await threads(caje.pid)
            const t0w = Date.now(); const r = await runLoad({ tool: 'wrk', wrkPath, baseUrl: caje.baseUrl, workload, connections: 50, durationSec, threads: 1, timeoutSec: 10, scratchDir: ws.outDir })
            // Work the load queued (disk writes, manifest) belongs to it: wait until the process is idle.
            let prev = -1
            for (;;) {
              await new Promise((r) => setTimeout(r, 300))
              const now = [...groups(caje.pid, await threads(caje.pid)).values()].reduce((a, b) => a + b, 0)
              if (now - prev <= 2) break
              prev = now
            }
            const t1raw = await threads(caje.pid)
            threadMap = new Map((await readFile(mapFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => [l.split(' ')[0]!, l.split(' ').slice(1).join(' ')] as [string, string]))
            const t0 = groups(caje.pid, t0raw)
            const t1 = groups(caje.pid, t1raw)
            const m1 = await metric(caje.baseUrl)
            const d = (k: string) => (m1[k] ?? 0) - (m0[k] ?? 0)
            const reqs = Object.keys(m1).filter((k) => !['stored', 'writes_memory_only', 'writes_skipped'].includes(k)).reduce((a, k) => a + d(k), 0)
            let vr: number | undefined
            if (varnish && label !== 'zipf warm') {
              const vw = { ...workload, query: `v${q}` } as Workload
              vr = (await load(varnish.baseUrl, vw)).rps
            }
            const rows = [...t1.entries()].map(([k, v]) => [k, ((v - (t0.get(k) ?? 0)) * TICK_US) / reqs] as const).filter(([, us]) => us > 0.05)
            rows.sort((a, b) => b[1] - a[1])
            const total = rows.reduce((a, [, us]) => a + us, 0)
            const lines = [
              `## ${variant.name} ${label} (run ${run}): ${r.rps.toFixed(0)} req/s${vr ? `, varnish ${vr.toFixed(0)} (ratio ${(r.rps / vr).toFixed(2)})` : ''}; requests ${reqs}: hit ${d('hit')}, miss ${d('miss')}; stored ${d('stored')}, memory-only ${d('writes_memory_only')}, skipped ${d('writes_skipped')}`,
              `total ${total.toFixed(1)} µs/req`,
              ...rows.map(([k, us]) => `  ${k.padEnd(28)} ${us.toFixed(1).padStart(7)} µs/req  ${((100 * us) / total).toFixed(1).padStart(5)}%`),
            ]
            console.log(lines.join('\n'))
            report.push(...lines)
          }
        } finally {
          await caje.stop()
        }
      }
    }
  } finally {
    await varnish?.stop()
    await origin.stop()
    await rm(tmpDir, { recursive: true, force: true })
  }
}

await main()
