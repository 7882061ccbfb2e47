// Soak test: caje (its own process, like production) under a steady mix of
// hits, misses, revalidations, uncacheable passes and periodic purges through
// the JSON API, every response body checked against the bytes the origin
// serves for that path. Reports requests, wrong bodies, 5xx, other errors,
// and caje's RSS and open descriptors after warm-up and at the end (a leak
// shows as growth between the two).
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
  /** Seconds of load before the first RSS / fd sample (default: 10 % of the duration, 2–20 s). */
  warmupS?: number
  /** Seconds between purges through the JSON API (default 2). */
  purgeEveryS?: number
  log?: (line: string) => void
}

export interface ProcessSample {
  rssBytes: number
  fds: number
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
  start: ProcessSample
  end: ProcessSample
  /** First few problems, for the report. */
  problems: string[]
}

type Kind = 'hit' | 'miss' | 'revalidate' | 'pass'

const HOT_OBJECTS = 200
const REVALIDATED_OBJECTS = 50

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

async function startCajeProcess(originUrl: string, dir: string, apiToken: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
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
      CAJE_API_TOKEN: apiToken,
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

async function sample(pid: number): Promise<ProcessSample> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8')
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN)
  const fds = (await fs.readdir(`/proc/${pid}/fd`)).length
  return { rssBytes: rssKb * 1024, fds }
}

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
  const warmupMs = (options.warmupS ?? Math.min(20, Math.max(2, options.durationS * 0.1))) * 1000
  const purgeEveryMs = (options.purgeEveryS ?? 2) * 1000
  const apiToken = randomBytes(24).toString('hex')
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'caje-soak-'))
  const origin = await startSoakOrigin()
  const caje = await startCajeProcess(origin.url, dir, apiToken)
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
    start: { rssBytes: 0, fds: 0 },
    end: { rssBytes: 0, fds: 0 },
    problems: [],
  }
  const problem = (text: string) => {
    if (result.problems.length < 20) result.problems.push(text)
  }

  const startedAt = Date.now()
  const stopAt = startedAt + durationMs
  log(`soak: caje pid ${pid} at ${caje.url}, origin ${origin.url}; ${options.connections} connections for ${options.durationS} s (warm-up ${warmupMs / 1000} s)`)

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

  const sampler = (async () => {
    await new Promise((r) => setTimeout(r, warmupMs))
    result.start = await sample(pid)
    log(`soak: after warm-up: RSS ${mb(result.start.rssBytes)}, ${result.start.fds} fds, ${result.requests} requests so far`)
  })()

  try {
    await Promise.all([...Array.from({ length: options.connections }, worker), purger(), sampler])
    result.end = await sample(pid)
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

export function formatSoak(r: SoakResult, when = new Date()): string {
  const rate = (r.requests / r.durationS).toFixed(0)
  return [
    `### ${when.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${r.durationS} s, ${r.connections} connections`,
    '',
    `\`node --import tsx bench/soak.ts --duration ${r.durationS} --connections ${r.connections}\` on ${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}), shared machine.`,
    `Mix: 60 % hits (${HOT_OBJECTS} objects), 15 % misses (unique URLs), 15 % revalidations (max-age=1 + ETag, ${REVALIDATED_OBJECTS} objects), 10 % uncacheable passes; a purge (URL or prefix) every 2 s through the JSON API.`,
    '',
    '| requests | req/s | hot / unique / revalidated / uncacheable | served as hit | wrong bodies | 5xx | failed requests | purges (failed) | RSS start → end | fds start → end |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${r.requests} | ${rate} | ${r.byKind.hit} / ${r.byKind.miss} / ${r.byKind.revalidate} / ${r.byKind.pass} | ${r.cacheHits} | ${r.wrongBodies} | ${r.serverErrors} | ${r.failures} | ${r.purges} (${r.purgeFailures}) | ${mb(r.start.rssBytes)} → ${mb(r.end.rssBytes)} | ${r.start.fds} → ${r.end.fds} |`,
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
  const bad = result.wrongBodies + result.serverErrors + result.failures + result.otherStatuses + result.purgeFailures
  process.exit(bad === 0 ? 0 : 1)
}
