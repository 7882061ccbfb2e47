import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { buildCaje } from '../bench/build.ts'
import { killCajeProcesses, startCajeProcess, untilPrinted } from './test-support/caje-process.ts'
import { startOrigin, tempDir, waitFor } from './test-support/servers.ts'

afterEach(killCajeProcesses)

/** `npm start` as a user runs it: the environment given and nothing else (the access log on, as shipped). */
const startMain = (env: Record<string, string>, entry?: string[]) => startCajeProcess(env, { entry, defaults: false })

describe('npm start', () => {
  it('fronts the built-in demo origin without configuration, logs each request as JSON, and shuts down gracefully', async () => {
    const dir = await tempDir()
    const { child, out, url, printed } = await startMain({ PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_DATA_DIR: path.join(dir, 'data'), CAJE_NODE_ID: 'main-test', CAJE_ADMIN_PASSWORD: 'correct horse battery' })
    expect(out()).toMatch(/no origin configured \(CAJE_ORIGIN \/ CAJE_SITES\): fronting the built-in demo origin at http:\/\/127\.0\.0\.1:\d+/)
    const first = await fetch(url + '/cacheable')
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-status')).toMatch(/fwd=uri-miss; fwd-status=200; stored/)
    await first.text()
    await waitFor(async () => ((await (await fetch(url + '/_caje/health')).json()) as { cache: { entries: number } }).cache.entries === 1, 'the demo page to be stored')
    // The disk's entry limit, worked out from the machine's memory, is said at start and in health.
    const started = out().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'started')!
    expect(started).toMatchObject({ cacheMaxEntries: expect.any(Number), cacheMaxEntriesFrom: expect.stringMatching(/^auto: a quarter of \d+ MiB of memory$/) })
    expect(((await (await fetch(url + '/_caje/health')).json()) as { cache: Record<string, unknown> }).cache).toMatchObject({ diskEntries: 1, maxEntries: started.cacheMaxEntries })
    const second = await fetch(url + '/cacheable')
    expect(second.headers.get('cache-status')).toMatch(/^caje; hit/)
    await second.text()
    // What the quick start promises for a page without caching headers: passed through, and why.
    const plain = await fetch(url + '/no-headers')
    expect(plain.headers.get('cache-status')).toBe('caje; fwd=uri-miss; fwd-status=200; detail=no-explicit-freshness')
    await plain.text()

    const requestLines = () =>
      out()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'request' && l.url === '/cacheable')
    // The access log line is written when the server side of the exchange closes.
    await printed(() => requestLines().length === 2, 'two access log lines')
    const requests = requestLines()
    expect(requests[0]).toMatchObject({ method: 'GET', status: 200, bytes: expect.any(Number), originMs: expect.any(Number) })
    expect(requests[1]!.cache).toMatch(/hit/)
    expect(out()).not.toContain('correct horse battery')

    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(out()).toContain('"msg":"stopped"')
  })

  it('keeps at most CAJE_CACHE_MAX_ENTRIES entries, evicting the least recently used', async () => {
    const asked = new Map<string, number>()
    const origin = await startOrigin((req, res) => {
      asked.set(req.url!, (asked.get(req.url!) ?? 0) + 1)
      res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-type': 'text/plain' })
      res.end(`body of ${req.url}`)
    })
    try {
      const dir = await tempDir()
      const { url } = await startMain({ PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_ORIGIN: origin.url, CAJE_DATA_DIR: path.join(dir, 'data'), CAJE_NODE_ID: 'main-test', CAJE_CACHE_MAX_ENTRIES: '2' })
      const get = async (p: string) => {
        const r = await fetch(url + p)
        await r.text()
        return r.headers.get('cache-status') ?? ''
      }
      const health = async () => ((await (await fetch(url + '/_caje/health')).json()) as { cache: { entries: number; diskEntries: number; maxEntries: number } }).cache
      for (const p of ['/a', '/b']) expect(await get(p)).toMatch(/stored/)
      await waitFor(async () => (await health()).diskEntries === 2, 'two entries on disk')
      expect(await get('/a')).toMatch(/^caje; hit/) // /b is now the least recently used
      expect(await get('/c')).toMatch(/stored/)
      await waitFor(async () => (await health()).entries === 2, 'the least recently used entry evicted')
      expect(await health()).toMatchObject({ entries: 2, diskEntries: 2, maxEntries: 2 })
      expect(await get('/a')).toMatch(/^caje; hit/)
      expect(await get('/c')).toMatch(/^caje; hit/)
      expect(await get('/b')).toMatch(/fwd=uri-miss/)
      expect(Object.fromEntries(asked)).toEqual({ '/a': 1, '/b': 2, '/c': 1 })
    } finally {
      await origin.close()
    }
  })

  it('finishes a request in flight when SIGTERM arrives', async () => {
    // The origin tells when the request has reached it and answers only once SIGTERM was sent.
    let arrived!: () => void
    const reached = new Promise<void>((resolve) => (arrived = resolve))
    let answer!: () => void
    const signalled = new Promise<void>((resolve) => (answer = resolve))
    const origin = await startOrigin((_req, res) => {
      arrived()
      void signalled.then(() => {
        res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' })
        res.end('finished after SIGTERM')
      })
    })
    try {
      const dir = await tempDir()
      const { child, out, url, printed } = await startMain({ PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_ORIGIN: origin.url, CAJE_DATA_DIR: path.join(dir, 'data'), CAJE_NODE_ID: 'main-test', CAJE_ADMIN_PASSWORD: 'correct horse battery' })
      const inflight = fetch(url + '/slow').then(async (r) => ({ status: r.status, body: await r.text() }))
      await reached
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      // caje has begun to stop (it no longer accepts connections) while the request is still open.
      await printed(() => out().includes('"msg":"shutting down"'), 'caje to begin its shutdown')
      answer()
      expect(await inflight).toEqual({ status: 200, body: 'finished after SIGTERM' })
      expect(await exited).toBe(0)
      expect(out()).toContain('"msg":"stopped"')
    } finally {
      await origin.close()
    }
  })
})

