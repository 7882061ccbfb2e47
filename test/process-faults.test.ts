// Faults of the process and its surroundings rather than of the origin or the
// client: caje killed mid-write, a full disk, its cache directory removed, the
// manifest locked by another writer. Each test checks the same three things:
// what caje serves is byte-identical with the origin, caching resumes, and the
// node stays up.

import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import SQLite from 'better-sqlite3'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { holdWriteLock } from '../src/manifest/test-helpers.ts'
import { killCajeProcesses, startCajeProcess, type CajeProcess } from '../src/test-support/caje-process.ts'
import { startNode, startOrigin, tempDir, waitFor, whenReached, type TestOrigin } from '../src/test-support/servers.ts'
import { TEXT } from '../views/text.ts'

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

const origins: TestOrigin[] = []
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  killCajeProcesses()
  for (const o of origins.splice(0)) await o.close()
  for (const f of cleanups.splice(0)) await f()
})

/** caje as its own process (`node --import tsx src/main.ts`), like production. */
async function spawnCaje(dir: string, origin: string, env: Record<string, string> = {}): Promise<CajeProcess> {
  return startCajeProcess({
    CAJE_ORIGIN: origin,
    CAJE_CACHE_DIR: path.join(dir, 'cache'),
    CAJE_DATABASE_PATH: path.join(dir, 'manifest.db'),
    CAJE_NODE_ID: 'faults',
    CAJE_ADMIN_PASSWORD: 'process-faults-password',
    ...env,
  })
}

interface Health {
  status: string
  cache: { entries: number; writeFailures: number }
  manifestWriter: { queued: number; written: number; failures?: number; failedAttempts: number }
}
const health = async (url: string): Promise<Health> => (await (await fetch(`${url}/_caje/health`)).json()) as Health

/**
 * Event-loop stalls longer than `seconds` (a bound of caje_event_loop_stall_seconds) the node
 * counted since it started: the histogram's count less its bucket at that bound.
 */
async function stallsOver(url: string, seconds: number): Promise<number> {
  const text = await (await fetch(`${url}/_caje/metrics`)).text()
  const sample = (re: RegExp) => {
    const m = re.exec(text)
    if (!m) throw new Error(`no ${re.source} in /_caje/metrics`)
    return Number(m[1])
  }
  return sample(/^caje_event_loop_stall_seconds_count (\S+)$/m) - sample(new RegExp(`^caje_event_loop_stall_seconds_bucket\\{le="${seconds}"\\} (\\S+)$`, 'm'))
}

async function getBody(url: string): Promise<{ status: number; cache: string; hash: string; size: number }> {
  const res = await fetch(url)
  const body = new Uint8Array(await res.arrayBuffer())
  return { status: res.status, cache: res.headers.get('cache-status') ?? '', hash: sha(body), size: body.byteLength }
}

/** fn over items, 8 at a time; the results paired with their items, in order. */
async function inBatches<T, R>(items: T[], fn: (item: T) => Promise<R>): Promise<Array<[T, R]>> {
  const out: Array<[T, R]> = []
  for (let i = 0; i < items.length; i += 8) {
    const batch = items.slice(i, i + 8)
    const results = await Promise.all(batch.map(fn))
    batch.forEach((item, k) => out.push([item, results[k]!]))
  }
  return out
}

/**
 * An origin serving `/o/<name>` with a fixed random body per name, cacheable for an hour, in
 * chunks with a pause between. The paths `held` picks get half their body, then the rest once
 * `gate` resolves.
 */
async function bodyOrigin(opts: { size: number; chunk: number; pauseMs: number; held?: (path: string) => boolean; gate?: Promise<void> }) {
  const bodies = new Map<string, Buffer>()
  const bodyOf = (name: string) => {
    let b = bodies.get(name)
    if (!b) bodies.set(name, (b = randomBytes(opts.size)))
    return b
  }
  const origin = await startOrigin((req, res) => {
    const body = bodyOf(req.url ?? '/')
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length), 'cache-control': 'public, max-age=3600', etag: `"${sha(body).slice(0, 16)}"` })
    let at = 0
    let waiting = opts.gate !== undefined && opts.held?.(req.url ?? '/') === true
    const next = () => {
      if (res.destroyed) return
      if (waiting && at >= body.length / 2) {
        waiting = false
        void opts.gate!.then(next)
        return
      }
      const end = Math.min(at + opts.chunk, body.length)
      res.write(body.subarray(at, end))
      at = end
      if (at >= body.length) res.end()
      else setTimeout(next, opts.pauseMs)
    }
    next()
  })
  origins.push(origin)
  return { origin, expected: (p: string) => sha(bodyOf(p)) }
}

