// Soak test: caje (its own process, like production) under a steady mix of
// hits, misses, revalidations, uncacheable passes and periodic purges through
// the JSON API, every response body checked against the bytes the origin
// serves for that path. Reports requests, wrong bodies, 5xx, other errors,
// and a timeline of caje's RSS, V8 heap, cache entries and open descriptors
// from the end of the warm-up to the end (a leak shows as growth along it).
//
// caje runs with a small disk budget (64 MiB, about 2,700 of the soak's
// objects) and memory tier (16 MiB): the unique-URL misses keep eviction
// running in both tiers, so the cache reaches a steady size early and memory
// has a steady state to return to.
//
//   node --import tsx bench/soak.ts --duration 300 --connections 200 [--record]
//
// --record appends the figures to bench/RESULTS.md under "## Soak".
// Only 127.0.0.1 is used: the origin runs in this process, caje in a child.

import { buildCaje } from './build.ts'
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'

export interface SoakOptions {
  durationS: number
  connections: number
  /**
   * Seconds of load before the first sample. Default: until caje first evicts
   * (its disk budget is full, the cache at its steady size), but at least 10 %
   * of the duration (2–20 s) and at most half of it.
   */
  warmupS?: number
  /** Seconds between purges through the JSON API (default 2). */
  purgeEveryS?: number
  /** Seconds between timeline samples after the warm-up (default: a tenth of the rest of the run, at least 1). */
  sampleEveryS?: number
  /** caje's disk budget, CAJE_CACHE_MAX_BYTES (default 64 MiB). */
  cacheMaxBytes?: number
  /** caje's memory tier, CAJE_MEMORY_CACHE_BYTES (default 16 MiB). */
  memoryCacheBytes?: number
  log?: (line: string) => void
}

export interface ProcessSample {
  /** Seconds since the load started. */
  atS: number
  rssBytes: number
  fds: number
  /** V8 heap in use when sampled (nodejs_heap_size_used_bytes from /_caje/metrics). */
  heapUsedBytes: number
  /**
   * Lowest V8 heap in use seen over the sampling interval before this sample
   * (heap is read every second): garbage not yet collected makes single
   * readings jump, the low point is close to what is really alive.
   */
  heapFloorBytes: number
  /** Memory of Buffers and other objects outside the V8 heap (nodejs_external_memory_bytes): cached bodies live here. */
  externalBytes: number
  /** Entries in caje's cache (caje_cache_entries) and evictions so far (caje_cache_evictions_total). */
  cacheEntries: number
  evictions: number
}

export interface SoakResult {
  durationS: number
  connections: number
  requests: number
  /** Requests by what was asked for (hot object, unique URL, revalidated object, uncacheable). */
  byKind: Record<Kind, number>
  /** Responses caje answered from cache (Cache-Status: hit). */
  cacheHits: number
  wrongBodies: number
  serverErrors: number
  /** Requests that failed without a response (reset, timeout). */
  failures: number
  /** Statuses other than 200 / 5xx (none expected). */
  otherStatuses: number
  purges: number
  purgeFailures: number
  /** Seconds the warm-up lasted. */
  warmupS: number
  /** Reads of /_caje/metrics that failed (the heap and cache figures come from there). */
  metricsFailures: number
  cacheMaxBytes: number
  memoryCacheBytes: number
  /** After the warm-up, and at the end. */
  start: ProcessSample
  end: ProcessSample
  /** start, samples every sampleEveryS, end. */
  timeline: ProcessSample[]
  /** First few problems, for the report. */
  problems: string[]
}

type Kind = 'hit' | 'miss' | 'revalidate' | 'pass'

const HOT_OBJECTS = 200
const REVALIDATED_OBJECTS = 50
const MIB = 1024 * 1024
const DEFAULT_CACHE_MAX_BYTES = 64 * MIB
const DEFAULT_MEMORY_CACHE_BYTES = 16 * MIB