describe('the production build', () => {
  it('builds one bundle that starts, serves the admin assets and proxies', async () => {
    const bundle = buildCaje(process.cwd())
    // ASCII only: V8 keeps a script's source on the heap for as long as it runs, one byte per
    // character, or two for the whole bundle once a single character is outside Latin-1 (a
    // comment esbuild keeps, say): 0.7 MB more for the life of the process.
    expect((await readFile(bundle, 'latin1')).match(/[^\x00-\x7f]/g) ?? []).toEqual([])
    const dir = await tempDir()
    const { out, url } = await startMain({ PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_DATA_DIR: path.join(dir, 'data'), CAJE_NODE_ID: 'build-test' }, [bundle])
    expect(out()).toContain('fronting the built-in demo origin')
    // The one-time enrolment code is printed when no password is set.
    expect(out()).toMatch(/one-time enrolment code [A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}/)
    const css = await fetch(url + '/_caje/assets/admin.css')
    expect(css.status).toBe(200)
    expect(css.headers.get('content-type')).toContain('text/css')
    const page = await fetch(url + '/')
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('caje demo origin')
  })
})

describe('bin/caje', () => {
  /** bin/caje running `bundle` with `env` over the runner's environment; resolves once it listens or exits. */
  async function launch(bundle: string, env: Record<string, string>) {
    const child = spawn(path.resolve('bin/caje'), [], { env: { ...process.env, CAJE_BUNDLE: bundle, ...env } })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    await untilPrinted(child, () => out.includes('caje is listening on'))
    return { child, out: () => out, exited }
  }

  it('becomes the Node process itself, with the memory settings, and exits with its code', async () => {
    const bundle = buildCaje(process.cwd())
    const dir = await tempDir()
    const env = { PORT: '0', CAJE_LISTEN_HOST: '127.0.0.1', CAJE_ACCESS_LOG: 'false', CAJE_DATA_DIR: path.join(dir, 'data'), CAJE_NODE_ID: 'launch-test', MALLOC_ARENA_MAX: '', GLIBC_TUNABLES: '' }
    // An empty variable counts as unset: the launcher's default applies.
    const { child, exited } = await launch(bundle, env)
    try {
      // exec: the process started is Node (so signals reach caje, not a shell in between).
      expect((await readFile(`/proc/${child.pid}/comm`, 'utf8')).trim()).toBe('node')
      const args = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0')
      expect(args.slice(1, 4)).toEqual(['--max-semi-space-size=4', '--heap-growing-percent=30', '--v8-pool-size=0'])
      const environ = (await readFile(`/proc/${child.pid}/environ`, 'utf8')).split('\0')
      expect(environ).toContain('MALLOC_ARENA_MAX=2')
      expect(environ).toContain('MALLOC_MMAP_THRESHOLD_=131072')
      expect(environ).toContain('GLIBC_TUNABLES=glibc.malloc.hugetlb=1')
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)

    // A value the user set wins over the launcher's.
    const own = await launch(bundle, { ...env, MALLOC_ARENA_MAX: '4' })
    const environ = (await readFile(`/proc/${own.child.pid}/environ`, 'utf8')).split('\0')
    own.child.kill('SIGTERM')
    expect(environ).toContain('MALLOC_ARENA_MAX=4')
    expect(await own.exited).toBe(0)

    // A configuration error's exit code and message come through unchanged.
    const bad = await launch(bundle, { ...env, PORT: 'eighty' })
    expect(await bad.exited).toBe(2)
    expect(bad.out()).toContain('caje: configuration error: PORT')
  })
})
