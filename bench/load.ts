// Load generation: wrk (preferred: C, one thread, cheap per request) with a
// generated Lua script that prints its summary as JSON, or autocannon (in this
// process) when wrk is not installed. Both return the same LoadResult.

import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'

export type LoadTool = 'wrk' | 'autocannon'

/**
 * One fixed path, a Zipf-like mix over `/obj/0 .. /obj/<count-1>`, or a URL never asked
 * before on every request (`/obj/<i mod count>?<query>-<i>`: each one a miss that is stored).
 */
export type Workload =
  | { kind: 'fixed'; path: string }
  | { kind: 'zipf'; count: number; exponent: number; pathPrefix: string; query: string }
  | { kind: 'unique'; count: number; pathPrefix: string; query: string }

export interface LoadOptions {
  tool: LoadTool
  /** Path of the wrk binary when tool is 'wrk'. */
  wrkPath?: string
  baseUrl: string
  workload: Workload
  connections: number
  durationSec: number
  threads: number
  timeoutSec: number
  /** Scratch directory for generated wrk scripts. */
  scratchDir: string
  /**
   * wrk only: each connection waits this long after a response before its next request, so the
   * load is about connections × 1000 / (delayMs + latency) requests a second whatever the server
   * could take: a fixed rate at which two servers' CPU per request compares (a server's cost per
   * request falls as its rate rises and more requests share each turn of its loop).
   */
  delayMs?: number
}

export interface LoadResult {
  tool: LoadTool
  requests: number
  durationSec: number
  rps: number
  bytes: number
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number }
  errors: { connect: number; read: number; write: number; timeout: number; status: number }
  /** The command line (wrk) or the equivalent description (autocannon). */
  command: string
}

export function totalErrors(r: LoadResult): number {
  const e = r.errors
  return e.connect + e.read + e.write + e.timeout + e.status
}

/** Cumulative probabilities of ranks 1..count with weight 1/rank^exponent. */
export function zipfCdf(count: number, exponent: number): Float64Array {
  const cdf = new Float64Array(count)
  let sum = 0
  for (let k = 1; k <= count; k++) {
    sum += 1 / Math.pow(k, exponent)
    cdf[k - 1] = sum
  }
  for (let i = 0; i < count; i++) cdf[i]! /= sum
  return cdf
}

/**
 * Hit ratio of an unbounded cache that starts cold and sees `requests` draws
 * from the Zipf mix: 1 − expected distinct objects ÷ requests. A cache that
 * coalesces concurrent misses can reach it; one that does not falls below.
 */
export function zipfIdealHitRatio(count: number, exponent: number, requests: number): number {
  if (requests <= 0) return 0
  let norm = 0
  for (let k = 1; k <= count; k++) norm += 1 / Math.pow(k, exponent)
  let distinct = 0
  for (let k = 1; k <= count; k++) {
    const p = 1 / Math.pow(k, exponent) / norm
    distinct += 1 - Math.exp(requests * Math.log1p(-p))
  }
  return 1 - distinct / requests
}

