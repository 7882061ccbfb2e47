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
// Scenario `hit`: the 1 KiB memory hit (access log on, as shipped) on caje and on the bare server
// (bench/bare.ts) one after the other (bare first in odd runs), at a fixed rate: each of the 50
// connections waits --delay ms after each response (wrk's delay()), so both serve the same
// req/s. A server's CPU per request falls as its rate rises (more requests share each turn of its
// loop), so µs per hit compares only at one rate; --delay 0 is the saturated load instead.
// Each server first takes --warmup seconds of the same load, unmeasured: caje is started afresh for
// each run while the bare server lives through them all, and V8 goes on compiling a fresh caje's
// hot path on its platform threads for the first ~50,000 hits (8 µs per hit in the first 6 s of
// paced load after start, 1.5 µs in the next 6 s, on the same process); measured cold, that
// warm-up read as a steady cost of caje's.
//
//   node --import tsx bench/thread-cpu.ts [--duration 8] [--runs 1] [--scenarios zipf,zipf-cold,storm,hit] [--varnish] [--delay 5] [--warmup 8]
//     [--bundle <main.js>] [--bundle-b <main.js>] [--env-a K=V,...] [--env-b K=V,...]
// Run it under the benchmark lock like any load.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { buildCaje } from './build.ts'
import { runLoad, type Workload } from './load.ts'
import { benchOutDir, findExecutable, startCaje, startNodeScript, startVarnish, type RunningSystem, type Workspace } from './systems.ts'
import { TICK_US, groups, readThreadMap, threads, untilIdle, type Thread } from './thread-ticks.ts'

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
    /** Scenario hit: ms each connection waits after a response (0: as fast as the server answers). */
    delay: { type: 'string', default: '5' },
    /** Scenario hit: seconds of the same load on each server, unmeasured, before its measured run. */
    warmup: { type: 'string', default: '8' },
  },
})
const durationSec = Number(values.duration)
const runs = Number(values.runs)
const delayMs = Number(values.delay)
const warmupSec = Number(values.warmup)

/** caje's worker threads by thread id (CAJE_THREAD_MAP), for grouping its threads' ticks. */
let threadMap = new Map<string, string>()
const grouped = (pid: number, list: Thread[]) => groups(list, { mainPid: pid, threadMap })

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
  const ws: Workspace = { tmpDir, outDir: await benchOutDir(repoDir), repoDir }
  const wrkPath = findExecutable('wrk')!
  hitWorkspace = ws
  hitWrk = wrkPath
  const bundle = values.bundle ?? buildCaje(repoDir, `thread-cpu-${process.pid}.js`)
  const origin = await startNodeScript(ws, { name: 'origin', kind: 'origin', script: 'bench/origin.ts' })
  const bare = values.scenarios!.split(',').includes('hit') ? await startNodeScript(ws, { name: 'bare', kind: 'bare', script: 'bench/bare.ts' }) : undefined
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
        // Each variant's caje its own cache dir, database and thread map: B after A in one run found A's
        // cache of the same URLs on disk, and took the Zipf mix 19% slower, whichever build it was.
        const mapFile = path.join(tmpDir, `threads-${run}-${variant.name}-${scenario}`)
        const caje = await startCaje(ws, { name: `caje tc ${run} ${variant.name} ${scenario}`, originUrl: origin.baseUrl, memoryCacheBytes: 268435456, env: { ...variant.env, CAJE_BUNDLE: variant.bundle, CAJE_THREAD_MAP: mapFile } })
        try {
          threadMap = await readThreadMap(mapFile)
          console.log((await threads(caje.pid)).map((t) => `${t.tid}:${t.comm}:${threadMap.get(t.tid) ?? ''}`).join(' '))
          if (scenario === 'hit') {
            report.push(...(await hitRun(variant.name, run, caje, bare!)))
            continue
          }
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
            // Work the load queued (disk writes, manifest) belongs to it.
            await untilIdle([caje.pid])
            const t1raw = await threads(caje.pid)
            threadMap = await readThreadMap(mapFile)
            const t0 = grouped(caje.pid, t0raw)
            const t1 = grouped(caje.pid, t1raw)
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
    await bare?.stop()
    await origin.stop()
    await rm(tmpDir, { recursive: true, force: true })
  }
}