describe('caje killed with SIGKILL while storing', () => {
  it('after a restart on the same dirs, serves only byte-identical bodies, keeps what was committed, and caches again', async () => {
    const dir = await tempDir('caje-kill-')
    // The odd paths stop halfway until the kill: they are being received when it comes.
    let openGate!: () => void
    const gate = new Promise<void>((resolve) => (openGate = resolve))
    const { origin, expected } = await bodyOrigin({ size: 2 * 1024 * 1024, chunk: 128 * 1024, pauseMs: 25, held: (p) => Number(p.slice(3)) % 2 === 1, gate })
    const first = await spawnCaje(dir, origin.url)
    const paths = Array.from({ length: 40 }, (_, i) => `/o/${i}`)
    // All 40 in flight at once; each takes ~0.4 s at the origin plus hashing and writing on caje's side.
    const inflight = paths.map((p) => getBody(first.url + p).catch(() => undefined))
    let committedBeforeKill = 0
    await waitFor(async () => (committedBeforeKill = (await health(first.url)).cache.entries) >= 5, 'a few objects to be stored', 20_000)
    // Some are committed, the rest are being received (the odd ones at least), hashed or moved into place.
    expect(committedBeforeKill).toBeLessThanOrEqual(20)
    first.child.kill('SIGKILL')
    await new Promise((r) => first.child.once('exit', r))
    openGate()
    const before = await Promise.all(inflight)
    // What reached a client before the kill was complete and right, or the client saw a failure, never a short 200.
    for (const [i, r] of before.entries()) if (r && r.status === 200) expect(r.hash, paths[i]).toBe(expected(paths[i]!))

    // The same port: the cache key holds the Host the clients used.
    const second = await spawnCaje(dir, origin.url, { PORT: new URL(first.url).port })
    const h = await health(second.url)
    expect(h.status).toBe('ok')
    // Every entry whose commit was reported before the kill survived it.
    expect(h.cache.entries).toBeGreaterThanOrEqual(committedBeforeKill)
    const originBefore = origin.requests.length
    let hits = 0
    for (const [p, r] of await inBatches(paths, (p) => getBody(second.url + p))) {
      expect(r.status).toBe(200)
      expect(r.size).toBe(2 * 1024 * 1024)
      expect(r.hash, p).toBe(expected(p))
      if (r.cache.startsWith('caje; hit')) hits++
    }
    expect(hits).toBeGreaterThanOrEqual(committedBeforeKill)
    // Only the ones not kept were fetched again.
    expect(origin.requests.length - originBefore).toBe(40 - hits)
    // Everything fetched again is stored again, and then served from cache, still byte-identical.
    await waitFor(async () => (await health(second.url)).cache.entries === 40, 'all 40 objects stored after the restart', 20_000)
    for (const [p, r] of await inBatches(paths, (p) => getBody(second.url + p))) {
      expect(r.cache, p).toMatch(/^caje; hit/)
      expect(r.hash, p).toBe(expected(p))
    }
    // A new object stores and hits; the manifest (SQLite) took the writes of both runs.
    const fresh = await getBody(second.url + '/o/new')
    expect(fresh.cache).toMatch(/fwd=uri-miss/)
    await waitFor(async () => (await health(second.url)).cache.entries === 41, 'the new object to be stored', 10_000)
    expect((await getBody(second.url + '/o/new')).cache).toMatch(/^caje; hit/)
    await waitFor(async () => (await health(second.url)).manifestWriter.queued === 0, 'the manifest writer to drain', 10_000)
    const db = new SQLite(path.join(dir, 'manifest.db'), { readonly: true })
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok')
      const rows = db.prepare("select count(*) as n from entry_nodes where node_id = 'faults'").get() as { n: number }
      expect(rows.n).toBe(41)
    } finally {
      db.close()
    }
    expect(second.out()).not.toMatch(/uncaught|unhandled/i)
  }, 55_000)
})