/** Index (0-based rank) drawn from a Zipf CDF with a uniform u in [0, 1). */
export function zipfPick(cdf: Float64Array, u: number): number {
  let lo = 0
  let hi = cdf.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (cdf[mid]! < u) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The Lua script for wrk: a Zipf request() when needed, and a done() that prints one JSON line. */
export function wrkScript(workload: Workload, delayMs?: number): string {
  const delay = delayMs ? `\ndelay = function()\n  return ${delayMs}\nend\n` : ''
  const zipf =
    workload.kind === 'zipf'
      ? `
local N = ${workload.count}
local S = ${workload.exponent}
local prefix = ${JSON.stringify(workload.pathPrefix)}
local suffix = ${JSON.stringify(workload.query ? `?${workload.query}` : '')}
local cdf = {}

init = function(args)
  -- each wrk thread has its own Lua state: seed from the address of a fresh table
  local addr = tonumber((tostring({}):match("0x(%x+)")) or "0", 16) or 0
  math.randomseed(os.time() + addr % 1000003)
  local sum = 0
  for k = 1, N do
    sum = sum + 1 / (k ^ S)
    cdf[k] = sum
  end
  for k = 1, N do cdf[k] = cdf[k] / sum end
end

request = function()
  local u = math.random()
  local lo, hi = 1, N
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format(nil, prefix .. (lo - 1) .. suffix)
end
`
      : workload.kind === 'unique'
        ? `
local N = ${workload.count}
local prefix = ${JSON.stringify(workload.pathPrefix)}
local query = ${JSON.stringify(workload.query)}
local i = 0
local thread = ""

init = function(args)
  -- one Lua state per wrk thread: tell their URLs apart
  thread = tostring({}):match("0x(%x+)") or "0"
end

request = function()
  i = i + 1
  return wrk.format(nil, prefix .. (i % N) .. "?" .. query .. "-" .. thread .. "-" .. i)
end
`
        : ''
  return `-- generated by bench/load.ts
${zipf}${delay}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.3f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
`
}

interface WrkJson {
  requests: number
  duration_us: number
  bytes: number
  errors: LoadResult['errors']
  latency_us: { p50: number; p90: number; p99: number; max: number; mean: number }
}

/** Read the WRK_JSON line printed by the script's done(). */
export function parseWrkOutput(stdout: string, command: string): LoadResult {
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '))
  if (!line) throw new Error(`wrk printed no summary; its output was:\n${stdout.slice(-2000)}`)
  const j = JSON.parse(line.slice('WRK_JSON '.length)) as WrkJson
  const durationSec = j.duration_us / 1e6
  const ms = (us: number) => us / 1000
  return {
    tool: 'wrk',
    requests: j.requests,
    durationSec,
    rps: durationSec > 0 ? j.requests / durationSec : 0,
    bytes: j.bytes,
    latencyMs: { p50: ms(j.latency_us.p50), p90: ms(j.latency_us.p90), p99: ms(j.latency_us.p99), max: ms(j.latency_us.max), mean: ms(j.latency_us.mean) },
    errors: j.errors,
    command,
  }
}

function targetUrl(opts: LoadOptions): string {
  const base = opts.baseUrl.replace(/\/$/, '')
  return opts.workload.kind === 'fixed' ? base + opts.workload.path : `${base}/`
}

let scriptCounter = 0

async function runWrk(opts: LoadOptions): Promise<LoadResult> {
  const scriptPath = path.join(opts.scratchDir, `wrk-${process.pid}-${scriptCounter++}.lua`)
  await writeFile(scriptPath, wrkScript(opts.workload, opts.delayMs))
  const threads = Math.max(1, Math.min(opts.threads, opts.connections))
  const args = ['-t', String(threads), '-c', String(opts.connections), '-d', `${opts.durationSec}s`, '--timeout', `${opts.timeoutSec}s`, '-s', scriptPath, targetUrl(opts)]
  const wrk = opts.wrkPath ?? 'wrk'
  const command = [wrk, ...args].join(' ')
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(wrk, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    // A hard bound in case wrk hangs: duration + timeout + a margin.
    const killer = setTimeout(() => child.kill('SIGKILL'), (opts.durationSec + opts.timeoutSec + 15) * 1000)
    child.once('error', (e) => {
      clearTimeout(killer)
      reject(e)
    })
    child.once('close', (c) => {
      clearTimeout(killer)
      resolve({ code: c, stdout: out, stderr: err })
    })
  })
  if (code !== 0) throw new Error(`${command} exited with ${code}: ${stderr.trim() || stdout.trim()}`)
  return parseWrkOutput(stdout, command.replace(scriptPath, '<script.lua>'))
}

interface AutocannonResult {
  requests: { total: number }
  throughput: { total: number }
  latency: { p50: number; p90: number; p99: number; max: number; mean: number }
  duration: number
  errors: number
  timeouts: number
  non2xx: number
}
type AutocannonFn = (opts: Record<string, unknown>) => Promise<AutocannonResult>

async function runAutocannon(opts: LoadOptions): Promise<LoadResult> {
  const specifier = 'autocannon'
  const mod = (await import(specifier)) as { default: AutocannonFn }
  const workload = opts.workload
  const acOptions: Record<string, unknown> = {
    url: targetUrl(opts),
    connections: opts.connections,
    duration: opts.durationSec,
    timeout: opts.timeoutSec,
  }
  if (workload.kind === 'zipf') {
    const cdf = zipfCdf(workload.count, workload.exponent)
    const suffix = workload.query ? `?${workload.query}` : ''
    acOptions.requests = [
      {
        setupRequest(req: { path: string }) {
          req.path = `${workload.pathPrefix}${zipfPick(cdf, Math.random())}${suffix}`
          return req
        },
      },
    ]
  }
  if (workload.kind === 'unique') {
    let i = 0
    acOptions.requests = [
      {
        setupRequest(req: { path: string }) {
          i++
          req.path = `${workload.pathPrefix}${i % workload.count}?${workload.query}-${i}`
          return req
        },
      },
    ]
  }
  const r = await mod.default(acOptions)
  return {
    tool: 'autocannon',
    requests: r.requests.total,
    durationSec: r.duration,
    rps: r.duration > 0 ? r.requests.total / r.duration : 0,
    bytes: r.throughput.total,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max, mean: r.latency.mean },
    errors: { connect: 0, read: Math.max(0, r.errors - r.timeouts), write: 0, timeout: r.timeouts, status: r.non2xx },
    command: `autocannon -c ${opts.connections} -d ${opts.durationSec} -t ${opts.timeoutSec} ${targetUrl(opts)}${workload.kind === 'zipf' ? ` (Zipf s=${workload.exponent} over ${workload.count} objects)` : workload.kind === 'unique' ? ' (a new URL per request)' : ''}`,
  }
}

export function runLoad(opts: LoadOptions): Promise<LoadResult> {
  return opts.tool === 'wrk' ? runWrk(opts) : runAutocannon(opts)
}