/** CPU of one process's threads while `workload` runs on it, per request wrk completed. */
async function cpuPerRequest(system: RunningSystem, workload: Workload, ws: Workspace, wrkPath: string): Promise<{ rps: number; requests: number; main: number; total: number; detail: string }> {
  const m0 = await mainDetail(system.pid)
  const t0 = grouped(system.pid, await threads(system.pid))
  const r = await runLoad({ tool: 'wrk', wrkPath, baseUrl: system.baseUrl, workload, connections: 50, durationSec, threads: 1, timeoutSec: 10, scratchDir: ws.outDir, delayMs })
  const t1 = grouped(system.pid, await threads(system.pid))
  const m1 = await mainDetail(system.pid)
  const per = (i: number, scale = 1) => (((m1[i]! - m0[i]!) * scale) / r.requests).toFixed(2)
  const detail = `user ${per(0, TICK_US)} sys ${per(1, TICK_US)} µs, switches ${per(2)} voluntary ${per(3)} forced`
  let total = 0
  const others: string[] = []
  for (const [k, v] of t1) {
    total += v - (t0.get(k) ?? 0)
    if (k !== 'main' && v - (t0.get(k) ?? 0) > 0) others.push(`${k} ${(((v - (t0.get(k) ?? 0)) * TICK_US) / r.requests).toFixed(1)}`)
  }
  const main = (t1.get('main') ?? 0) - (t0.get('main') ?? 0)
  return { rps: r.rps, requests: r.requests, main: (main * TICK_US) / r.requests, total: (total * TICK_US) / r.requests, detail: `${detail}; other threads (µs/req): ${others.join(', ')}` }
}

/** The main thread's user and system ticks and its voluntary and forced context switches. */
async function mainDetail(pid: number): Promise<number[]> {
  const stat = await readFile(`/proc/${pid}/task/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const status = await readFile(`/proc/${pid}/task/${pid}/status`, 'utf8')
  const count = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, 'm').exec(status)?.[1] ?? 0)
  return [Number(f[11]), Number(f[12]), count('voluntary_ctxt_switches'), count('nonvoluntary_ctxt_switches')]
}

/** Scenario hit: caje and the bare server on the same 1 KiB path at the same paced load. */
async function hitRun(variant: string, run: number, caje: RunningSystem, bare: RunningSystem): Promise<string[]> {
  const workload: Workload = { kind: 'fixed', path: '/1k' }
  // Stored, and in the memory tier, before the load.
  for (let i = 0; i < 3; i++) await (await fetch(`${caje.baseUrl}/1k`)).arrayBuffer()
  const ws = hitWorkspace!
  const order = run % 2 === 0 ? ([['caje', caje], ['bare', bare]] as const) : ([['bare', bare], ['caje', caje]] as const)
  // Past V8's compiling of the hot path (see the top of this file), for both alike.
  if (warmupSec > 0)
    for (const [, system] of order)
      await runLoad({ tool: 'wrk', wrkPath: hitWrk!, baseUrl: system.baseUrl, workload, connections: 50, durationSec: warmupSec, threads: 1, timeoutSec: 10, scratchDir: ws.outDir, delayMs })
  const got = new Map<string, Awaited<ReturnType<typeof cpuPerRequest>>>()
  for (const [name, system] of order) got.set(name, await cpuPerRequest(system, workload, ws, hitWrk!))
  const c = got.get('caje')!
  const b = got.get('bare')!
  const line = `## ${variant} hit-1k-memory (run ${run}, delay ${delayMs} ms, warm-up ${warmupSec} s): caje ${c.rps.toFixed(0)} req/s main ${c.main.toFixed(1)} µs/hit all ${c.total.toFixed(1)}; bare ${b.rps.toFixed(0)} req/s main ${b.main.toFixed(1)} all ${b.total.toFixed(1)}; main ratio bare/caje ${(b.main / c.main).toFixed(3)}\n  caje main: ${c.detail}\n  bare main: ${b.detail}`
  console.log(line)
  return [line]
}
let hitWorkspace: Workspace | undefined
let hitWrk: string | undefined

await main()
