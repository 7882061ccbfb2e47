// Where every CPU second of the cold Zipf mix goes, for caje and for Varnish alike: each thread of
// the cache under test (grouped by name; caje's workers by CAJE_THREAD_MAP, Varnish's by their
// own names), the bench origin and wrk (its CPU from a wrapper shell's `times`), per request wrk
// completed, with the origin's request count and how long caje's event loop waited for a CPU
// (schedstat). Runs alternate caje, Varnish, Varnish, caje, ... on one long-lived instance of
// each, a fresh query (a cold key space) per run, as bench/run.ts does. Work a run queued (disk
// and manifest writes) counts: caje is read again once its threads have gone idle.
// With --perf <dir>, a system-wide `perf record -a -g` of 3 s from 1 s into each run. With
// --against-env K=V,..., a second caje ("cajeB", the same build with that environment) takes
// Varnish's place: one setting measured side by side, alternated, with each run's count of bodies
// kept in memory only because the disk writer's queue was full. --flags and --against-flags add
// Node/V8 flags after bin/caje's own (a later V8 flag wins) to the first caje and to cajeB: an A/B
// of a heap flag. With --gc, both cajes run with --trace-gc and each run prints the event loop's
// scavenges and mark-compacts during the load, and its pauses.
//
//   node --import tsx bench/zipf-cpu.ts [--duration 5] [--runs 2] [--bundle <main.js>] [--env K=V,...] [--against-env K=V,...]
//     [--against-bundle <main.js>] [--flags '<node flags>'] [--against-flags '<node flags>'] [--gc] [--perf <dir>]
// Run it under the benchmark lock like any load, with TMPDIR a fresh chattr +T directory.

import { mkdtemp, readFile, writeFile, chmod, stat } from 'node:fs/promises'
import os from 'node:os'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { buildCaje } from './build.ts'
import { runLoad, type Workload } from './load.ts'
import { benchOutDir, findExecutable, processTree, startCaje, startNodeScript, startVarnish, type RunningSystem, type Workspace } from './systems.ts'
import { TICK_US, readThreadMap, taskTicks, untilIdle } from './thread-ticks.ts'
import { gcCounts } from './gc-trace.ts'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    runs: { type: 'string', default: '2' },
    bundle: { type: 'string' },
    env: { type: 'string' },
    /** Instead of Varnish, a second caje with this environment (K=V,...): an alternated A/B of one setting. */
    'against-env': { type: 'string' },
    /** More Node flags (space-separated) for caje, after bin/caje's. */
    flags: { type: 'string' },
    /** More Node flags for cajeB; implies a second caje in Varnish's place. */
    'against-flags': { type: 'string' },
    /** --trace-gc on both cajes; each run's GC counts and pauses on the event loop. */
    gc: { type: 'boolean', default: false },
    /** The second caje ("cajeB") runs this bundle instead (another build, A/B'd alternated); implies --against-env when that is not given. */
    'against-bundle': { type: 'string' },
    /** Directory for a system-wide perf record (-a -g) of 3 s from 1 s into each run. */
    perf: { type: 'string' },
  },
})
const durationSec = Number(values.duration)
/** The main thread's time on a CPU and waiting for one (ns), from schedstat. */
async function sched(pid: number): Promise<number[]> {
  return (await readFile(`/proc/${pid}/task/${pid}/schedstat`, 'utf8')).trim().split(' ').map(Number)
}

async function originStats(origin: RunningSystem): Promise<{ requests: number; notModified: number }> {
  return (await (await fetch(`${origin.baseUrl}/__origin/stats`)).json()) as { requests: number; notModified: number }
}

