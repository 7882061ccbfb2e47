// npm run bench:cluster-scale [-- options]: the cluster at scale, on this
// machine and 127.0.0.1 only. Three caje processes share one manifest file as
// under LiteFS (node 1 the primary, nodes 2 and 3 replicas writing through
// it), 10 KiB objects, and measures:
//
//   apply     ops/s the primary applies from replica batches (POST /_caje/internal/manifest),
//             and the slowest health probe on a fresh connection to the primary meanwhile
//   purge     a prefix purge of --objects objects held by all 3 nodes: the purge request,
//             when each node first answers a miss, when its index is rid of them all (its
//             health answer's entry count, polled every 20 ms), the slowest health probe meanwhile
//   populate  objects/s node 3 copies from its peers after losing its disk; origin requests
//   list      the admin list at --entries manifest entries: filtered, first and deep pages
//   index     heap bytes per entry of the disk tier's in-memory index
//
// Health probes open a fresh connection to every node every 50 ms during the
// purge, the populate and the list requests; their worst wait is reported.
// A process of their own sends and times them (bench/health-prober.ts), as a
// load balancer's checker would: this one polls the nodes and is their origin.
// It runs ten nice steps above the nodes where allowed, as a checker on
// another machine does not wait for their cores.
// Its own worst event-loop delay meanwhile is reported as proberLoopWorstMs.
// The machine is shared: every figure is the median of --runs repetitions.

import { fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import v8 from 'node:v8'
import vm from 'node:vm'
import SQLite from 'better-sqlite3'
import { buildCaje, buildTrace } from './build.ts'
import { cajeLaunch, freePort } from './systems.ts'
import { fillIndex } from './index-entries.ts'
import type { ProberCommand, ProberReport } from './health-prober.ts'
import { openDatabase } from '../src/manifest/database.ts'
import { startFakeLitefs, type FakeLitefs } from '../src/test-support/fake-litefs.ts'
import { startClusterNode, type ClusterNode } from '../src/test-support/cluster-node.ts'
import { migrateToLatest } from '../src/manifest/migrate.ts'
import type { ManifestOp } from '../src/manifest/ops.ts'
import { PIPELINE_HEADER, PIPELINED_BATCHES, QUEUED_HEADER, batchBody } from '../src/manifest/writer.ts'
import { BATCH_FORMS_HEADER, COMPACT_CONTENT_TYPE } from '../src/manifest/batch-body.ts'

const HELP = `npm run bench:cluster-scale [-- options]

  --scenarios <list>   comma list of: apply,purge,populate,list,index (default all)
  --objects <n>        objects purged and populated (default 3000; the issue's figure is 10000)
  --entries <n>        manifest entries for the list scenario (default 300000; issue: 1000000)
  --index-entries <n>  entries for the in-memory index measure (default 100000)
  --apply-ops <n>      stored ops the apply scenario sends per run, in batches of 1000 (default 20000)
  --apply-senders <n>  batches in flight at once in the apply scenario, as that many replicas send
                       them (default 1)
  --apply-in-line <n>  batches each sender sends per delivery as a replica does (writer.ts
                       RemoteWriter: the next once the primary has the last in line, two in flight;
                       default PIPELINED_BATCHES; 1: each batch waits for the answer to the last)
  --apply-warmup <n>   stored ops sent the same way before the timed apply runs, reported on a line
                       of their own (default 1000; 0: none, the first timed run then measures the
                       primary starting its apply thread, preparing statements and growing its WAL)
  --runs <n>           repetitions; medians are reported (default 3)
  --cpu-prof <dir>     start the caje processes with node --cpu-prof, profiles written there
  --keep               keep the temp dir (manifest, caches, logs)
  --dir <path>         where the temp dir is made (default: the system's temp dir). On ext4 without a
                       journal (this machine's disk) each file or directory created skips every inode
                       of its block group deleted in the last 60-360 s, so a directory other work
                       fills and empties (/tmp) makes the nodes' disk writers spend 1-2 ms of kernel
                       CPU per stored object; a directory flagged with \`chattr +T\` has each new temp
                       dir placed in a block group of its own (about 0.1 ms)
  --threadpool <n>     UV_THREADPOOL_SIZE of the caje processes (default: Node's 4)
  --populate-concurrency <n>
                       peer requests the populating node keeps going at once (CAJE_POPULATE_CONCURRENCY;
                       default: caje's own, 4; the bench set 16 before, 2,048 copies in flight, which
                       cost the senders more CPU per object: see docs/scale-history.md)
  --trace              record on each node when it accepted and answered each health probe, its
                       event-loop delay, run-queue wait and GC pauses (bench/node-trace.ts), and
                       break the slowest probes down by where they waited; each node's turns over
                       20 ms with the CPU its main thread ran in them (with --cpu-prof and --keep,
                       bench/long-turns.ts prints the frames that ran in them)
  --node-flags <flags> more flags for the caje processes' node, after bin/caje's (space-separated)
  --trace-gc           start the caje processes with node --trace-gc (in their output; with --keep)
  --perf <file>        record the primary (all its threads) with perf during the apply runs, into <file>
                       (its JS frames named: the nodes run with --perf-basic-prof); read it with perf script
`

const SECRET = 'cluster-scale-bench-secret'
const TOKEN = 'cluster-scale-bench-api-token-0123456789'
const HOST = 'cdn.bench'
const OBJECT_BYTES = 10 * 1024

interface Options {
  scenarios: Set<string>
  objects: number
  entries: number
  indexEntries: number
  applyOps: number
  applySenders: number
  applyInLine: number
  applyWarmup: number
  runs: number
  cpuProf: string | undefined
  keep: boolean
  dir: string
  threadpool: number | undefined
  populateConcurrency: number | undefined
  trace: boolean
  traceGc: boolean
  nodeFlags: string[]
  perf: string | undefined
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      scenarios: { type: 'string' },
      objects: { type: 'string' },
      entries: { type: 'string' },
      'index-entries': { type: 'string' },
      'apply-ops': { type: 'string' },
      'apply-senders': { type: 'string' },
      'apply-in-line': { type: 'string' },
      'apply-warmup': { type: 'string' },
      perf: { type: 'string' },
      runs: { type: 'string' },
      'cpu-prof': { type: 'string' },
      keep: { type: 'boolean' },
      dir: { type: 'string' },
      threadpool: { type: 'string' },
      'populate-concurrency': { type: 'string' },
      trace: { type: 'boolean' },
      'trace-gc': { type: 'boolean' },
      'node-flags': { type: 'string' },
      help: { type: 'boolean' },
    },
    allowPositionals: false,
  })
  if (values.help) {
    console.log(HELP)
    process.exit(0)
  }
  const int = (name: string, v: string | undefined, d: number) => {
    if (v === undefined) return d
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number, got ${JSON.stringify(v)}`)
    return n
  }
  const all = ['apply', 'purge', 'populate', 'list', 'index']
  const scenarios = new Set((values.scenarios ?? all.join(',')).split(',').map((s) => s.trim()).filter(Boolean))
  for (const s of scenarios) if (!all.includes(s)) throw new Error(`--scenarios: unknown scenario ${JSON.stringify(s)}; choose from ${all.join(', ')}`)
  return {
    scenarios,
    objects: int('objects', values.objects, 3000),
    entries: int('entries', values.entries, 300_000),
    indexEntries: int('index-entries', values['index-entries'], 100_000),
    applyOps: int('apply-ops', values['apply-ops'], 20_000),
    applySenders: int('apply-senders', values['apply-senders'], 1),
    applyInLine: int('apply-in-line', values['apply-in-line'], PIPELINED_BATCHES),
    // 0 allowed: no warm-up.
    applyWarmup: values['apply-warmup'] === '0' ? 0 : int('apply-warmup', values['apply-warmup'], 1000),
    runs: int('runs', values.runs, 3),
    cpuProf: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
    keep: values.keep ?? false,
    dir: values.dir ? path.resolve(values.dir) : os.tmpdir(),
    threadpool: values.threadpool === undefined ? undefined : int('threadpool', values.threadpool, 4),
    populateConcurrency: values['populate-concurrency'] === undefined ? undefined : int('populate-concurrency', values['populate-concurrency'], 4),
    trace: values.trace ?? false,
    traceGc: values['trace-gc'] ?? false,
    nodeFlags: (values['node-flags'] ?? '').split(/\s+/).filter(Boolean),
    perf: values.perf ? path.resolve(values.perf) : undefined,
  }
}

// ── processes ───────────────────────────────────────────────────────────

async function waitFor(check: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs: number, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** The production bundle, as `npm start` runs it (no TypeScript loader thread in the profiles). */
let bundle = ''
/** bench/node-trace.ts bundled, with --trace. */
let traceBundle = ''

function spawnNode(name: string, env: Record<string, string>, options: Options): Promise<ClusterNode> {
  // Node's flags and the environment bin/caje starts caje with, so the nodes run as in
  // production: a node started with plain `node` scavenged semi-spaces of up to 16 MB, pauses
  // of 30–70 ms during a populate, where bin/caje's 4 MB hold each to a few.
  const launch = cajeLaunch(process.cwd())
  return startClusterNode(name, { ...launch.env, ...env }, {
    entry: [bundle],
    nodeArgs: [
      ...launch.nodeArgs,
      ...options.nodeFlags,
      // A directory per node: each thread (the main one, the disk writer) writes a profile of its own there.
      ...(options.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', path.join(options.cpuProf, name)] : []),
      ...(options.traceGc ? ['--trace-gc'] : []),
      ...(options.perf ? ['--perf-basic-prof'] : []),
      ...(traceBundle ? ['--import', traceBundle] : []),
    ],
    // A long run prints more than anyone reads: the tail is enough for a failure.
    keepOutputChars: 1_000_000,
  })
}

interface Cluster {
  root: string
  /** The manifest file every node shares. */
  dbPath: string
  nodes: ClusterNode[]
  originRequests: () => number
  envFor(i: number): Promise<Record<string, string>>
  close(): Promise<void>
}

async function startCluster(options: Options, tag: string): Promise<Cluster> {
  let originRequests = 0
  const origin = http.createServer((req, res) => {
    originRequests++
    // A body of its own per URL, as on a real site: each object is a content file of its own.
    const body = Buffer.alloc(OBJECT_BYTES, 'x')
    body.write(req.url ?? '/')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'public, max-age=3600', 'content-length': String(body.length) })
    res.end(body)
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  const originUrl = `http://127.0.0.1:${(origin.address() as net.AddressInfo).port}`
  const root = await fs.mkdtemp(path.join(options.dir, `caje-scale-${tag}-`))
  const ports = [await freePort(), await freePort(), await freePort()]
  const common = {
    CAJE_ORIGIN: originUrl,
    CAJE_LISTEN_HOST: '127.0.0.1',
    CAJE_DATABASE_PATH: path.join(root, 'shared', 'manifest.db'),
    CAJE_CLUSTER_SECRET: SECRET,
    CAJE_API_TOKEN: TOKEN,
    CAJE_ADMIN_PASSWORD: 'correct horse battery staple',
    CAJE_PRIMARY_URL_TEMPLATE: `http://{host}:${ports[0]}`,
    CAJE_ACCESS_LOG: 'false',
    CAJE_POPULATE_INTERVAL: '0',
    ...(options.populateConcurrency ? { CAJE_POPULATE_CONCURRENCY: String(options.populateConcurrency) } : {}),
    CAJE_SHUTDOWN_TIMEOUT_MS: '5000',
    CAJE_MEMORY_CACHE_BYTES: '0',
    ...(options.threadpool ? { UV_THREADPOOL_SIZE: String(options.threadpool) } : {}),
  }
  // The role comes from LiteFS's HTTP API: one small stand-in per node (node 1 holds the lease).
  const litefsApis: FakeLitefs[] = []
  const envFor = async (i: number): Promise<Record<string, string>> => {
    const litefs = path.join(root, `litefs${i + 1}`)
    await fs.mkdir(litefs, { recursive: true })
    if (i > 0) await fs.writeFile(path.join(litefs, '.primary'), '127.0.0.1\n')
    litefsApis[i] ??= await startFakeLitefs(i === 0 ? { isPrimary: true } : { isPrimary: false, hostname: '127.0.0.1' })
    return {
      ...common,
      PORT: String(ports[i]),
      CAJE_NODE_ID: `node${i + 1}`,
      CAJE_CACHE_DIR: path.join(root, `cache${i + 1}`),
      CAJE_LITEFS_DIR: litefs,
      CAJE_LITEFS_API: litefsApis[i]!.url,
      CAJE_INTERNAL_URL: `http://127.0.0.1:${ports[i]}`,
      ...(traceBundle ? { CAJE_BENCH_TRACE: path.join(root, `trace-node${i + 1}.jsonl`) } : {}),
    }
  }
  const { db } = openDatabase({ path: common.CAJE_DATABASE_PATH })
  await migrateToLatest(db)
  await db.destroy()
  const nodes = await Promise.all([0, 1, 2].map(async (i) => spawnNode(`node${i + 1}`, await envFor(i), options)))
  return {
    root,
    dbPath: common.CAJE_DATABASE_PATH,
    nodes,
    originRequests: () => originRequests,
    envFor,
    async close() {
      // A profiled process writes its profile on exit, which takes longer than 10 s for a busy primary.
      await Promise.all(nodes.map((n) => n.stop(options.cpuProf ? 120_000 : 10_000)))
      await Promise.all(litefsApis.map((api) => api.close()))
      origin.closeAllConnections()
      await new Promise<void>((resolve) => origin.close(() => resolve()))
      if (!options.keep) await fs.rm(root, { recursive: true, force: true })
      else {
        for (const n of nodes) await fs.writeFile(path.join(root, `${n.name}.log`), n.out())
        console.log(`kept ${root} (the nodes' output in node*.log)`)
      }
    },
  }
}

