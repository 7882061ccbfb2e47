// npm run bench [-- options]: caje against the bare Node ceiling, the origin
// itself, nginx proxy_cache and Varnish, on this machine and 127.0.0.1 only.
// `--smoke` is the quick CI check: one short run per scenario, no nginx or
// Varnish, and a non-zero exit when caje serves a wrong body or errors.

import { execFileSync } from 'node:child_process'
import { mkdtemp, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { OBJECT_COUNT, contentFor, sha256 } from './content.ts'
import { describeDisk, probeFileCreation } from './disk.ts'
import { runLoad, totalErrors, zipfCdf, zipfIdealHitRatio, zipfPick, type LoadResult, type LoadTool, type Workload } from './load.ts'
import { ORIGIN_STATS_PATH, type OriginStats } from './origin.ts'
import { rules50 } from './rules50.ts'
import { formatBreakdown, formatHeapLog } from './smaps.ts'
import { BASELINE, compareSystems, noteKey, renderResults, summarize, textTable, type Comparison, type Measurement } from './report.ts'
import {
  benchOutDir,
  cpuSeconds,
  ensureTools,
  killAllSync,
  pollPeakRss,
  processTree,
  startCaje,
  startNginx,
  startNodeScript,
  startVarnish,
  statusBytes,
  type RunningSystem,
  type Workspace,
} from './systems.ts'

const HELP = `npm run bench [-- options]

  --smoke               quick CI check: 1 run of 1 s per scenario, bare/origin/caje only,
                        exits non-zero when caje fails to start, serves a wrong body or errors
  --duration <s>        seconds per measured run (default 10; smoke 1)
  --runs <n>            repetitions, systems interleaved in each (default 3; smoke 1)
  --warmup <s>          unmeasured run per system and scenario first (default 2; smoke 0)
  --connections <n>     concurrent connections (default 50)
  --threads <n>         wrk threads (default 1: leaves the other core to the server)
  --scenarios <list>    comma list of: ${'{scenarios}'}
  --systems <list>      comma list of: bare,origin,caje,nginx,varnish (default all; smoke: bare,origin,caje)
  --tool <wrk|autocannon>  load generator (default wrk when installed, else autocannon)
  --zipf-exponent <s>   Zipf exponent for the ${OBJECT_COUNT}-object scenario (default 1.0)
  --caje-memory <bytes> caje memory tier for the memory scenarios (default 268435456)
  --nginx-workers <n>   nginx worker_processes (default 1, like one caje process)
  --nginx-lock <on|off> nginx proxy_cache_lock: coalesce misses (default on; it waits in 500 ms
                        steps, which shows in the p99 of uncacheable and cold requests)
  --origin-delay-ms <n> added to every origin response (default 0)
  --no-install          do not try apt-get for missing wrk/nginx/varnish
  --no-caje             leave caje out (to check the harness itself)
  --out <file>          results file (default bench/RESULTS.md; smoke: bench/out/RESULTS-smoke.md)
`

interface Scenario {
  id: string
  workload: (rep: string) => Workload
  /** Which caje instance serves it ('rules': the memory one with a 50-rule CAJE_CONFIG, bench/rules50.ts). */
  caje: CajeInstance
  /** Cache systems should answer it from cache after priming. */
  expectHit: boolean
  inSmoke: boolean
  /** Connections for this scenario instead of --connections. */
  connections?: number
  /** Seconds per measured run instead of --duration (not in smoke mode). */
  durationSec?: number
  /** After each caje run: time until its disk writer and manifest writer have nothing queued. */
  measureSettle?: boolean
  /**
   * Targets for caje in this scenario, checked on every run and noted with the results: peak RSS
   * at most the memory tier plus `rssOverTierBytes`, and (with measureSettle) nothing queued
   * within `settleMs` of the load ending. Each run's note also says what caje's memory was made
   * of at its peak (bench/smaps.ts).
   */
  targets?: { rssOverTierBytes: number; settleMs: number }
  /**
   * Run this caje instance too, in every repetition next to `caje` (their order alternating), and
   * report `caje` ÷ it: the cost of what sets the two apart, with the machine's drift shared.
   * Only the two caje instances (and bare) take part.
   */
  compareWith?: { caje: CajeInstance; maxCost: number }
}

type CajeInstance = 'memory' | 'disk' | 'rules'

const fixed = (p: string) => () => ({ kind: 'fixed', path: p }) as Workload

function scenarios(zipfExponent: number): Scenario[] {
  return [
    { id: 'hit-1k-memory', workload: fixed('/1k'), caje: 'memory', expectHit: true, inSmoke: true },
    // What a 50-rule file costs a memory hit: the same build, origin, URL and log settings with and
    // without CAJE_CONFIG, side by side in each repetition. The target is at most 2%.
    { id: 'hit-1k-memory-rules50', workload: fixed('/1k'), caje: 'rules', expectHit: true, inSmoke: true, compareWith: { caje: 'memory', maxCost: 0.02 } },
    { id: 'hit-1k-disk', workload: fixed('/1k'), caje: 'disk', expectHit: true, inSmoke: true },
    { id: 'hit-64k', workload: fixed('/64k'), caje: 'memory', expectHit: true, inSmoke: true },
    { id: 'hit-1m', workload: fixed('/1m'), caje: 'memory', expectHit: true, inSmoke: false },
    { id: 'pass-1k', workload: fixed('/nocache-1k'), caje: 'memory', expectHit: false, inSmoke: true },
    // One connection: what a pass-through costs a request that is not queued behind others (at 50
    // connections on 2 shared cores, p50 is mostly waiting for the CPU, i.e. throughput).
    { id: 'pass-1k-c1', workload: fixed('/nocache-1k'), caje: 'memory', expectHit: false, inSmoke: false, connections: 1 },
    {
      id: 'zipf-10k',
      // A fresh query per repetition gives every cache a cold key space for that run.
      workload: (rep) => ({ kind: 'zipf', count: OBJECT_COUNT, exponent: zipfExponent, pathPrefix: '/obj/', query: `r=${rep}` }),
      caje: 'memory',
      expectHit: false,
      inSmoke: true,
    },
    {
      id: 'miss-storm',
      // Every request a URL never seen before: each one is fetched, stored and recorded. What
      // matters is what it leaves behind: memory (peak RSS) and work still queued when it stops.
      workload: (rep) => ({ kind: 'unique', count: OBJECT_COUNT, pathPrefix: '/obj/', query: `storm=${rep}` }),
      caje: 'memory',
      expectHit: false,
      inSmoke: false,
      durationSec: 20,
      measureSettle: true,
      // The memory tier's budget is the memory its bodies take: everything else caje holds under
      // this load (V8's heaps, the threads, Node itself) must fit in 200 MB more.
      targets: { rssOverTierBytes: 200 * 1024 * 1024, settleMs: 1000 },
    },
  ]
}

const SYSTEM_ORDER = ['bare', 'origin', 'caje', 'nginx', 'varnish'] as const
type SystemId = (typeof SYSTEM_ORDER)[number]

interface Options {
  smoke: boolean
  durationSec: number
  runs: number
  warmupSec: number
  connections: number
  threads: number
  scenarioIds: string[]
  systems: SystemId[]
  tool: LoadTool | undefined
  zipfExponent: number
  cajeMemoryBytes: number
  nginxWorkers: number
  nginxLock: boolean
  originDelayMs: number
  install: boolean
  out: string
}

function positive(name: string, raw: string | undefined, fallback: number, allowZero = false): number {
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name}: "${raw}" is not a ${allowZero ? 'non-negative' : 'positive'} number`)
  return n
}

function parseOptions(argv: string[], repoDir: string): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      smoke: { type: 'boolean', default: false },
      duration: { type: 'string' },
      runs: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      threads: { type: 'string' },
      scenarios: { type: 'string' },
      systems: { type: 'string' },
      tool: { type: 'string' },
      'zipf-exponent': { type: 'string' },
      'caje-memory': { type: 'string' },
      'nginx-workers': { type: 'string' },
      'nginx-lock': { type: 'string' },
      'origin-delay-ms': { type: 'string' },
      'no-install': { type: 'boolean', default: false },
      'no-caje': { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  const zipfExponent = positive('zipf-exponent', values['zipf-exponent'], 1.0)
  const all = scenarios(zipfExponent)
  if (values.help) {
    process.stdout.write(HELP.replace('{scenarios}', all.map((s) => s.id).join(',')))
    return undefined
  }
  const smoke = values.smoke
  const scenarioIds = values.scenarios ? values.scenarios.split(',').map((s) => s.trim()) : all.filter((s) => !smoke || s.inSmoke).map((s) => s.id)
  for (const id of scenarioIds) if (!all.some((s) => s.id === id)) throw new Error(`--scenarios: unknown "${id}"; choose from ${all.map((s) => s.id).join(', ')}`)
  let systems = (values.systems ? values.systems.split(',').map((s) => s.trim()) : smoke ? ['bare', 'origin', 'caje'] : [...SYSTEM_ORDER]) as SystemId[]
  for (const s of systems) if (!SYSTEM_ORDER.includes(s)) throw new Error(`--systems: unknown "${s}"; choose from ${SYSTEM_ORDER.join(', ')}`)
  if (values['no-caje']) systems = systems.filter((s) => s !== 'caje')
  if (!systems.includes('bare')) systems.unshift('bare')
  systems.sort((a, b) => SYSTEM_ORDER.indexOf(a) - SYSTEM_ORDER.indexOf(b))
  if (values.tool !== undefined && values.tool !== 'wrk' && values.tool !== 'autocannon') throw new Error(`--tool: use wrk or autocannon`)
  const connections = positive('connections', values.connections, 50)
  const nginxLock = values['nginx-lock'] ?? 'on'
  if (nginxLock !== 'on' && nginxLock !== 'off') throw new Error(`--nginx-lock: use on or off`)
  return {
    smoke,
    durationSec: positive('duration', values.duration, smoke ? 1 : 10),
    runs: Math.round(positive('runs', values.runs, smoke ? 1 : 3)),
    warmupSec: positive('warmup', values.warmup, smoke ? 0 : 2, true),
    connections,
    threads: Math.min(connections, Math.round(positive('threads', values.threads, 1))),
    scenarioIds,
    systems,
    tool: values.tool as LoadTool | undefined,
    zipfExponent,
    cajeMemoryBytes: positive('caje-memory', values['caje-memory'], 256 * 1024 * 1024),
    nginxWorkers: Math.round(positive('nginx-workers', values['nginx-workers'], 1)),
    nginxLock: nginxLock === 'on',
    originDelayMs: positive('origin-delay-ms', values['origin-delay-ms'], 0, true),
    install: !values['no-install'] && !smoke,
    out: path.resolve(repoDir, values.out ?? (smoke ? 'bench/out/RESULTS-smoke.md' : 'bench/RESULTS.md')),
  }
}

// ---- small HTTP helpers -------------------------------------------------------

interface Fetched {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

/** One GET on a fresh connection (no pooling, no decompression). */
function get(url: string, timeoutMs = 10_000): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)))
    req.on('error', reject)
  })
}

/** Did this response come from the system's cache? undefined for systems that are not caches. */
function cacheVerdict(system: RunningSystem, res: Fetched): boolean | undefined {
  if (system.kind === 'caje') return /;\s*hit\b/i.test(String(res.headers['cache-status'] ?? ''))
  if (system.kind === 'nginx' || system.kind === 'varnish') return String(res.headers['x-cache-status'] ?? '').toUpperCase() === 'HIT'
  return undefined
}

/** GET a path and compare status and body with what the origin serves; returns a problem or undefined. */
async function checkBody(system: RunningSystem, p: string): Promise<{ problem?: string; res?: Fetched }> {
  const expected = contentFor(p)
  if (!expected) throw new Error(`no content for ${p}`)
  let res: Fetched
  try {
    res = await get(system.baseUrl + p)
  } catch (err) {
    return { problem: `GET ${p} failed: ${(err as Error).message}` }
  }
  if (res.status !== 200) return { problem: `GET ${p} answered ${res.status}`, res }
  if (res.body.length !== expected.body.length || sha256(res.body) !== sha256(expected.body)) {
    return { problem: `GET ${p} returned a wrong body (${res.body.length} bytes, expected ${expected.body.length})`, res }
  }
  return { res }
}

interface Settled {
  /** ms until the disk writer had nothing queued (undefined: not within 30 s). */
  disk: number | undefined
  /** ms until the manifest writer had nothing queued. */
  manifest: number | undefined
}

/** How long after now caje's health shows nothing queued for its disk writer and its manifest writer (polled every 20 ms, for 30 s at most). */
async function settleTime(caje: RunningSystem): Promise<Settled> {
  const started = performance.now()
  const settled: Settled = { disk: undefined, manifest: undefined }
  while (performance.now() - started < 30_000) {
    try {
      const res = await get(`${caje.baseUrl}/_caje/health`, 5000)
      const health = JSON.parse(res.body.toString('utf8')) as { cache?: { writeQueueJobs?: number }; manifestWriter?: { queued: number } }
      const ms = Math.round(performance.now() - started)
      if (settled.disk === undefined && (health.cache?.writeQueueJobs ?? 0) === 0) settled.disk = ms
      if (settled.manifest === undefined && (health.manifestWriter?.queued ?? 0) === 0) settled.manifest = ms
      if (settled.disk !== undefined && settled.manifest !== undefined) return settled
    } catch {
      // Busy or restarting: ask again.
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  return settled
}

async function originStats(origin: RunningSystem): Promise<OriginStats> {
  const res = await get(origin.baseUrl + ORIGIN_STATS_PATH)
  return JSON.parse(res.body.toString('utf8')) as OriginStats
}

/**
 * The memory tier's and write queue's numbers from caje's health, and each thread's V8 heap from
 * its heap log (`heapLog`), in MB, for a note at its memory peak.
 */
async function cajeMemoryAccount(caje: RunningSystem, heapLog: string | undefined): Promise<string | undefined> {
  const res = await get(`${caje.baseUrl}/_caje/health`, 5000)
  const cache = (JSON.parse(res.body.toString('utf8')) as { cache?: Record<string, number | undefined> }).cache
  if (!cache) return undefined
  const mb = (n: number | undefined) => (n === undefined ? '?' : (n / 1024 / 1024).toFixed(0))
  const heaps = heapLog ? formatHeapLog(await readTail(heapLog, 64 * 1024).catch(() => '')) : ''
  return `${heaps ? `V8 heaps committed: ${heaps}; ` : ''}memory tier: bodies ${mb(cache.memoryBytes)}, slabs ${mb(cache.memoryHeldBytes)}, dropped slabs not freed ${mb(cache.memoryDroppedBytes)} (held by disk writes ${mb(cache.memoryDroppedHeldBytes)}), slabs allocated since start ${mb(cache.memorySlabsAllocatedBytes)}, shared memory the disk writer's thread holds ${mb(cache.writeThreadSharedBytes)}; disk index outside V8's heap ${mb(cache.indexBytes)} (packed metadata live ${mb(cache.indexPackedLiveBytes)}) for ${cache.entries} entries; write queue ${cache.writeQueueJobs} jobs ${mb(cache.writeQueueBytes)}, memory-only ${cache.writesMemoryOnly}`
}

/** The last `bytes` of a file. */
async function readTail(file: string, bytes: number): Promise<string> {
  const handle = await open(file, 'r')
  try {
    const { size } = await handle.stat()
    const length = Math.min(size, bytes)
    const buffer = Buffer.alloc(length)
    await handle.read(buffer, 0, length, size - length)
    return buffer.toString('utf8')
  } finally {
    await handle.close()
  }
}

/** caje_requests_total by cache_status from /_caje/metrics, or undefined when it is not there. */
async function cajeRequestCounts(caje: RunningSystem): Promise<Map<string, number> | undefined> {
  try {
    const res = await get(`${caje.baseUrl}/_caje/metrics`, 5000)
    if (res.status !== 200) return undefined
    const counts = new Map<string, number>()
    for (const m of res.body.toString('utf8').matchAll(/^caje_requests_total\{[^}]*cache_status="([^"]+)"[^}]*\} (\S+)$/gm)) {
      counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + Number(m[2]))
    }
    return counts.size > 0 ? counts : undefined
  } catch {
    return undefined
  }
}

/** Objects at evenly spaced quantiles of the Zipf mix (popular and rare ones alike). */
function sampleObjects(count: number, exponent: number, n: number): number[] {
  const cdf = zipfCdf(count, exponent)
  return [...new Set([...Array.from({ length: n }, (_, i) => zipfPick(cdf, (i + 0.5) / n)), Math.floor(count / 2), count - 1])]
}

// ---- the run --------------------------------------------------------------

interface Problem {
  scenario: string
  system: string
  message: string
}

function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`)
}