/** The body the origin serves for a path: deterministic, 0.5–48 KB, so a mix-up between paths always shows. */
function bodyFor(pathname: string): Buffer {
  const seed = createHash('sha256').update(pathname).digest()
  const size = 512 + (seed.readUInt32BE(0) % (48 * 1024))
  const out = Buffer.allocUnsafe(size)
  for (let at = 0; at < size; at += seed.length) seed.copy(out, at, 0, Math.min(seed.length, size - at))
  // The path itself at the front, so a wrong body is readable in the report.
  out.write(pathname.slice(0, Math.min(pathname.length, size)))
  return out
}

async function startSoakOrigin(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const pathname = (req.url ?? '/').split('?')[0]!
    const body = bodyFor(pathname)
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream', 'content-length': body.length }
    if (pathname.startsWith('/pass/')) headers['cache-control'] = 'no-store'
    else if (pathname.startsWith('/reval/')) {
      // Stale after a second: later requests revalidate with If-None-Match and get a 304.
      const etag = `"${createHash('sha1').update(body).digest('hex').slice(0, 16)}"`
      headers['cache-control'] = 'public, max-age=1'
      headers.etag = etag
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag, 'cache-control': 'public, max-age=1' })
        res.end()
        return
      }
    } else headers['cache-control'] = 'public, max-age=3600'
    res.writeHead(200, headers)
    res.end(body)
  })
  server.keepAliveTimeout = 30_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

interface CajeSettings {
  apiToken: string
  cacheMaxBytes: number
  memoryCacheBytes: number
}