async function main() {
  const repoDir = process.cwd()
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'caje-zipf-cpu-'))
  const ws: Workspace = { tmpDir, outDir: await benchOutDir(repoDir), repoDir }
  const realWrk = findExecutable('wrk')!
  // wrk's own CPU: a wrapper that writes its children's times when wrk exits.
  const timesFile = path.join(tmpDir, 'wrk-times')
  const wrkPath = path.join(tmpDir, 'wrk.sh')
  await writeFile(wrkPath, `#!/bin/bash\n${realWrk} "$@"\nrc=$?\ntimes > ${timesFile}\nexit $rc\n`)
  await chmod(wrkPath, 0o755)
  const wrkCpu = async () => {
    const lines = (await readFile(timesFile, 'utf8')).trim().split('\n')
    const secs = [...lines[1]!.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]))
    return secs[0]! + secs[1]!
  }
  const bundle = values.bundle ?? buildCaje(repoDir, `zipf-cpu-${process.pid}.js`)
  const origin = await startNodeScript(ws, { name: 'origin', kind: 'origin', script: 'bench/origin.ts' })
  const envOf = (list: string | undefined) => Object.fromEntries((list ?? '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
  const mapFile = path.join(tmpDir, 'threads')
  const mapFileB = path.join(tmpDir, 'threads-b')
  const against = values['against-env'] ?? (values['against-flags'] !== undefined || values['against-bundle'] !== undefined ? '' : undefined)
  const flagsOf = (list: string | undefined) => {
    const flags = [...(list ?? '').split(/\s+/).filter(Boolean), ...(values.gc ? ['--trace-gc'] : [])]
    return flags.length > 0 ? flags : undefined
  }
  const other = against === undefined ? await startVarnish(ws, findExecutable('varnishd')!, { originPort: Number(new URL(origin.baseUrl).port) }) : await startCaje(ws, { name: 'caje zipf-cpu b', originUrl: origin.baseUrl, memoryCacheBytes: 268435456, env: { ...envOf(against), CAJE_BUNDLE: values['against-bundle'] ?? bundle, CAJE_THREAD_MAP: mapFileB }, nodeFlags: flagsOf(values['against-flags']) })
  const caje = await startCaje(ws, { name: 'caje zipf-cpu', originUrl: origin.baseUrl, memoryCacheBytes: 268435456, env: { ...envOf(values.env), CAJE_BUNDLE: bundle, CAJE_THREAD_MAP: mapFile }, nodeFlags: flagsOf(values.flags) })
  const isCaje = (s: RunningSystem) => s === caje || against !== undefined
  const memoryOnly = async (s: RunningSystem) => (isCaje(s) ? ((await (await fetch(`${s.baseUrl}/_caje/health`)).json()) as { cache: { writesMemoryOnly: number } }).cache.writesMemoryOnly : 0)
  const workload = (q: string): Workload => ({ kind: 'zipf', count: 10_000, exponent: 1, pathPrefix: '/obj/', query: q })
  const totals = new Map<string, Map<string, number>>()
  const reqTotals = new Map<string, { reqs: number; origin: number; rps: number[] }>()
  try {
    // Warm both (JIT, pools) on a key space of their own.
    for (const s of [caje, other]) await runLoad({ tool: 'wrk', wrkPath, baseUrl: s.baseUrl, workload: workload('warm'), connections: 50, durationSec: 2, threads: 1, timeoutSec: 10, scratchDir: ws.outDir })
    const runs = Number(values.runs)
    for (let run = 0; run < runs; run++) {
      const order = run % 2 === 0 ? [caje, other] : [other, caje]
      for (const system of order) {
        const name = system === caje ? 'caje' : against === undefined ? 'varnish' : 'cajeB'
        // caje's own threads by its map and main thread; Varnish's process tree by thread names.
        const ticksOf = { mainPid: isCaje(system) ? system.pid : undefined, threadMap: isCaje(system) ? await readThreadMap(system === caje ? mapFile : mapFileB) : undefined }
        const m0 = await memoryOnly(system)
        const pids = await processTree(system.pid)
        const o0 = await originStats(origin)
        const c0 = await taskTicks(pids, ticksOf)
        const g0 = await taskTicks([origin.pid], { mainPid: origin.pid })
        const s0 = isCaje(system) ? await sched(system.pid) : [0, 0]
        const log0 = values.gc && isCaje(system) ? (await stat(system.logPath)).size : 0
        const perfDone = values.perf
          ? new Promise<void>((resolve) =>
              setTimeout(() => spawn('perf', ['record', '-a', '-g', '-o', path.join(values.perf!, `${name}-${run}.data`), '--', 'sleep', '3'], { stdio: 'ignore' }).once('exit', () => resolve()), 1000),
            )
          : Promise.resolve()
        const r = await runLoad({ tool: 'wrk', wrkPath, baseUrl: system.baseUrl, workload: workload(`zc-${process.pid}-${run}-${name}`), connections: 50, durationSec, threads: 1, timeoutSec: 10, scratchDir: ws.outDir })
        const w = await wrkCpu()
        await perfDone
        const s1 = isCaje(system) ? await sched(system.pid) : [0, 0]
        if (values.gc && isCaje(system)) {
          const g = gcCounts((await readFile(system.logPath)).subarray(log0).toString('latin1'))
          console.log(`${name} event loop GC during the load: ${g.scavenges} scavenges, ${g.markCompacts} mark-compacts, pauses ${g.pauseMs.toFixed(0)} ms`)
        }
        if (isCaje(system)) console.log(`${name} main thread during the load: ran ${((s1[0]! - s0[0]!) / 1e6).toFixed(0)} ms, waited for a CPU ${((s1[1]! - s0[1]!) / 1e6).toFixed(0)} ms of ${(r.durationSec * 1000).toFixed(0)} ms`)
        // Work the load queued (disk writes, manifest) belongs to it.
        await untilIdle(pids)
        const c1 = await taskTicks(pids, ticksOf)
        const g1 = await taskTicks([origin.pid], { mainPid: origin.pid })
        const o1 = await originStats(origin)
        if (isCaje(system)) console.log(`${name} memory-only commits (write queue full): ${(await memoryOnly(system)) - m0}`)
        const acc = totals.get(name) ?? new Map<string, number>()
        for (const [k, v] of c1) acc.set(`${name}: ${k}`, (acc.get(`${name}: ${k}`) ?? 0) + (v - (c0.get(k) ?? 0)) * TICK_US)
        let og = 0
        for (const [k, v] of g1) og += v - (g0.get(k) ?? 0)
        acc.set('origin (node)', (acc.get('origin (node)') ?? 0) + og * TICK_US)
        acc.set('wrk', (acc.get('wrk') ?? 0) + w * 1e6)
        totals.set(name, acc)
        const rt = reqTotals.get(name) ?? { reqs: 0, origin: 0, rps: [] }
        rt.reqs += r.requests
        rt.origin += o1.requests - o0.requests
        rt.rps.push(Math.round(r.rps))
        reqTotals.set(name, rt)
        console.log(`${name} run ${run}: ${r.rps.toFixed(0)} req/s, ${r.requests} requests, origin ${o1.requests - o0.requests} (304: ${o1.notModified - o0.notModified}), wrk CPU ${(w * 1e6 / r.requests).toFixed(1)} µs/req`)
        // Each run's threads too, per origin request, for medians of an A/B.
        const perOrigin = [...c1].map(([k, v]) => `${k} ${(((v - (c0.get(k) ?? 0)) * TICK_US) / Math.max(1, o1.requests - o0.requests)).toFixed(0)}`)
        console.log(`${name} run ${run} µs per origin request: ${perOrigin.join(', ')}`)
      }
    }
    for (const [name, acc] of totals) {
      const rt = reqTotals.get(name)!
      const rows = [...acc.entries()].map(([k, us]) => [k, us / rt.reqs] as const).filter(([, v]) => v > 0.05).sort((a, b) => b[1] - a[1])
      const total = rows.reduce((a, [, v]) => a + v, 0)
      console.log(`## ${name}: req/s ${rt.rps.join(', ')}; ${rt.reqs} requests, ${rt.origin} to the origin (${((100 * rt.origin) / rt.reqs).toFixed(1)}%, hit ${(100 - (100 * rt.origin) / rt.reqs).toFixed(1)}%); all CPU ${total.toFixed(1)} µs/req`)
      for (const [k, v] of rows) console.log(`  ${k.padEnd(40)} ${v.toFixed(1).padStart(7)} µs/req  ${((100 * v) / total).toFixed(1).padStart(5)}%  per origin request ${((v * rt.reqs) / rt.origin).toFixed(0)} µs`)
    }
  } finally {
    await caje.stop()
    await other.stop()
    await origin.stop()
  }
}

await main()