function toolVersion(tool: LoadTool, wrkPath: string | undefined, repoDir: string): Promise<string> {
  if (tool === 'wrk') {
    try {
      const out = execFileSync(wrkPath ?? 'wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      return Promise.resolve(/^wrk (\S+)/.exec(out)?.[1] ?? 'unknown')
    } catch (err) {
      // wrk -v exits 1 after printing its version
      const out = String((err as { stdout?: string }).stdout ?? '')
      return Promise.resolve(/^wrk (\S+)/.exec(out)?.[1] ?? 'unknown')
    }
  }
  return readFile(path.join(repoDir, 'node_modules/autocannon/package.json'), 'utf8').then((t) => (JSON.parse(t) as { version: string }).version)
}

async function main(): Promise<number> {
  const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
  const opts = parseOptions(process.argv.slice(2), repoDir)
  if (!opts) return 0
  const outDir = await benchOutDir(repoDir)
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'caje-bench-'))
  const ws: Workspace = { tmpDir, outDir, repoDir }
  const loadAtStart = os.loadavg()[0]!
  const warnings: string[] = []
  const warn = (line: string) => {
    warnings.push(line)
    log(`WARNING: ${line}`)
  }
  // Before any system starts: what a new file costs where the caches will be (bench/disk.ts).
  let createMicros: number | undefined
  try {
    createMicros = probeFileCreation(tmpDir)
    log(`creating a file in ${tmpDir}: ${createMicros.toFixed(0)} µs`)
  } catch (err) {
    warn(`could not time file creation in ${tmpDir}: ${(err as Error).message}`)
  }

  // Tools.
  const wanted = [...(opts.tool === 'autocannon' ? [] : ['wrk']), ...(opts.systems.includes('nginx') ? ['nginx'] : []), ...(opts.systems.includes('varnish') ? ['varnishd'] : [])]
  const { paths: tools, missing } = ensureTools(wanted, opts.install, log)
  const tool: LoadTool = opts.tool ?? (tools.has('wrk') ? 'wrk' : 'autocannon')
  if (opts.tool === 'wrk' && !tools.has('wrk')) throw new Error('--tool wrk: wrk is not installed (Debian package "wrk")')
  if (missing.includes('wrk') && !opts.tool) warn('wrk is not installed (Debian package "wrk"); using autocannon, which runs inside this Node process and is slower')
  for (const m of missing.filter((m) => m !== 'wrk')) {
    warn(`${m} is not installed (Debian package "${m === 'varnishd' ? 'varnish' : m}") and could not be installed${opts.install ? '' : ' (--no-install / smoke mode)'}; it is left out`)
  }

  const systems: RunningSystem[] = []
  const problems: Problem[] = []
  const measurements: Measurement[] = []
  const notes = new Map<string, string[]>()
  const settleNotes: { scenario: string; system: string; settled: Settled }[] = []
  const addNote = (scenario: string, system: string, note: string) => {
    const k = noteKey(scenario, system)
    const list = notes.get(k) ?? []
    if (!list.includes(note)) list.push(note)
    notes.set(k, list)
  }
  const startLines: string[] = []

  try {
    // Origin and the bare ceiling.
    const origin = await startNodeScript(ws, {
      name: 'origin',
      kind: 'origin',
      script: 'bench/origin.ts',
      args: opts.originDelayMs > 0 ? ['--delay-ms', String(opts.originDelayMs)] : [],
    })
    systems.push(origin)
    startLines.push(`node --import tsx bench/origin.ts --port 0${opts.originDelayMs > 0 ? ` --delay-ms ${opts.originDelayMs}` : ''}`)
    const bare = await startNodeScript(ws, { name: BASELINE, kind: 'bare', script: 'bench/bare.ts' })
    systems.push(bare)
    startLines.push('node --import tsx bench/bare.ts --port 0')
    const originPort = Number(new URL(origin.baseUrl).port)
    log(`origin ${origin.baseUrl}, bare node ${bare.baseUrl}`)

    // caje: one instance with a memory tier, one disk-only, one with a memory tier and 50 rules.
    const selected = scenarios(opts.zipfExponent).filter((s) => opts.scenarioIds.includes(s.id))
    const cajes = new Map<CajeInstance, RunningSystem>()
    const cajeHeapLogs = new Map<RunningSystem, string | undefined>()
    let cajeFailed = false
    if (opts.systems.includes('caje')) {
      for (const tier of ['memory', 'disk', 'rules'] as const) {
        if (!selected.some((s) => s.caje === tier || s.compareWith?.caje === tier)) continue
        const memoryCacheBytes = tier === 'disk' ? 0 : opts.cajeMemoryBytes
        let rulesEnv = ''
        // For a scenario with a memory target: each thread's V8 heap every 250 ms (src/thread-heap.ts), for the note at its peak.
        const env: Record<string, string> = selected.some((s) => s.targets && s.caje === tier) ? { CAJE_HEAP_LOG: path.join(ws.tmpDir, `caje-${tier}-heap.jsonl`) } : {}
        if (tier === 'rules') {
          const file = path.join(ws.tmpDir, 'rules50.yml')
          await writeFile(file, rules50())
          env.CAJE_CONFIG = file
          rulesEnv = ' CAJE_CONFIG=<tmp>/rules50.yml (bench/rules50.ts)'
        }
        try {
          const caje = await startCaje(ws, {
            name: `caje (${tier})`,
            originUrl: origin.baseUrl,
            memoryCacheBytes,
            env,
          })
          cajes.set(tier, caje)
          cajeHeapLogs.set(caje, env.CAJE_HEAP_LOG)
          systems.push(caje)
          startLines.push(
            `PORT=<port> CAJE_LISTEN_HOST=127.0.0.1 CAJE_ORIGIN=${origin.baseUrl.replace(/\d+$/, '<origin-port>')} CAJE_CACHE_DIR=<tmp> CAJE_DATABASE_PATH=<tmp>/manifest.db CAJE_POPULATE_INTERVAL=0 CAJE_MEMORY_CACHE_BYTES=${memoryCacheBytes}${rulesEnv} bin/caje (after npm run build)`,
          )
          log(`caje (${tier}) ${caje.baseUrl}`)
        } catch (err) {
          cajeFailed = true
          const msg = `caje (${tier}) did not start, so it is left out: ${(err as Error).message}`
          warn(msg.split('\n')[0]!)
          log(msg)
          problems.push({ scenario: 'start', system: `caje (${tier})`, message: (err as Error).message.split('\n')[0]! })
        }
      }
    }
    const others: RunningSystem[] = []
    if (opts.systems.includes('nginx') && tools.has('nginx')) {
      try {
        const nginx = await startNginx(ws, tools.get('nginx')!, { originPort, workers: opts.nginxWorkers, cacheLock: opts.nginxLock })
        others.push(nginx)
        systems.push(nginx)
        startLines.push(`${tools.get('nginx')} -p <tmp>/nginx -c <tmp>/nginx/nginx.conf   (proxy_cache on disk, proxy_cache_lock ${opts.nginxLock ? 'on' : 'off'}, worker_processes ${opts.nginxWorkers}, keepalive upstream, sendfile)`)
      } catch (err) {
        warn(`nginx did not start: ${(err as Error).message.split('\n')[0]}`)
      }
    }
    if (opts.systems.includes('varnish') && tools.has('varnishd')) {
      try {
        const varnish = await startVarnish(ws, tools.get('varnishd')!, { originPort })
        others.push(varnish)
        systems.push(varnish)
        startLines.push(`${tools.get('varnishd')} -F -j none -f <tmp>/bench.vcl -a 127.0.0.1:<port> -s malloc,1g   (builtin VCL + an X-Cache-Status header)`)
      } catch (err) {
        warn(`varnish did not start: ${(err as Error).message.split('\n')[0]}`)
      }
    }

    const loadCommands: string[] = []
    const load = (system: RunningSystem, workload: Workload, durationSec: number, connections: number): Promise<LoadResult> =>
      runLoad({
        tool,
        wrkPath: tools.get('wrk'),
        baseUrl: system.baseUrl,
        workload,
        connections,
        durationSec,
        threads: opts.threads,
        timeoutSec: 10,
        scratchDir: outDir,
      })

    for (const scenario of selected) {
      const lineup: RunningSystem[] = [bare]
      if (opts.systems.includes('origin')) lineup.push(origin)
      const caje = cajes.get(scenario.caje)
      const reference = scenario.compareWith ? cajes.get(scenario.compareWith.caje) : undefined
      if (reference) lineup.push(reference)
      if (caje) lineup.push(caje)
      // nginx and Varnish have no rules file: a comparison between two cajes leaves them out.
      if (!scenario.compareWith) lineup.push(...others)
      log(`scenario ${scenario.id}: ${lineup.map((s) => s.name).join(', ')}`)

      // Check bodies and prime the caches.
      for (const system of lineup) {
        const report = (message: string) => {
          problems.push({ scenario: scenario.id, system: system.name, message })
          addNote(scenario.id, system.name, message)
          warn(`${scenario.id} / ${system.name}: ${message}`)
        }
        const probe = scenario.workload('verify')
        const paths =
          probe.kind === 'fixed'
            ? [probe.path]
            : sampleObjects(probe.count, probe.kind === 'zipf' ? probe.exponent : 1, 20).map((n) => `${probe.pathPrefix}${n}?verify=1`)
        for (const p of paths) {
          const first = await checkBody(system, p)
          if (first.problem) {
            report(first.problem)
            break
          }
          if (!scenario.expectHit || probe.kind !== 'fixed') continue
          // A store may commit just after the response ends: give it a moment to become a hit.
          let hit = cacheVerdict(system, first.res!)
          for (let i = 0; i < 20 && hit === false; i++) {
            const again = await checkBody(system, p)
            if (again.problem) {
              report(again.problem)
              break
            }
            hit = cacheVerdict(system, again.res!)
            if (!hit) await new Promise((r) => setTimeout(r, 50))
          }
          if (hit === false) report(`${p} was not served from cache after priming`)
        }
      }

      const firstWorkload = scenario.workload('1')
      loadCommands.push(
        `${scenario.id}: ${tool === 'wrk' ? `wrk -t ${Math.min(opts.threads, scenario.connections ?? opts.connections)} -c ${scenario.connections ?? opts.connections} -d ${opts.smoke ? opts.durationSec : (scenario.durationSec ?? opts.durationSec)}s --timeout 10s -s <script.lua> http://127.0.0.1:<port>${firstWorkload.kind === 'fixed' ? firstWorkload.path : '/'}` : `autocannon -c ${scenario.connections ?? opts.connections} -d ${opts.smoke ? opts.durationSec : (scenario.durationSec ?? opts.durationSec)}`}${firstWorkload.kind === 'zipf' ? ` (request(): /obj/<rank-1>?r=<rep>, rank ~ Zipf(s=${firstWorkload.exponent}) over ${firstWorkload.count} objects)` : firstWorkload.kind === 'unique' ? ` (request(): /obj/<i mod ${firstWorkload.count}>?storm=<rep>-<thread>-<i>: a new URL every time)` : ''}`,
      )

      const scenarioSeconds = opts.smoke ? opts.durationSec : (scenario.durationSec ?? opts.durationSec)
      if (opts.warmupSec > 0) {
        for (const system of lineup) {
          try {
            await load(system, scenario.workload('warm'), Math.min(opts.warmupSec, scenarioSeconds), scenario.connections ?? opts.connections)
          } catch (err) {
            warn(`${scenario.id} / ${system.name}: warm-up failed: ${(err as Error).message}`)
          }
        }
      }

      for (let rep = 1; rep <= opts.runs; rep++) {
        // The compared pair swaps places every other repetition, so neither always runs right after bare.
        const order = reference && caje && rep % 2 === 0 ? lineup.map((s) => (s === reference ? caje : s === caje ? reference : s)) : lineup
        for (const system of order) {
          const workload = scenario.workload(String(rep))
          if (system.kind === 'caje' && workload.kind !== 'fixed') {
            // What a new file costs where caje's cache is, just before a load that stores many: on
            // ext4 without a journal it follows the deletions of the last minutes (bench/disk.ts),
            // and caje's disk writer creates two files and, in a cold cache, about two directories
            // per object stored.
            try {
              const micros = probeFileCreation(tmpDir, 64)
              log(`  ${scenario.id} run ${rep}/${opts.runs} ${system.name}: creating a file took ${micros.toFixed(0)} µs just before`)
              addNote(scenario.id, system.name, `run ${rep}: creating a file took ${micros.toFixed(0)} µs just before`)
            } catch (err) {
              warn(`could not time file creation in ${tmpDir}: ${(err as Error).message}`)
            }
          }
          const before = await originStats(origin)
          const cajeBefore = system.kind === 'caje' ? await cajeRequestCounts(system) : undefined
          // For a scenario with an RSS target, what caje's memory was made of at its peak too.
          const rss = pollPeakRss(await processTree(system.pid), 250, scenario.targets && system.kind === 'caje' ? system.pid : undefined, () => cajeMemoryAccount(system, cajeHeapLogs.get(system)))
          const cpuBefore = system.kind === 'caje' ? await cpuSeconds(system.pid) : undefined
          let result: LoadResult
          try {
            result = await load(system, workload, scenarioSeconds, scenario.connections ?? opts.connections)
          } catch (err) {
            await rss.stop()
            const message = `load run failed: ${(err as Error).message.split('\n')[0]}`
            problems.push({ scenario: scenario.id, system: system.name, message })
            addNote(scenario.id, system.name, message)
            warn(`${scenario.id} / ${system.name}: ${message}`)
            continue
          }
          // Settling first: the RSS poll stays on until the work queued by this run is done.
          if (scenario.measureSettle && system.kind === 'caje') {
            const settled = await settleTime(system)
            settleNotes.push({ scenario: scenario.id, system: system.name, settled })
            log(`  ${scenario.id} run ${rep}/${opts.runs} ${system.name}: after the load, disk writer idle in ${settled.disk ?? '>30000'} ms, manifest writer in ${settled.manifest ?? '>30000'} ms`)
          }
          const cpuAfter = cpuBefore === undefined ? undefined : await cpuSeconds(system.pid)
          const peakRssBytes = await rss.stop()
          const atPeak = rss.atPeak()
          if (atPeak) addNote(scenario.id, system.name, `run ${rep} at its peak, MB: ${formatBreakdown(atPeak)}; ${rss.probedAtPeak()}`)
          const after = await originStats(origin)
          let cajeHitRatio: number | undefined
          if (system.kind === 'caje') {
            const cajeAfter = await cajeRequestCounts(system)
            if (cajeBefore && cajeAfter) {
              let total = 0
              for (const [k, v] of cajeAfter) total += v - (cajeBefore.get(k) ?? 0)
              const hits = (cajeAfter.get('hit') ?? 0) - (cajeBefore.get('hit') ?? 0)
              cajeHitRatio = total > 0 ? hits / total : undefined
            }
          }
          const isCache = system.kind !== 'bare' && system.kind !== 'origin'
          measurements.push({
            scenario: scenario.id,
            system: system.name,
            rep,
            load: result,
            peakRssBytes,
            originRequests: isCache ? after.requests - before.requests : undefined,
            cajeHitRatio,
            cpuUsPerRequest: cpuBefore !== undefined && cpuAfter !== undefined && result.requests > 0 ? ((cpuAfter - cpuBefore) * 1e6) / result.requests : undefined,
            idealHitRatio: isCache && workload.kind === 'zipf' ? zipfIdealHitRatio(workload.count, workload.exponent, result.requests) : undefined,
          })
          const errors = totalErrors(result)
          if (errors > 0) {
            const e = result.errors
            const message = `${errors} errors in run ${rep} (connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}, non-2xx/3xx ${e.status})`
            problems.push({ scenario: scenario.id, system: system.name, message })
            warn(`${scenario.id} / ${system.name}: ${message}`)
          }
          const cpu = measurements.at(-1)!.cpuUsPerRequest
          log(
            `  ${scenario.id} run ${rep}/${opts.runs} ${system.name.padEnd(14)} ${Math.round(result.rps).toString().padStart(7)} req/s  p50 ${result.latencyMs.p50.toFixed(2)} ms  p99 ${result.latencyMs.p99.toFixed(2)} ms${cpu === undefined ? '' : `  CPU ${cpu.toFixed(0)} µs/req`}${peakRssBytes === undefined ? '' : `  peak RSS ${(peakRssBytes / 1024 / 1024).toFixed(0)} MB`}${errors ? `  errors ${errors}` : ''}`,
          )
        }
      }

      for (const system of lineup) {
        const runs = settleNotes.filter((n) => n.scenario === scenario.id && n.system === system.name).map((n) => n.settled)
        if (runs.length === 0) continue
        const list = (pick: (s: Settled) => number | undefined) => runs.map((s) => pick(s) ?? '>30000').join(', ')
        addNote(scenario.id, system.name, `after the load: disk writer idle in ${list((s) => s.disk)} ms, manifest writer in ${list((s) => s.manifest)} ms`)
      }
      if (scenario.targets && caje) {
        const { rssOverTierBytes, settleMs } = scenario.targets
        const maxRss = opts.cajeMemoryBytes + rssOverTierBytes
        const peaks = measurements.filter((m) => m.scenario === scenario.id && m.system === caje.name).map((m) => m.peakRssBytes)
        const over = peaks.filter((p) => p === undefined || p > maxRss).length
        const mb = (b: number) => (b / 1024 / 1024).toFixed(0)
        addNote(scenario.id, caje.name, `peak RSS ${peaks.map((p) => (p === undefined ? '?' : mb(p))).join(', ')} MB: ${over === 0 ? 'within' : `${over} run(s) over`} the target of ${mb(maxRss)} MB (memory tier + ${mb(rssOverTierBytes)} MB)`)
        const settled = settleNotes.filter((n) => n.scenario === scenario.id && n.system === caje.name).map((n) => Math.max(n.settled.disk ?? Infinity, n.settled.manifest ?? Infinity))
        if (settled.length > 0) {
          const late = settled.filter((ms) => ms > settleMs).length
          addNote(scenario.id, caje.name, `${late === 0 ? 'every run' : `${late} run(s) not`} settled within the target of ${settleMs} ms`)
        }
      }

      // After the load, caje must still serve the right bytes.
      if (caje) {
        const probe = scenario.workload('verify')
        const p = probe.kind === 'fixed' ? probe.path : `${probe.pathPrefix}0?verify=1`
        const after = await checkBody(caje, p)
        if (after.problem) {
          const message = `after load: ${after.problem}`
          problems.push({ scenario: scenario.id, system: caje.name, message })
          addNote(scenario.id, caje.name, message)
          warn(`${scenario.id} / ${caje.name}: ${message}`)
        }
      }
    }

    const facts: string[] = []
    for (const [tier, caje] of cajes) {
      const hwm = await statusBytes([caje.pid], 'VmHWM')
      if (hwm > 0) facts.push(`caje (${tier}) peak RSS since start (VmHWM): ${(hwm / 1024 / 1024).toFixed(0)} MB`)
    }

    // Report.
    const rows = summarize(measurements, notes)
    const comparisons: Comparison[] = []
    for (const scenario of selected) {
      const reference = scenario.compareWith && cajes.get(scenario.compareWith.caje)
      const caje = cajes.get(scenario.caje)
      if (!scenario.compareWith || !reference || !caje) continue
      const c = compareSystems(measurements, { scenario: scenario.id, system: caje.name, reference: reference.name, maxCost: scenario.compareWith.maxCost })
      if (c) comparisons.push(c)
    }
    const meta = {
      date: new Date().toISOString(),
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memory: `${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB`,
      node: process.version,
      os: `${os.type()} ${os.release()}`,
      loadAverage: { start: loadAtStart, end: os.loadavg()[0]! },
      tool,
      toolVersion: await toolVersion(tool, tools.get('wrk'), repoDir),
      disk: describeDisk(tmpDir, createMicros),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      settings: [
        `${opts.connections} connections, ${tool === 'wrk' ? `${opts.threads} wrk thread(s), ` : ''}${opts.durationSec} s per run, ${opts.runs} repetition(s), ${opts.warmupSec} s warm-up per system and scenario`,
        `scenarios: ${selected.map((s) => s.id).join(', ')}; ${selected.filter((s) => s.connections).map((s) => `${s.id} uses ${s.connections} connection(s)`).join(', ') || 'all use the same connections'}; hit-1k-disk uses caje with CAJE_MEMORY_CACHE_BYTES=0, the others ${opts.cajeMemoryBytes}`,
        `zipf-10k: ${OBJECT_COUNT} objects of 10 KiB, rank ~ Zipf(s=${opts.zipfExponent}); each repetition uses a new query string, so every cache starts that run cold`,
        `nginx worker_processes ${opts.nginxWorkers}, proxy_cache_lock ${opts.nginxLock ? 'on (misses coalesce; waiters poll every 500 ms, visible in p99 of pass-1k and zipf-10k)' : 'off'}; Varnish with its default thread pools (it uses both cores); caje as one process with its defaults`,
        `origin delay ${opts.originDelayMs} ms; everything on 127.0.0.1; the load generator shares the ${os.availableParallelism()} cores with the server under test`,
      ],
      systems: startLines,
      loadCommands,
      facts,
      warnings: [...warnings, ...(cajeFailed && !opts.smoke ? ['caje is left out of the table above because it did not start'] : [])],
    }
    const markdown = renderResults(meta, rows, comparisons)
    await mkdir(path.dirname(opts.out), { recursive: true })
    // The profile notes and the soak runs (bench/soak.ts --record) keep their own sections at the end: carry them over.
    const previous = await readFile(opts.out, 'utf8').catch(() => '')
    const soak = /\n## (Profiles|Soak)\n[\s\S]*$/.exec(previous)?.[0] ?? ''
    await writeFile(opts.out, soak ? `${markdown.replace(/\n*$/, '\n')}${soak}` : markdown)
    const stamp = meta.date.replace(/[:.]/g, '-')
    await writeFile(path.join(outDir, `results-${stamp}.json`), JSON.stringify({ meta, options: opts, measurements, rows, comparisons, problems }, null, 2))
    process.stdout.write(`\n${textTable(rows)}\n${comparisons.map((c) => `\n${c.summary}`).join('')}\n\nwritten to ${path.relative(process.cwd(), opts.out)}\n`)

    if (opts.smoke) {
      const cajeProblems = problems.filter((p) => p.system.startsWith('caje'))
      if (!opts.systems.includes('caje')) {
        log('smoke: caje left out by --systems/--no-caje; only the harness was checked')
      } else if (cajeProblems.length > 0) {
        log(`smoke FAILED: ${cajeProblems.length} caje problem(s):`)
        for (const p of cajeProblems) log(`  ${p.scenario} / ${p.system}: ${p.message}`)
        return 1
      }
      const harness = problems.filter((p) => !p.system.startsWith('caje'))
      if (harness.length > 0) {
        log('smoke FAILED: the benchmark harness itself had problems:')
        for (const p of harness) log(`  ${p.scenario} / ${p.system}: ${p.message}`)
        return 1
      }
      log('smoke passed')
    }
    return 0
  } finally {
    await Promise.allSettled(systems.reverse().map((s) => s.stop()))
    await rm(tmpDir, { recursive: true, force: true })
  }
}

process.on('exit', killAllSync)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAllSync()
    process.exit(130)
  })
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    process.exit(2)
  },
)