async function startCajeProcess(originUrl: string, dir: string, settings: CajeSettings): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [buildCaje(repoRoot)], {
    cwd: repoRoot,
    env: {
      ...process.env,
      PORT: '0',
      CAJE_LISTEN_HOST: '127.0.0.1',
      CAJE_ORIGIN: originUrl,
      CAJE_CACHE_DIR: path.join(dir, 'cache'),
      CAJE_DATABASE_PATH: path.join(dir, 'manifest.db'),
      CAJE_NODE_ID: 'soak',
      CAJE_ACCESS_LOG: 'false',
      CAJE_POPULATE_INTERVAL: '0',
      CAJE_CACHE_MAX_BYTES: String(settings.cacheMaxBytes),
      CAJE_MEMORY_CACHE_BYTES: String(settings.memoryCacheBytes),
      // The soak's bodies are under 49 KB; the default limit (100 MiB) would not fit the small budget.
      CAJE_MAX_OBJECT_BYTES: String(MIB),
      CAJE_API_TOKEN: settings.apiToken,
      CAJE_METRICS_TOKEN: settings.apiToken,
      CAJE_ADMIN_PASSWORD: randomBytes(16).toString('hex'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)))
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)))
  const deadline = Date.now() + 30_000
  for (;;) {
    const m = /caje is listening on (http:\/\/\S+)/.exec(out)
    if (m) return { child, url: m[1]!, output: () => out }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`caje did not start:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
}

async function readProc(pid: number): Promise<{ rssBytes: number; fds: number }> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8')
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN)
  const fds = (await fs.readdir(`/proc/${pid}/fd`)).length
  return { rssBytes: rssKb * 1024, fds }
}

/** The unlabelled samples of caje's Prometheus text, by metric name. */
async function readMetrics(cajeUrl: string, token: string): Promise<Map<string, number>> {
  const res = await fetch(`${cajeUrl}/_caje/metrics`, { headers: { authorization: `Bearer ${token}` } })
  const text = await res.text()
  if (!res.ok) throw new Error(`/_caje/metrics answered ${res.status}`)
  const values = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+) (\S+)$/i.exec(line)
    if (m) values.set(m[1]!, Number(m[2]))
  }
  return values
}

const emptySample = (): ProcessSample => ({ atS: 0, rssBytes: 0, fds: 0, heapUsedBytes: 0, heapFloorBytes: 0, externalBytes: 0, cacheEntries: 0, evictions: 0 })

function pick(): { kind: Kind; pathname: string } {
  const r = Math.random()
  if (r < 0.6) return { kind: 'hit', pathname: `/hit/${Math.floor(Math.random() * HOT_OBJECTS)}` }
  if (r < 0.75) return { kind: 'miss', pathname: `/miss/${randomBytes(8).toString('hex')}` }
  if (r < 0.9) return { kind: 'revalidate', pathname: `/reval/${Math.floor(Math.random() * REVALIDATED_OBJECTS)}` }
  return { kind: 'pass', pathname: `/pass/${Math.floor(Math.random() * 50)}` }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? (() => {})
  const durationMs = options.durationS * 1000
  const minWarmupMs = (options.warmupS ?? Math.min(20, Math.max(2, options.durationS * 0.1))) * 1000
  const maxWarmupMs = options.warmupS !== undefined ? minWarmupMs : Math.max(minWarmupMs, durationMs / 2)
  const purgeEveryMs = (options.purgeEveryS ?? 2) * 1000
  // Set again when the warm-up ends (a tenth of the rest of the run) unless given.
  let sampleEveryMs = options.sampleEveryS !== undefined ? options.sampleEveryS * 1000 : Math.max(1000, (durationMs - minWarmupMs) / 10)
  const cacheMaxBytes = options.cacheMaxBytes ?? DEFAULT_CACHE_MAX_BYTES
  const memoryCacheBytes = options.memoryCacheBytes ?? DEFAULT_MEMORY_CACHE_BYTES
  const apiToken = randomBytes(24).toString('hex')
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'caje-soak-'))
  const origin = await startSoakOrigin()
  const caje = await startCajeProcess(origin.url, dir, { apiToken, cacheMaxBytes, memoryCacheBytes }).catch(async (err: unknown) => {
    await origin.close()
    await fs.rm(dir, { recursive: true, force: true })
    throw err
  })
  const pid = caje.child.pid!
  const pool = new Pool(caje.url, { connections: options.connections, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 30_000, bodyTimeout: 30_000 })
  const result: SoakResult = {
    durationS: options.durationS,
    connections: options.connections,
    requests: 0,
    byKind: { hit: 0, miss: 0, revalidate: 0, pass: 0 },
    cacheHits: 0,
    wrongBodies: 0,
    serverErrors: 0,
    failures: 0,
    otherStatuses: 0,
    purges: 0,
    purgeFailures: 0,
    warmupS: 0,
    metricsFailures: 0,
    cacheMaxBytes,
    memoryCacheBytes,
    start: emptySample(),
    end: emptySample(),
    timeline: [],
    problems: [],
  }
  const problem = (text: string) => {
    if (result.problems.length < 20) result.problems.push(text)
  }

  const startedAt = Date.now()
  const stopAt = startedAt + durationMs
  log(`soak: caje pid ${pid} at ${caje.url}, origin ${origin.url}; ${options.connections} connections for ${options.durationS} s (warm-up ${minWarmupMs / 1000}–${maxWarmupMs / 1000} s, until the first eviction)`)

  const worker = async () => {
    while (Date.now() < stopAt) {
      const { kind, pathname } = pick()
      try {
        const res = await pool.request({ path: pathname, method: 'GET' })
        const body = Buffer.from(await res.body.arrayBuffer())
        result.requests++
        result.byKind[kind]++
        if (String(res.headers['cache-status'] ?? '').startsWith('caje; hit')) result.cacheHits++
        if (res.statusCode >= 500) {
          result.serverErrors++
          problem(`${res.statusCode} for ${pathname}: ${body.subarray(0, 120).toString()}`)
        } else if (res.statusCode !== 200) {
          result.otherStatuses++
          problem(`${res.statusCode} for ${pathname}`)
        } else if (!body.equals(bodyFor(pathname))) {
          result.wrongBodies++
          problem(`wrong body for ${pathname} (${body.length} bytes, starts ${JSON.stringify(body.subarray(0, 24).toString('latin1'))})`)
        }
      } catch (err) {
        result.failures++
        problem(`request for ${pathname} failed: ${(err as Error).message}`)
      }
    }
  }

  const purger = async () => {
    let n = 0
    while (Date.now() + purgeEveryMs < stopAt) {
      await new Promise((r) => setTimeout(r, purgeEveryMs))
      // Alternate: one hot URL, then a prefix of hot URLs (/hit/1, /hit/10..19, /hit/100..199).
      const body = n++ % 2 === 0 ? { url: `${caje.url}/hit/${Math.floor(Math.random() * HOT_OBJECTS)}` } : { prefix: `${caje.url}/hit/${1 + Math.floor(Math.random() * 9)}` }
      try {
        const res = await fetch(`${caje.url}/_caje/purge`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiToken}`, accept: 'application/json', 'content-type': 'application/json' },
          body: JSON.stringify(body),
        })
        await res.arrayBuffer()
        if (res.ok) result.purges++
        else {
          result.purgeFailures++
          problem(`purge ${JSON.stringify(body)} answered ${res.status}`)
        }
      } catch (err) {
        result.purgeFailures++
        problem(`purge failed: ${(err as Error).message}`)
      }
    }
  }

  // Heap in use, read every second: each timeline sample reports the low point of its interval.
  const heapReadings: { at: number; bytes: number }[] = []
  const scrape = async (): Promise<Map<string, number> | undefined> => {
    try {
      const values = await readMetrics(caje.url, apiToken)
      heapReadings.push({ at: Date.now(), bytes: values.get('nodejs_heap_size_used_bytes') ?? NaN })
      while (heapReadings.length > 0 && heapReadings[0]!.at < Date.now() - sampleEveryMs) heapReadings.shift()
      return values
    } catch (err) {
      result.metricsFailures++
      problem(`reading /_caje/metrics failed: ${(err as Error).message}`)
      return undefined
    }
  }
  const takeSample = async (): Promise<ProcessSample> => {
    const [proc, values] = await Promise.all([readProc(pid), scrape()])
    const s: ProcessSample = {
      atS: Math.round((Date.now() - startedAt) / 1000),
      ...proc,
      heapUsedBytes: values?.get('nodejs_heap_size_used_bytes') ?? NaN,
      heapFloorBytes: heapReadings.length > 0 ? Math.min(...heapReadings.map((r) => r.bytes)) : NaN,
      externalBytes: values?.get('nodejs_external_memory_bytes') ?? NaN,
      cacheEntries: values?.get('caje_cache_entries') ?? NaN,
      evictions: values?.get('caje_cache_evictions_total') ?? NaN,
    }
    result.timeline.push(s)
    log(`soak: ${s.atS} s: RSS ${mb(s.rssBytes)}, heap ${mb(s.heapUsedBytes)} (low ${mb(s.heapFloorBytes)}), external ${mb(s.externalBytes)}, ${s.cacheEntries} entries, ${s.evictions} evicted, ${s.fds} fds, ${result.requests} requests`)
    return s
  }
  const sampler = (async () => {
    let nextSampleAt: number | undefined
    for (;;) {
      const wait = Math.max(0, Math.min(1000, (nextSampleAt ?? Infinity) - Date.now()))
      if (Date.now() + wait >= stopAt) return
      await new Promise((r) => setTimeout(r, wait))
      if (nextSampleAt === undefined) {
        const values = await scrape()
        const elapsed = Date.now() - startedAt
        const evicting = (values?.get('caje_cache_evictions_total') ?? 0) > 0
        if (elapsed < minWarmupMs || (elapsed < maxWarmupMs && !evicting)) continue
        result.warmupS = Math.round(elapsed / 1000)
        if (options.sampleEveryS === undefined) sampleEveryMs = Math.max(1000, (stopAt - Date.now()) / 10)
        result.start = await takeSample()
        nextSampleAt = Date.now() + sampleEveryMs
      } else if (Date.now() < nextSampleAt) {
        await scrape()
      } else {
        await takeSample()
        nextSampleAt += sampleEveryMs
      }
    }
  })()

  try {
    await Promise.all([...Array.from({ length: options.connections }, worker), purger(), sampler])
    result.end = await takeSample()
    if (result.timeline.length === 1) result.start = result.end
    if (caje.child.exitCode !== null) problem(`caje exited during the soak (code ${caje.child.exitCode})`)
  } finally {
    await pool.close().catch(() => {})
    caje.child.kill('SIGTERM')
    await new Promise<void>((resolve) => {
      if (caje.child.exitCode !== null) return resolve()
      const t = setTimeout(() => {
        caje.child.kill('SIGKILL')
        resolve()
      }, 10_000)
      caje.child.once('exit', () => {
        clearTimeout(t)
        resolve()
      })
    })
    await origin.close()
    await fs.rm(dir, { recursive: true, force: true })
  }
  return result
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`
const mib = (bytes: number) => `${+(bytes / MIB).toFixed(1)} MiB`

export function formatSoak(r: SoakResult, when = new Date()): string {
  const rate = (r.requests / r.durationS).toFixed(0)
  return [
    `### ${when.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${r.durationS} s, ${r.connections} connections`,
    '',
    `\`node --import tsx bench/soak.ts --duration ${r.durationS} --connections ${r.connections}\` on ${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}), shared machine.`,
    `Mix: 60 % hits (${HOT_OBJECTS} objects), 15 % misses (unique URLs), 15 % revalidations (max-age=1 + ETag, ${REVALIDATED_OBJECTS} objects), 10 % uncacheable passes; a purge (URL or prefix) every 2 s through the JSON API.`,
    `Bodies 0.5–48 KB. caje's disk budget ${mib(r.cacheMaxBytes)} (CAJE_CACHE_MAX_BYTES), memory tier ${mib(r.memoryCacheBytes)}: the unique URLs keep both evicting.`,
    '',
    '| requests | req/s | hot / unique / revalidated / uncacheable | served as hit | wrong bodies | 5xx | failed requests | purges (failed) | RSS start → end | V8 heap (low) start → end | fds start → end |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${r.requests} | ${rate} | ${r.byKind.hit} / ${r.byKind.miss} / ${r.byKind.revalidate} / ${r.byKind.pass} | ${r.cacheHits} | ${r.wrongBodies} | ${r.serverErrors} | ${r.failures} | ${r.purges} (${r.purgeFailures}) | ${mb(r.start.rssBytes)} → ${mb(r.end.rssBytes)} | ${mb(r.start.heapFloorBytes)} → ${mb(r.end.heapFloorBytes)} | ${r.start.fds} → ${r.end.fds} |`,
    '',
    `Timeline from the end of the warm-up (${r.warmupS} s${r.start.evictions > 0 ? ': the disk budget full, caje evicting' : ''}), V8 heap in use when sampled and the lowest reading of the interval before (read every second):`,
    '',
    '| s | RSS | V8 heap used | V8 heap low | external (Buffers) | cache entries | evicted so far | fds |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.timeline.map((s) => `| ${s.atS} | ${mb(s.rssBytes)} | ${mb(s.heapUsedBytes)} | ${mb(s.heapFloorBytes)} | ${mb(s.externalBytes)} | ${s.cacheEntries} | ${s.evictions} | ${s.fds} |`),
    '',
  ].join('\n')
}