describe('disk full', () => {
  let mountPoint: string | undefined
  afterAll(async () => {
    if (mountPoint) execFileSync('umount', ['-l', mountPoint])
  })

  it('a full cache volume fails stores gracefully: every response is still a 200 with the right body, and failures are logged and counted', async () => {
    const dir = await tempDir('caje-full-')
    mountPoint = path.join(dir, 'cache')
    await fs.mkdir(mountPoint)
    // A 2 MB tmpfs (we run as root); it fills after a few 512 KB objects. If mounting is not
    // allowed here, fail: this test must not quietly pass without a full disk.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint])
    const { origin, expected } = await bodyOrigin({ size: 512 * 1024, chunk: 64 * 1024, pauseMs: 0 })
    const lines: Array<Record<string, unknown>> = []
    const node = await startNode(origin.url, { CAJE_CACHE_MAX_BYTES: String(1024 * 1024 * 1024), CAJE_MEMORY_CACHE_BYTES: '0' }, { dir, log: (l) => lines.push(l) })
    cleanups.push(() => node.close())
    const paths = Array.from({ length: 12 }, (_, i) => `/o/${i}`)
    for (const p of paths) {
      const r = await getBody(node.url + p)
      expect(r.status).toBe(200)
      expect(r.hash, p).toBe(expected(p))
    }
    await whenReached(node.store, () => node.store.stats().writeFailures > 0)
    // Concurrent requests while the disk is full are all answered too.
    const again = await Promise.all(paths.map((p) => getBody(node.url + p)))
    for (const [i, r] of again.entries()) {
      expect(r.status).toBe(200)
      expect(r.hash).toBe(expected(paths[i]!))
    }
    // Commits finish after their responses, so failures are still being counted for a moment:
    // compare health and metrics once the count has stopped moving (the same before and after).
    const health = async () => (await (await node.get('/_caje/health')).json()) as Health
    const metricFailures = async () => Number(/^caje_cache_write_failures_total (\d+)/m.exec(await (await node.get('/_caje/metrics')).text())?.[1])
    let h!: Health
    let counted = NaN
    await waitFor(async () => {
      const before = await health()
      counted = await metricFailures()
      h = await health()
      return before.cache.writeFailures === h.cache.writeFailures && counted === h.cache.writeFailures
    }, 'metrics and health to agree on a settled count', 10_000)
    expect(h.status).toBe('ok')
    expect(h.cache.writeFailures).toBeGreaterThan(0)
    expect(h.cache.entries).toBeLessThan(12)
    expect(counted).toBe(h.cache.writeFailures)
    const failures = lines.filter((l) => l.msg === 'cache write failed')
    expect(failures.length).toBeGreaterThan(0)
    expect(failures[0]).toMatchObject({ level: 'error', code: 'ENOSPC' })

    // Room again (a purge of everything frees the volume): stores work again.
    const purged = await node.store.clear()
    expect(purged).toBeGreaterThan(0)
    await node.get('/o/after').then((r) => r.arrayBuffer())
    await node.stored('/o/after')
    expect((await getBody(node.url + '/o/after')).cache).toMatch(/^caje; hit/)
  })
})

describe('cache directory removed under a running node', () => {
  it('keeps answering with the right bodies and stores new objects again', async () => {
    const { origin, expected } = await bodyOrigin({ size: 200 * 1024, chunk: 64 * 1024, pauseMs: 0 })
    const lines: Array<Record<string, unknown>> = []
    const node = await startNode(origin.url, { CAJE_MEMORY_CACHE_BYTES: '0' }, { log: (l) => lines.push(l) })
    cleanups.push(() => node.close())
    for (const p of ['/o/a', '/o/b', '/o/c']) {
      await node.get(p).then((r) => r.arrayBuffer())
      await node.stored(p)
    }
    await fs.rm(path.join(node.dir, 'cache'), { recursive: true, force: true })

    // The old entries are gone from disk: each is noticed, dropped and fetched again, never served short.
    for (const p of ['/o/a', '/o/b', '/o/c', '/o/d']) {
      const r = await getBody(node.url + p)
      expect(r.status).toBe(200)
      expect(r.hash, p).toBe(expected(p))
    }
    for (const p of ['/o/a', '/o/b', '/o/c', '/o/d']) await node.stored(p)
    for (const p of ['/o/a', '/o/d']) {
      const r = await getBody(node.url + p)
      expect(r.cache, p).toMatch(/^caje; hit/)
      expect(r.hash, p).toBe(expected(p))
    }
    await fs.access(path.join(node.dir, 'cache', 'index-v5'))
    expect(lines.filter((l) => l.level === 'error' && l.msg !== 'cache write failed')).toEqual([])
  })
})