// ── HTTP ────────────────────────────────────────────────────────────────

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })

function get(node: ClusterNode, pathname: string): Promise<{ status: number; cacheStatus: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: node.port, path: pathname, headers: { host: HOST }, agent }, (res) => {
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode!, cacheStatus: String(res.headers['cache-status'] ?? '') }))
      })
      .on('error', reject)
  })
}

function getOnlyIfCached(node: ClusterNode, pathname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: node.port, path: pathname, headers: { host: HOST, 'cache-control': 'only-if-cached' }, agent }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode!))
      })
      .on('error', reject)
  })
}

async function admin<T>(node: ClusterNode, pathname: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; json: T; ms: number }> {
  const t0 = performance.now()
  const res = await fetch(node.url + pathname, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json', ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  })
  const json = (await res.json()) as T
  return { status: res.status, json, ms: performance.now() - t0 }
}

/** Run fn over items with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!)
    }),
  )
}

/** One health probe: which node, when it was sent (performance.now()) and how long it waited. */
interface ProbeSample {
  node: number
  at: number
  ms: number
  /** The probe's local port (the node sees it as the remote port), and the wall clock it was sent at (ms). */
  port?: number
  wall: number
  /** When the client's connect completed and its response headers arrived, ms after it was sent. */
  connectMs?: number
  headersMs?: number
}

/** The wall clock in ms, comparable with the nodes' traces (bench/node-trace.ts). */
const wallNow = () => performance.timeOrigin + performance.now()

/** The prober process (bench/health-prober.ts), started once by main(). */
let prober: ChildProcess | undefined
/** Its event loop's worst delay in the last probing session (ms): what it may have added to a probe. */
let proberLoopWorstMs = 0

async function startProber(): Promise<void> {
  // fork() runs it with this process's execArgv: under tsx, as this script is.
  const child = fork(path.join(import.meta.dirname, 'health-prober.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  await new Promise<void>((resolve, reject) => {
    child.once('message', (m: { nice: number }) => {
      console.log(`health prober: pid ${child.pid}, nice ${m.nice} (the nodes ${os.getPriority()})`)
      resolve()
    })
    child.once('exit', (code) => reject(new Error(`the health prober exited at start (code ${code})`)))
  })
  prober = child
}

/**
 * A health probe on a fresh connection to every node every 50 ms, sent and
 * timed by the prober process (bench/health-prober.ts), so the wait is the
 * node's and the machine's, not this process's: it polls the nodes and
 * serves as their origin meanwhile. stop() resolves to the worst wait per
 * node (ms), and `samples` keeps every probe (`at` on this process's clock),
 * so a slow one can be matched with the request that ran meanwhile.
 */
function probeHealth(nodes: ClusterNode[]): { stop(): Promise<number[]>; samples: ProbeSample[] } {
  const child = prober!
  const samples: ProbeSample[] = []
  const command: ProberCommand = { k: 'start', ports: nodes.map((n) => n.port) }
  child.send(command)
  return {
    samples,
    async stop() {
      const report = new Promise<ProberReport>((resolve) => child.once('message', (m: ProberReport) => resolve(m)))
      child.send({ k: 'stop' } satisfies ProberCommand)
      const { samples: got, loopWorstMs } = await report
      proberLoopWorstMs = loopWorstMs
      for (const s of got) samples.push({ ...s, at: s.wall - performance.timeOrigin })
      const worst = nodes.map(() => 0)
      for (const s of samples) worst[s.node] = Math.max(worst[s.node]!, s.ms)
      return worst
    },
  }
}

/** CPU ms per second of each kind of thread (by name; the main thread is the one named after the process) between two wall times. */
function threadCpu(trace: TraceLine[], from: number, to: number): Record<string, number> {
  const snaps = trace.filter((t): t is Extract<TraceLine, { k: 'threads' }> => t.k === 'threads')
  const first = snaps.findLast((t) => t.at <= from) ?? snaps[0]
  const last = snaps.find((t) => t.at >= to) ?? snaps[snaps.length - 1]
  if (!first || !last || last.at <= first.at) return {}
  const out: Record<string, number> = {}
  for (const [tid, [comm, ms]] of Object.entries(last.threads)) {
    const name = comm.replace(/[0-9]+$/, '')
    out[name] = (out[name] ?? 0) + ms - (first.threads[tid]?.[1] ?? 0)
  }
  const seconds = (last.at - first.at) / 1000
  for (const k of Object.keys(out)) out[k] = Math.round(out[k]! / seconds)
  return out
}

/** What bench/node-trace.ts records on a node. */
type TraceLine =
  | { k: 'probe'; port: number; conn?: number; req: number; fin: number }
  | { k: 'window'; from: number; to: number; delayMaxMs: number; util: number; runMs: number; waitMs: number; timers: number }
  | { k: 'gc'; at: number; ms: number; kind?: number }
  | { k: 'threads'; at: number; threads: Record<string, [string, number]> }
  | { k: 'turn'; at: number; ms: number; runMs: number; waitMs: number; fromUs: number; toUs: number }

async function readTrace(cluster: Cluster, i: number): Promise<TraceLine[]> {
  const text = await fs.readFile(path.join(cluster.root, `trace-node${i + 1}.jsonl`), 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as TraceLine)
}

/**
 * With --trace: each node's slowest probes broken down by where they waited,
 * from the client's and the node's clocks: accept (sent → the node's
 * 'connection'), read (→ its 'request'), handler (→ response finished),
 * back (→ the client has it all); and over the probe's span, the node's worst
 * event-loop delay, its CPU time, run-queue wait and GC. Then per node over
 * the whole scenario: the worst loop delay, the longest GC pause, the total
 * run-queue wait.
 */
async function explainWithTrace(cluster: Cluster, samples: ProbeSample[], from: number, to: number, top = 3): Promise<Record<string, number>> {
  if (!traceBundle) return {}
  // The nodes flush their traces once a second.
  await new Promise((r) => setTimeout(r, 1200))
  const out: Record<string, number> = {}
  for (let n = 0; n < cluster.nodes.length; n++) {
    const trace = await readTrace(cluster, n)
    const probes = new Map<number, Extract<TraceLine, { k: 'probe' }>>()
    for (const t of trace) if (t.k === 'probe' && t.req >= from - 1000) probes.set(t.port, t)
    const windows = trace.filter((t): t is Extract<TraceLine, { k: 'window' }> => t.k === 'window' && t.to >= from && t.from <= to)
    const gcs = trace.filter((t): t is Extract<TraceLine, { k: 'gc' }> => t.k === 'gc' && t.at >= from && t.at <= to)
    const name = cluster.nodes[n]!.name
    const slow = samples
      .filter((s) => s.node === n)
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
    for (const s of slow) {
      const end = s.wall + s.ms
      const p = s.port === undefined ? undefined : probes.get(s.port)
      const over = windows.filter((w) => w.to >= s.wall && w.from <= end)
      const g = gcs.filter((x) => x.at + x.ms >= s.wall && x.at <= end)
      const r = (x: number) => Math.round(x)
      const parts = p
        ? `accept ${p.conn === undefined ? '?' : r(p.conn - s.wall)}, read ${p.conn === undefined ? '?' : r(p.req - p.conn)}, handler ${r(p.fin - p.req)}, back ${r(end - p.fin)} ms`
        : 'no trace of it on the node'
      console.log(
        `    ${name} probe ${r(s.ms)} ms (client: connected +${r(s.connectMs ?? NaN)}, headers +${r(s.headersMs ?? NaN)}): ${parts}; ` +
          `meanwhile worst loop delay ${r(Math.max(0, ...over.map((w) => w.delayMaxMs)))} ms, loop busy ${r((100 * over.reduce((a, w) => a + w.util, 0)) / Math.max(1, over.length))}%, ` +
          `CPU ${r(over.reduce((a, w) => a + w.runMs, 0))} ms, run-queue wait ${r(over.reduce((a, w) => a + w.waitMs, 0))} ms, GC ${g.length}× ${r(g.reduce((a, x) => a + x.ms, 0))} ms (longest ${r(Math.max(0, ...g.map((x) => x.ms)))})`,
      )
    }
    // The node's own long turns: wall time, and the part of it the main thread ran (the rest it waited for a CPU).
    const turns = trace.filter((t): t is Extract<TraceLine, { k: 'turn' }> => t.k === 'turn' && t.at >= from && t.at <= to)
    const longest = [...turns].sort((a, b) => b.runMs - a.runMs).slice(0, 5)
    console.log(
      `    ${name} turns over 20 ms: ${turns.length}; longest by CPU: ${longest.map((t) => `${Math.round(t.runMs)} ms ran of ${Math.round(t.ms)} (waited ${Math.round(t.waitMs)}) µs ${t.fromUs}-${t.toUs}`).join('; ') || 'none'}`,
    )
    const seconds = (to - from) / 1000
    const totals = {
      turnLongestMs: Math.round(Math.max(0, ...turns.map((t) => t.ms))),
      turnLongestRunMs: Math.round(Math.max(0, ...turns.map((t) => t.runMs))),
      turnsOver20Ms: turns.length,
      loopDelayWorstMs: Math.round(Math.max(0, ...windows.map((w) => w.delayMaxMs))),
      gcLongestMs: Math.round(Math.max(0, ...gcs.map((x) => x.ms))),
      // Mark-sweep-compact: the whole heap (node:perf_hooks NODE_PERFORMANCE_GC_MAJOR).
      gcMajor: gcs.filter((x) => x.kind === 2).length,
      gcLongestMajorMs: Math.round(Math.max(0, ...gcs.filter((x) => x.kind === 2).map((x) => x.ms))),
      gcMsPerSecond: Math.round(gcs.reduce((a, x) => a + x.ms, 0) / seconds),
      runQueueWaitMsPerSecond: Math.round(windows.reduce((a, w) => a + w.waitMs, 0) / seconds),
      cpuMsPerSecond: Math.round(windows.reduce((a, w) => a + w.runMs, 0) / seconds),
    }
    console.log(`    ${name} over the scenario: ${JSON.stringify(totals)}; CPU ms/s by thread: ${JSON.stringify(threadCpu(trace, from, to))}`)
    for (const [k, v] of Object.entries(totals)) out[`${name}.${k}`] = v
  }
  return out
}

/** A request the bench made, for matching with slow probes. */
interface Span {
  label: string
  node: number
  at: number
  ms: number
}

/**
 * Print each node's slowest probes with the requests that overlapped them:
 * a probe held up by one request's synchronous reads overlaps that request.
 */
function explainSlowProbes(names: string[], samples: ProbeSample[], spans: Span[], top = 3): void {
  for (let n = 0; n < names.length; n++) {
    const slow = samples
      .filter((s) => s.node === n)
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
    const parts = slow.map((s) => {
      const during = spans.filter((r) => r.at < s.at + s.ms && r.at + r.ms > s.at).map((r) => `${r.label}@${names[r.node]} ${Math.round(r.ms)} ms`)
      return `${Math.round(s.ms)} ms (during ${during.length ? during.join(', ') : 'no request'})`
    })
    console.log(`  slowest probes ${names[n]}: ${parts.join('; ')}`)
  }
}

// ── scenarios ───────────────────────────────────────────────────────────

function entryRecord(i: number, now: number, prefix = '/obj/') {
  const url = `http://${HOST}${prefix}${i}`
  return {
    // A node's key is the URL it stored (src/proxy/cache-key.ts primaryKey): the manifest keeps a
    // second copy of the URL (entries_url_not_key) only for the few keys a rule rewrote.
    key: url,
    variant: '',
    host: HOST,
    url,
    status: 200,
    size: OBJECT_BYTES,
    contentType: 'application/octet-stream',
    storedAt: now,
    staleAt: now + 3_600_000,
    deleteAt: now + 7_200_000,
    tags: [] as string[],
    varyHeaders: {} as Record<string, string>,
  }
}

/** The primary applying replica batches: POST /_caje/internal/manifest, 1000 ops each, as a replica sends them. */
async function scenarioApply(cluster: Cluster, totalOps: number, senders: number, inLine: number, run: number): Promise<Record<string, number>> {
  const primary = cluster.nodes[0]!
  const now = Date.now()
  const batches: ManifestOp[][] = []
  for (let b = 0; b * 1000 < totalOps; b++) {
    const ops: ManifestOp[] = []
    for (let i = b * 1000; i < Math.min(totalOps, (b + 1) * 1000); i++) {
      // Already stale: populate (a later scenario) leaves these alone.
      // New entries in every run (their own prefix): the primary inserts, as for new objects.
      const entry = { ...entryRecord(i, now + i, `/apply${run}/`), staleAt: now - 1000 }
      ops.push({ type: 'stored', nodeId: `node${(i % 2) + 2}`, entry })
    }
    batches.push(ops)
  }
  // The form a replica sends once the primary has answered it (writer.ts RemoteWriter): compact when announced.
  const probe = await fetch(`${primary.url}/_caje/internal/manifest`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' }, body: '{"ops":[]}' })
  await probe.arrayBuffer()
  const compact = (probe.headers.get(BATCH_FORMS_HEADER) ?? '').split(',').some((f) => f.trim() === 'compact')
  // Bytes, as a replica sends them (writer.ts batchBody), made before the clock starts.
  const bodies = batches.map((ops) => batchBody(ops, compact))
  console.log(`  apply: batches sent as ${compact ? COMPACT_CONTENT_TYPE : 'application/json'}, ${Math.round(bodies[0]!.length / 1024)} KB per ${batches[0]!.length} ops`)
  // The search index's queue left by the run before (or the warm-up) is not this run's work.
  await searchQueueBelow(cluster.dbPath, 1)
  const idleWorst = await idleProbeWorst(cluster)
  // The saturated primary: fresh connections every 50 ms while batches arrive back to back.
  const probes = probeHealth([primary])
  const window = profileWindow('apply')
  // The primary's CPU (all its threads) per op: unlike ops/s, hardly moved by the other work on the machine.
  const cpuBefore = await cpuMs(primary)
  const threadsBefore = await threadCpuMs(primary)
  const t0 = performance.now()
  let applied = 0
  let next = 0
  // Each sender as a replica (writer.ts RemoteWriter): `inLine` batches per delivery, each sent
  // once the primary has the one before it in line (two in flight), the next delivery once the
  // last is answered; with 1, each batch once the primary has answered the last.
  const post = (body: Uint8Array<ArrayBuffer>, line: string | undefined) => {
    let queued!: (inLine: boolean) => void
    const inLineAt = new Promise<boolean>((resolve) => (queued = resolve))
    const answer = (async () => {
      const res = await fetch(`${primary.url}/_caje/internal/manifest`, {
        method: 'POST',
        headers: { authorization: `Bearer ${SECRET}`, 'content-type': compact ? COMPACT_CONTENT_TYPE : 'application/json', 'x-caje-node': 'bench', ...(line ? { [PIPELINE_HEADER]: line } : {}) },
        body,
      })
      queued(res.headers.get(QUEUED_HEADER) === '1')
      const json = (await res.json()) as { applied?: number; error?: string; status?: number }
      const status = json.status ?? res.status
      if (status !== 200) throw new Error(`primary refused a batch: ${status} ${json.error}`)
      applied += json.applied ?? 0
    })()
    return { queued: inLineAt, answer }
  }
  const send = async () => {
    while (next < bodies.length) {
      const delivery = bodies.slice(next, next + inLine)
      next += delivery.length
      const line = delivery.length > 1 ? crypto.randomUUID() : undefined
      const place = (i: number) => (line === undefined ? undefined : `${line} ${i}${i === delivery.length - 1 ? ' last' : ''}`)
      let last = post(delivery[0]!, place(0))
      for (let i = 1; i < delivery.length; i++) {
        const before = last
        if (!(await before.queued)) await before.answer
        last = post(delivery[i]!, place(i))
        await before.answer
      }
      await last.answer
    }
  }
  await Promise.all(Array.from({ length: senders }, send))
  const seconds = (performance.now() - t0) / 1000
  const cpuUsPerOp = ((await cpuMs(primary)) - cpuBefore) * 1000 / Math.max(1, applied)
  const threads = threadCpuSince(threadsBefore, await threadCpuMs(primary), primary.child.pid!)
  const [worst] = await probes.stop()
  window.end()
  // URLs the run left for the admin filter's index to take when the primary is idle: its thread's CPU until they are indexed, too.
  const searchBacklog = await searchQueueBelow(cluster.dbPath, Infinity)
  await searchQueueBelow(cluster.dbPath, 1)
  const indexed = threadCpuSince(threadsBefore, await threadCpuMs(primary), primary.child.pid!)
  return {
    opsPerSecond: Math.round(applied / seconds),
    searchBacklog,
    busiestThreadUsPerOpIndexed: Math.round((indexed.busiest * 1000) / Math.max(1, applied)),
    cpuUsPerOp: Math.round(cpuUsPerOp),
    // The event loop's share, and the busiest other thread's (the apply thread): with one batch
    // in flight at a time, their sum bounds the rate.
    loopUsPerOp: Math.round((threads.main * 1000) / Math.max(1, applied)),
    busiestThreadUsPerOp: Math.round((threads.busiest * 1000) / Math.max(1, applied)),
    healthWorstMs: Math.round(worst!),
    proberLoopWorstMs: Math.round(proberLoopWorstMs),
    healthIdleWorstMs: idleWorst,
  }
}

/** Wait until the search index's queue holds fewer than `rows` rows (60 s at most); resolves to the rows it held first. */
async function searchQueueBelow(dbPath: string, rows: number): Promise<number> {
  const db = new SQLite(dbPath, { readonly: true })
  try {
    const queued = () => (db.prepare('select count(*) as n from entries_search_queue').get() as { n: number }).n
    const first = queued()
    await waitFor(async () => queued() < rows, 'the search index to catch up', 60_000, 20)
    return first
  } finally {
    db.close()
  }
}

/** Fill every node with the objects, then purge them by prefix through node 2 (a replica). */
async function scenarioPurge(cluster: Cluster, objects: number, run: number): Promise<Record<string, number>> {
  const prefix = `/purge${run}/`
  const paths = Array.from({ length: objects }, (_, i) => `${prefix}${i}`)
  await fillNodes(cluster.nodes, paths, prefix)
  // The fill's 'stored' ops (one per object per replica) reach the primary in
  // batches after the responses: timed apart, so the purge is measured on a
  // cluster that is not still recording the fill.
  const fillOpsStart = performance.now()
  await waitFor(async () => (await Promise.all(cluster.nodes.map(health))).every((h) => (h.manifestWriter?.queued ?? 0) === 0), 'the fill\'s manifest ops to be applied', 120_000, 50)
  const fillOpsMs = performance.now() - fillOpsStart
  // Each node's entries beside the purged ones: the purge is done on a node once its index is back to these.
  const entriesBefore = await Promise.all(cluster.nodes.map(async (node) => (await health(node)).cache.entries - objects))
  // What a node's CPU pays for one admin list filtered to the prefix (disk index scan, manifest search):
  // the bench polled it every 50 ms to see the files go, loading the nodes it measured.
  const listCpuMs = await listCpuCost(cluster.nodes[0]!, prefix)
  const idleWorst = await idleProbeWorst(cluster)
  const probes = probeHealth(cluster.nodes)
  const window = profileWindow('purge')
  const t0 = performance.now()
  const wall0 = wallNow()
  const missAt: (number | undefined)[] = cluster.nodes.map(() => undefined)
  const watchers = cluster.nodes.map(async (node, i) => {
    // The node answers a miss for a purged object (only-if-cached: RFC 9111
    // §5.2.1.7, 504 when nothing usable is stored, without filling it).
    await waitFor(async () => (await getOnlyIfCached(node, `${prefix}${objects - 1}`)) === 504, `${node.name} to miss the purged object`, 60_000, 5)
    missAt[i] = performance.now() - t0
  })
  const purge = admin<{ removed: number }>(cluster.nodes[1]!, '/_caje/purge', { method: 'POST', body: { prefix: `http://${HOST}${prefix}` } })
  const purged = await purge
  const purgeMs = performance.now() - t0
  await Promise.all(watchers)
  const goneAt: number[] = []
  await Promise.all(
    cluster.nodes.map(async (node, i) => {
      // The entry count in the health answer, which costs a node what a probe does.
      await waitFor(async () => (await health(node)).cache.entries <= entriesBefore[i]!, `${node.name} to finish the purge`, 60_000, 20)
      goneAt.push(performance.now() - t0)
    }),
  )
  const worst = await probes.stop()
  window.end()
  for (const node of cluster.nodes) {
    const left = await diskTotal(node, prefix)
    if (left !== 0) throw new Error(`${node.name} still lists ${left} purged entries`)
  }
  // When the node that took the purge logged it applied here (its pass over the index done), after the request was sent.
  const passLine = cluster.nodes[1]!.logs().findLast((l) => l.msg === 'purge requested')
  const passMs = typeof passLine?.time === 'string' ? Date.parse(passLine.time) - (wall0 - 0) : NaN
  console.log(`  purge run ${run}: the fill's ops applied ${Math.round(fillOpsMs)} ms before it; request ${Math.round(purgeMs)} ms (its node's pass over the index done after ${Math.round(passMs)} ms); first miss per node ${missAt.map((m) => Math.round(m!)).join(', ')} ms`)
  explainSlowProbes(
    cluster.nodes.map((n) => n.name),
    probes.samples,
    [{ label: 'purge', node: 1, at: t0, ms: purgeMs }],
  )
  const traced = await explainWithTrace(cluster, probes.samples, wall0, wallNow())
  if (purged.status !== 200) throw new Error(`purge answered ${purged.status}: ${JSON.stringify(purged.json)}`)
  return {
    fillOpsAppliedMs: Math.round(fillOpsMs),
    listFilteredCpuMs: listCpuMs,
    purgeRequestMs: Math.round(purgeMs),
    firstMissSlowestNodeMs: Math.round(Math.max(...(missAt as number[]))),
    allGoneSlowestNodeMs: Math.round(Math.max(...goneAt)),
    healthWorstMs: Math.round(Math.max(...worst)),
    proberLoopWorstMs: Math.round(proberLoopWorstMs),
    ...perNode(cluster, 'healthWorstMs', worst),
    healthIdleWorstMs: idleWorst,
    ...traced,
  }
}

/** One figure per node, named after it. */
function perNode(cluster: Cluster, label: string, values: number[]): Record<string, number> {
  return Object.fromEntries(values.map((v, i) => [`${cluster.nodes[i]!.name}.${label}`, Math.round(v)]))
}

/** The same probes on the idle cluster for a second: what the shared machine costs a probe anyway. */
async function idleProbeWorst(cluster: Cluster): Promise<number> {
  const idle = probeHealth(cluster.nodes)
  await new Promise((r) => setTimeout(r, 1000))
  return Math.round(Math.max(...(await idle.stop())))
}

/**
 * Print a scenario's span on the monotonic clock V8's profiler stamps its
 * samples with (microseconds), so a --cpu-prof profile can be cut to it.
 */
function profileWindow(name: string): { end(): void } {
  const start = process.hrtime.bigint() / 1000n
  return {
    end() {
      console.log(`profile window ${name}: ${start} ${process.hrtime.bigint() / 1000n}`)
    },
  }
}

interface NodeHealth {
  cache: { entries: number; writesSkipped: number; writeQueueJobs: number; writeFailures: number }
  manifestWriter?: { queued: number } | null
}

async function health(node: ClusterNode): Promise<NodeHealth> {
  return (await admin<NodeHealth>(node, '/_caje/health')).json
}

/**
 * Request every path from each node until each holds them all. A node whose
 * disk write queue is full serves a response without storing it (counted as
 * writesSkipped): such paths are asked again once its queue has drained.
 */
async function fillNodes(nodes: ClusterNode[], paths: string[], prefix: string): Promise<void> {
  for (const node of nodes) {
    const skippedBefore = (await health(node)).cache.writesSkipped
    for (let round = 1; ; round++) {
      await pool(paths, 16, async (p) => void (await get(node, p)))
      // Commits finish after the response: wait for the node's write queue to drain.
      await waitFor(async () => (await health(node)).cache.writeQueueJobs === 0, `${node.name} to write its queue`, 120_000, 100)
      const held = await diskTotal(node, prefix)
      if (held === paths.length) break
      // A slow disk (other work on the machine) skips thousands in the first rounds: each round stores more.
      if (round === 10) throw new Error(`${node.name} holds ${held} of ${paths.length} objects after ${round} rounds of requests`)
      console.log(`${node.name} holds ${held} of ${paths.length} objects (${(await health(node)).cache.writesSkipped - skippedBefore} writes skipped for a full write queue); asking again`)
    }
  }
}

async function diskTotal(node: ClusterNode, filter: string): Promise<number> {
  const res = await admin<{ disk: { total: number } }>(node, `/_caje/list?filter=${encodeURIComponent(filter)}&limit=1`)
  return res.json.disk.total
}

/** A node's CPU ms (all threads) per admin list filtered to `filter`, over 20 requests one after another. */
async function listCpuCost(node: ClusterNode, filter: string): Promise<number> {
  const before = await cpuMs(node)
  for (let i = 0; i < 20; i++) await diskTotal(node, filter)
  return Math.round(((await cpuMs(node)) - before) / 20)
}

/** CPU time a node's process has used so far (user + system, all threads), in ms (Linux /proc). */
async function cpuMs(node: ClusterNode): Promise<number> {
  const stat = await fs.readFile(`/proc/${node.child.pid}/stat`, 'utf8')
  // Fields after the command name (in parentheses, which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}
/** CPU time of each thread of a node's process so far, in ms, by thread id (Linux /proc). */
async function threadCpuMs(node: ClusterNode): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  const dir = `/proc/${node.child.pid}/task`
  for (const tid of await fs.readdir(dir)) {
    const stat = await fs.readFile(`${dir}/${tid}/stat`, 'utf8').catch(() => '')
    if (stat === '') continue
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    out.set(Number(tid), ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS)
  }
  return out
}

/** The main thread's CPU ms between two readings, and the most any other thread used. */
function threadCpuSince(before: Map<number, number>, after: Map<number, number>, mainTid: number): { main: number; busiest: number } {
  let busiest = 0
  for (const [tid, ms] of after) if (tid !== mainTid) busiest = Math.max(busiest, ms - (before.get(tid) ?? 0))
  return { main: (after.get(mainTid) ?? 0) - (before.get(mainTid) ?? 0), busiest }
}

/**
 * perf recording every thread of `node` (cpu-clock: it works in a container without hardware
 * counters) until stop(), which ends it with SIGINT so it writes its file.
 */
async function startPerf(node: ClusterNode, file: string): Promise<{ stop(): Promise<void> }> {
  const perf = spawn('perf', ['record', '-e', 'cpu-clock', '-g', '-p', String(node.child.pid), '-o', file], { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = new Promise<void>((resolve) => perf.once('exit', () => resolve()))
  // perf prints nothing when it starts: give it a moment to attach to every thread.
  await new Promise((r) => setTimeout(r, 500))
  return {
    async stop() {
      perf.kill('SIGINT')
      await exited
      console.log(`perf data of ${node.name} (pid ${node.child.pid}) in ${file}`)
    },
  }
}

/** USER_HZ: 100 on every Linux that caje runs on. */
const CLOCK_TICKS = 100

/** Node 1 and 2 hold the objects; node 3 starts on an empty disk and populates from them. */
async function scenarioPopulate(cluster: Cluster, objects: number, run: number): Promise<Record<string, number>> {
  const prefix = `/pop${run}/`
  const paths = Array.from({ length: objects }, (_, i) => `${prefix}${i}`)
  await fillNodes(cluster.nodes.slice(0, 2), paths, prefix)
  // The manifest lists them as held (replicas' ops reach the primary in batches).
  await waitFor(async () => (await admin<{ manifest: { total: number } }>(cluster.nodes[2]!, `/_caje/list?filter=${encodeURIComponent(prefix)}&limit=1`)).json.manifest.total === objects, 'the manifest', 60_000, 100)
  const before = cluster.originRequests()
  const node = cluster.nodes[2]!
  const idleWorst = await idleProbeWorst(cluster)
  const probes = probeHealth(cluster.nodes)
  const window = profileWindow('populate')
  const cpuBefore = await Promise.all(cluster.nodes.map((n) => cpuMs(n)))
  const t0 = performance.now()
  const wall0 = wallNow()
  const started = await admin<{ started: boolean }>(node, '/_caje/populate', { method: 'POST', body: {} })
  if (started.status !== 202) throw new Error(`populate answered ${started.status}`)
  let status: { running: boolean; done: number; failed: number } | null = null
  await waitFor(
    async () => {
      status = (await admin<{ populate: typeof status }>(node, '/_caje/populate')).json.populate
      return status !== null && !status.running
    },
    'populate to finish',
    600_000,
    50,
  )
  const seconds = (performance.now() - t0) / 1000
  // Until the copies are on disk too: the populate counts a copy once it is queued for writing.
  await waitFor(async () => (await health(node)).cache.writeQueueJobs === 0, 'node3 to write its queue', 120_000, 20)
  const secondsOnDisk = (performance.now() - t0) / 1000
  const cpuAfter = await Promise.all(cluster.nodes.map((n) => cpuMs(n)))
  const worst = await probes.stop()
  window.end()
  explainSlowProbes(
    cluster.nodes.map((n) => n.name),
    probes.samples,
    [
      { label: 'populate', node: 2, at: t0, ms: seconds * 1000 },
      { label: 'write queue', node: 2, at: t0 + seconds * 1000, ms: (secondsOnDisk - seconds) * 1000 },
    ],
  )
  const traced = await explainWithTrace(cluster, probes.samples, wall0, wallNow())
  const s = status as unknown as { done: number; failed: number }
  const cpu = cpuAfter.map((after, i) => after - cpuBefore[i]!)
  return {
    objectsPerSecond: Math.round(s.done / seconds),
    objectsOnDiskPerSecond: Math.round(s.done / secondsOnDisk),
    // CPU time (user + system, every thread) per object: what the machine's load does not change much.
    receiverCpuUsPerObject: Math.round((cpu[2]! * 1000) / Math.max(1, s.done)),
    sendersCpuUsPerObject: Math.round(((cpu[0]! + cpu[1]!) * 1000) / Math.max(1, s.done)),
    copied: s.done,
    failed: s.failed,
    originRequests: cluster.originRequests() - before,
    healthWorstMs: Math.round(Math.max(...worst)),
    proberLoopWorstMs: Math.round(proberLoopWorstMs),
    ...perNode(cluster, 'healthWorstMs', worst),
    healthIdleWorstMs: idleWorst,
    ...traced,
  }
}

/** Bulk-load entries straight into the manifest file (as if stored by the three nodes), then time the admin list. */
/** What seedManifest wrote: entry i was stored at now - i, as row idOf(i). */
interface Seeded {
  now: number
  idOf: (i: number) => number
}

async function seedManifest(dbPath: string, entries: number): Promise<Seeded> {
  const sqlite = new SQLite(dbPath)
  sqlite.pragma('busy_timeout = 10000')
  const now = Date.now()
  const entry = sqlite.prepare(
    `insert or ignore into entries (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers)
     values (?, '', ?, ?, 200, ${OBJECT_BYTES}, 'text/html', ?, ?, ?, '[]', '{}')`,
  )
  const holding = sqlite.prepare(`insert or ignore into entry_nodes (entry_id, node_id, stored_at) select id, ?, ? from entries where key = ? and variant = ''`)
  const sections = ['blog', 'assets', 'img', 'docs', 'api', 'shop', 'news', 'video']
  const urlOf = (i: number) => `https://${HOST}/${sections[i % sections.length]}/${i.toString(36)}/page-${i}.html`
  const keyOf = (i: number) => `${HOST}${urlOf(i).slice(8 + HOST.length)}`
  const chunk = 20_000
  for (let start = 0; start < entries; start += chunk) {
    sqlite.transaction(() => {
      for (let i = start; i < Math.min(entries, start + chunk); i++) {
        const url = urlOf(i)
        const key = keyOf(i)
        entry.run(key, HOST, url, now - i, now + 3_600_000, now + 7_200_000)
        holding.run(`node${(i % 3) + 1}`, now - i, key)
      }
    })()
    // Let the nodes' own writes in between.
    await new Promise((r) => setTimeout(r, 5))
  }
  sqlite.close()
  const idOf = (i: number) => {
    const db = new SQLite(dbPath, { readonly: true })
    try {
      return db.prepare(`select id from entries where key = ? and variant = ''`).pluck().get(keyOf(i)) as number
    } finally {
      db.close()
    }
  }
  return { now, idOf }
}

/** Wait for the primary's writer to index the seeded URLs for the filter; resolves to rows indexed per second. */
async function waitForSearchIndex(dbPath: string, entries: number): Promise<number> {
  const sqlite = new SQLite(dbPath, { readonly: true })
  const t0 = performance.now()
  try {
    const queued = sqlite.prepare('select count(*) from entries_search_queue').pluck()
    await waitFor(() => (queued.get() as number) === 0, 'the search index to catch up', 30 * 60_000, 500)
  } finally {
    sqlite.close()
  }
  return Math.round(entries / ((performance.now() - t0) / 1000))
}

async function scenarioList(cluster: Cluster, entries: number, seeded: Seeded): Promise<Record<string, number>> {
  const node = cluster.nodes[1]!
  const idleWorst = await idleProbeWorst(cluster)
  const probes = probeHealth(cluster.nodes)
  const window = profileWindow('list')
  const deep = Math.max(0, entries - 100)
  // Cursors as the list makes them (repositories.ts): the page after, and the page before, entry `deep`.
  const deepId = seeded.idOf(deep)
  const deepCursor = Buffer.from(JSON.stringify(['after', seeded.now - deep, deepId])).toString('base64url')
  const deepBefore = Buffer.from(JSON.stringify(['before', seeded.now - deep, deepId])).toString('base64url')
  const lastCursor = Buffer.from(JSON.stringify(['last'])).toString('base64url')
  const spans: Span[] = []
  const slowest: Record<string, number> = {}
  const time = async (label: string, q: string) => {
    const samples: number[] = []
    for (let i = 0; i < 5; i++) {
      const at = performance.now()
      const r = await admin<{ manifest: { total: number } }>(node, `/_caje/list?${q}`)
      if (r.status !== 200) throw new Error(`list ${q} answered ${r.status}`)
      samples.push(r.ms)
      spans.push({ label: `${label}#${i + 1}`, node: 1, at, ms: r.ms })
    }
    slowest[label] = Math.round(Math.max(...samples))
    return Math.round(median(samples) * 10) / 10
  }
  const result = {
    firstPageMs: await time('first', 'limit=50'),
    filterRareMs: await time('rare', `filter=${encodeURIComponent(`page-${entries - 7}.html`)}&limit=50`),
    filterCommonMs: await time('common', `filter=${encodeURIComponent('/blog/')}&limit=50`),
    deepPageCursorMs: await time('cursor', `limit=50&manifest_cursor=${deepCursor}`),
    deepPagePrevMs: await time('prev', `limit=50&manifest_cursor=${deepBefore}`),
    lastPageMs: await time('last', `limit=50&manifest_cursor=${lastCursor}`),
    // The deepest offset the list still reads (MAX_LIST_OFFSET); deeper pages go by cursor.
    offset10000Ms: await time('offset', `limit=50&manifest=10000`),
  }
  const worst = await probes.stop()
  window.end()
  console.log(`  list run: slowest request of 5 per kind ${JSON.stringify(slowest)}`)
  explainSlowProbes(
    cluster.nodes.map((n) => n.name),
    probes.samples,
    spans,
  )
  return { ...result, slowestRequestMs: Math.max(...Object.values(slowest)), healthWorstMs: Math.round(Math.max(...worst)), proberLoopWorstMs: Math.round(proberLoopWorstMs), healthIdleWorstMs: idleWorst }
}

/** Heap per entry of the in-memory index, filled like the disk store fills it at start (bench/index-entries.ts). */
function scenarioIndex(count: number): Record<string, number> {
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  gc()
  const before = process.memoryUsage().heapUsed
  const { index } = fillIndex(count, Date.now())
  gc()
  const after = process.memoryUsage().heapUsed
  const perEntry = Math.round((after - before) / count)
  if (index.size !== count) throw new Error('index lost entries')
  return { bytesPerEntry: perEntry }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function medians(runs: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const k of Object.keys(runs[0] ?? {})) out[k] = median(runs.map((r) => r[k]!))
  return out
}

// ── main ────────────────────────────────────────────────────────────────

async function main(): Promise<void> {
  const options = parseOptions()
  if (options.cpuProf) await fs.mkdir(options.cpuProf, { recursive: true })
  const report: Record<string, Record<string, number>> = {}
  const print = (name: string, runs: Record<string, number>[]) => {
    report[name] = medians(runs)
    console.log(`${name}: ${JSON.stringify(report[name])}  (runs: ${runs.map((r) => JSON.stringify(r)).join(' ')})`)
  }

  if (options.scenarios.has('index')) {
    const runs = []
    for (let r = 0; r < options.runs; r++) runs.push(scenarioIndex(options.indexEntries))
    print(`index (${options.indexEntries} entries)`, runs)
  }

  const needsCluster = ['apply', 'purge', 'populate', 'list'].some((s) => options.scenarios.has(s))
  if (needsCluster) {
    bundle = buildCaje(process.cwd(), `cluster-scale-${process.pid}.js`)
    if (options.trace) traceBundle = buildTrace(process.cwd(), `node-trace-${process.pid}.mjs`)
    const cluster = await startCluster(options, 'main')
    await startProber()
    try {
      if (options.scenarios.has('apply')) {
        const runs = []
        if (options.applyWarmup > 0) {
          // The first batches after the cluster starts also start the primary's apply thread,
          // prepare its statements, warm its JIT and grow the WAL file: timed on their own, so the
          // runs below measure the steady state.
          print(`apply warm-up (${options.applyWarmup} stored ops, the first after the cluster started; not in the medians below)`, [await scenarioApply(cluster, options.applyWarmup, options.applySenders, options.applyInLine, -1)])
        }
        const perf = options.perf ? await startPerf(cluster.nodes[0]!, options.perf) : undefined
        try {
          for (let r = 0; r < options.runs; r++) runs.push(await scenarioApply(cluster, options.applyOps, options.applySenders, options.applyInLine, r))
        } finally {
          await perf?.stop()
        }
        print(`apply (primary, ${options.applyOps} stored ops in batches of 1000, ${options.applySenders} sender(s), ${options.applyInLine} per delivery)`, runs)
      }
      if (options.scenarios.has('purge')) {
        const runs = []
        for (let r = 0; r < options.runs; r++) runs.push(await scenarioPurge(cluster, options.objects, r))
        print(`purge (prefix, ${options.objects} objects on 3 nodes)`, runs)
      }
      if (options.scenarios.has('populate')) {
        const runs = []
        for (let r = 0; r < options.runs; r++) runs.push(await scenarioPopulate(cluster, options.objects, r))
        print(`populate (${options.objects} objects into node 3)`, runs)
      }
      if (options.scenarios.has('list')) {
        const dbPath = cluster.nodes[0]!.env.CAJE_DATABASE_PATH!
        const seeded = await seedManifest(dbPath, options.entries)
        const indexRate = await waitForSearchIndex(dbPath, options.entries)
        console.log(`search index caught up with ${options.entries} seeded entries at ${indexRate} rows/s`)
        const runs = []
        for (let r = 0; r < options.runs; r++) runs.push({ ...(await scenarioList(cluster, options.entries, seeded)), indexRowsPerSecond: indexRate })
        print(`list (${options.entries} manifest entries)`, runs)
      }
    } catch (err) {
      for (const n of cluster.nodes) console.error(`--- ${n.name} output (tail) ---\n${n.out().slice(-3000)}`)
      throw err
    } finally {
      agent.destroy()
      prober?.disconnect()
      await cluster.close()
      await fs.rm(bundle, { force: true })
      if (traceBundle) await fs.rm(traceBundle, { force: true })
    }
  }
  console.log(`\nmedians of ${options.runs} run(s), ${os.cpus().length} CPU(s), node ${process.version}, ${new Date().toISOString()}`)
  console.log(JSON.stringify(report, null, 2))
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