async function record(text: string): Promise<void> {
  const file = path.join(repoRoot, 'bench', 'RESULTS.md')
  let current = await fs.readFile(file, 'utf8')
  if (!/^## Soak$/m.test(current)) {
    current = current.replace(/\n*$/, '\n\n## Soak\n\nLong runs of `bench/soak.ts` (see the README, Development). Newest last.\n\n')
  } else current = current.replace(/\n*$/, '\n\n')
  // Appended at the end: "## Soak" is the last section, so nothing else moves.
  await fs.writeFile(file, current + text)
}

function argValue(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name)
  if (i === -1) return fallback
  const v = Number(args[i + 1])
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number, got ${args[i + 1]}`)
  return v
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const durationS = argValue(args, '--duration', 300)
  const connections = argValue(args, '--connections', 200)
  const result = await runSoak({ durationS, connections, log: (l) => console.log(l) })
  const text = formatSoak(result)
  console.log(`\n${text}`)
  if (result.problems.length > 0) console.log(`problems (first ${result.problems.length}):\n  ${result.problems.join('\n  ')}`)
  if (args.includes('--record')) {
    await record(text)
    console.log('appended to bench/RESULTS.md')
  }
  const bad = result.wrongBodies + result.serverErrors + result.failures + result.otherStatuses + result.purgeFailures + result.metricsFailures
  process.exit(bad === 0 ? 0 : 1)
}