describe('manifest locked by another writer', () => {
  it('keeps serving while another process holds an exclusive lock; the writes land after it is released', async () => {
    const dir = await tempDir('caje-locked-')
    const { origin, expected } = await bodyOrigin({ size: 8 * 1024, chunk: 8 * 1024, pauseMs: 0 })
    const node = await spawnCaje(dir, origin.url)
    // A hit to serve while the lock is held.
    await getBody(node.url + '/o/warm')
    await waitFor(async () => (await health(node.url)).manifestWriter.queued === 0 && (await health(node.url)).cache.entries === 1, 'the warm-up object to be recorded', 10_000)

    const locker = new SQLite(path.join(dir, 'manifest.db'))
    locker.pragma('busy_timeout = 5000')
    locker.exec('BEGIN EXCLUSIVE')
    let released = false
    const release = () => {
      if (!released) {
        released = true
        locker.exec('COMMIT')
        locker.close()
      }
    }
    cleanups.push(async () => release())
    // While locked: misses (which queue manifest writes) and hits, one after another, until the
    // node's writer has tried and failed to write at least twice meanwhile. Serving never waits for
    // the lock: the node counts no stall of its event loop anywhere near SQLite's busy wait (5 s)
    // meanwhile. A stall counted past 2.5 s is one no scheduler delay explains.
    const longStallsBefore = await stallsOver(node.url, 2.5)
    const failedBefore = (await health(node.url)).manifestWriter.failedAttempts
    let i = 0
    while (i < 10 || (await health(node.url)).manifestWriter.failedAttempts < failedBefore + 2) {
      for (const p of [`/o/locked-${i}`, '/o/warm']) {
        const r = await getBody(node.url + p)
        expect(r.status).toBe(200)
        expect(r.hash).toBe(expected(p))
      }
      i++
    }
    const h = await health(node.url)
    expect(h.status).toBe('ok')
    expect(await stallsOver(node.url, 2.5), 'event-loop stalls over 2.5 s while the manifest was locked').toBe(longStallsBefore)
    const writtenWhileLocked = h.manifestWriter.written
    release()

    // The queued writes land once the lock is gone.
    await waitFor(async () => (await health(node.url)).manifestWriter.queued === 0, 'the manifest writer to drain after the lock', 15_000)
    const db = new SQLite(path.join(dir, 'manifest.db'), { readonly: true })
    try {
      const urls = (db.prepare('select url from entries').all() as Array<{ url: string }>).map((r) => new URL(r.url).pathname)
      for (let k = 0; k < i; k++) expect(urls).toContain(`/o/locked-${k}`)
    } finally {
      db.close()
    }
    expect((await health(node.url)).manifestWriter.written).toBeGreaterThan(writtenWhileLocked)
    expect(node.child.exitCode).toBeNull()
  }, 40_000)

  it('an admin sign-in while the lock is held never stalls serving: 503 "busy" past the retry window, signed in when the lock goes in time', async () => {
    const dir = await tempDir('caje-locked-admin-')
    const { origin, expected } = await bodyOrigin({ size: 8 * 1024, chunk: 8 * 1024, pauseMs: 0 })
    const node = await spawnCaje(dir, origin.url)
    await getBody(node.url + '/o/warm')
    await waitFor(async () => (await health(node.url)).manifestWriter.queued === 0 && (await health(node.url)).cache.entries === 1, 'the warm-up object to be recorded', 10_000)

    const lock = () => {
      const held = holdWriteLock(path.join(dir, 'manifest.db'), 'EXCLUSIVE')
      cleanups.push(async () => held.release())
      return held
    }
    const signIn = () =>
      fetch(`${node.url}/_caje/auth/password`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ password: 'process-faults-password' }),
      })
    /**
     * Up to `limit` cache hits, one after another, each sent while the sign-in is still pending:
     * how many were answered, and whether the sign-in had its answer by the last one.
     */
    const serveWhile = async (pending: Promise<unknown>, limit: number) => {
      let done = false
      void pending.then(
        () => (done = true),
        () => (done = true),
      )
      let served = 0
      while (!done && served < limit) {
        const r = await getBody(node.url + '/o/warm')
        expect(r.status).toBe(200)
        expect(r.hash).toBe(expected('/o/warm'))
        served++
      }
      return { served, done }
    }
    // The order of events shows that serving never waits for the lock: hits are answered one after
    // another while the sign-in still waits. A wait in SQLite's busy handler (5 s, past the 3 s retry
    // window) would hold the first hit until the sign-in had its answer.

    // Held past the retry window (3 s), released only once the answer is in: the admin gets a clear 503,
    // the proxy keeps serving.
    const first = lock()
    const refused = signIn()
    const whileRefused = await serveWhile(refused, 5)
    const res = await refused
    first.release()
    expect(whileRefused, 'hits answered while the sign-in waited').toEqual({ served: 5, done: false })
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('1')
    expect(await res.json()).toEqual({ ok: false, error: TEXT.errors.manifestBusy })

    // Released within the window (after five hits served while it waited): the same sign-in waits for it,
    // still without stalling the proxy, and succeeds.
    const second = lock()
    const accepted = signIn()
    const whileAccepted = await serveWhile(accepted, 5)
    expect(whileAccepted, 'hits answered while the sign-in waited').toEqual({ served: 5, done: false })
    second.release()
    const ok = await accepted
    expect(ok.status, await ok.clone().text()).toBe(200)
    expect(ok.headers.getSetCookie().some((c) => c.startsWith('caje_session='))).toBe(true)
    expect(node.child.exitCode).toBeNull()
    expect(node.logs().filter((l) => l.event === 'admin.error')).toEqual([])
  }, 60_000)
})
