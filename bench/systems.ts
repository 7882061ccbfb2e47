// Starting and stopping the systems under test, all on 127.0.0.1 and as the
// current user: the origin and the bare server (node children), caje (bin/caje
// running the production build, as users start it), nginx with proxy_cache and
// Varnish (non-daemon, configs in a temp dir). Every child is tracked so an
// interrupted run still stops what it started.

import { buildCaje } from './build.ts'
import { hugeMappingSizes, smapsBreakdown, type MemoryBreakdown } from './smaps.ts'
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { mkdir, readFile, readlink, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export type SystemKind = 'bare' | 'origin' | 'caje' | 'nginx' | 'varnish'

export interface RunningSystem {
  /** Name in the report, e.g. "caje (memory)". */
  name: string
  kind: SystemKind
  baseUrl: string
  /** The process whose tree is measured for RSS. */
  pid: number
  logPath: string
  stop(): Promise<void>
}

const live = new Set<ChildProcess>()

/** Kill whatever is still running (used on exit and on Ctrl-C). */
export function killAllSync(): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  live.clear()
}

/** A free TCP port on 127.0.0.1 (the kernel picks it; there is a small window before we bind it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

function spawnLogged(command: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; logPath: string; stdoutPipe?: boolean }): ChildProcess {
  // The log file is the child's own stdout/stderr (as under a service manager writing to a file):
  // piping through this process would put the runner's CPU into the numbers of a logging system.
  const fd = openSync(opts.logPath, 'a')
  const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', opts.stdoutPipe ? 'pipe' : fd, fd] })
  closeSync(fd)
  live.add(child)
  child.once('exit', () => live.delete(child))
  return child
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
  live.delete(child)
}

async function tail(file: string, lines = 15): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Resolves when `url` answers 200, rejects when the child exits first or the time is up. */
async function waitForHttp(url: string, child: ChildProcess, timeoutMs: number, logPath: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before ${url} answered; log ${logPath}:\n${await tail(logPath)}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return
      last = `HTTP ${res.status}`
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(100)
  }
  await stopChild(child, 'SIGKILL')
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms (last: ${last}); log ${logPath}:\n${await tail(logPath)}`)
}

/** bench/out under the repo, made when missing (a fresh clone has none): the systems' logs go there. */
export async function benchOutDir(repoDir: string): Promise<string> {
  const dir = path.join(repoDir, 'bench', 'out')
  await mkdir(dir, { recursive: true })
  return dir
}

export interface Workspace {
  /** Temp dir for configs, caches, databases. */
  tmpDir: string
  /** bench/out: logs and scratch results. */
  outDir: string
  /** Repository root (cwd for node children). */
  repoDir: string
}

/** Start a bench/*.ts server (origin or bare) that prints {"port":N} once listening. */
export async function startNodeScript(ws: Workspace, opts: { name: string; kind: 'origin' | 'bare'; script: string; args?: string[] }): Promise<RunningSystem> {
  const logPath = path.join(ws.outDir, `${opts.kind}.log`)
  const child = spawnLogged(process.execPath, ['--import', 'tsx', opts.script, '--port', '0', ...(opts.args ?? [])], { cwd: ws.repoDir, logPath, stdoutPipe: true })
  const port = await new Promise<number>((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`${opts.name} did not start within 20 s; log ${logPath}`)), 20_000)
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      const m = /\{"port":(\d+)\}/.exec(buf)
      if (m) {
        clearTimeout(timer)
        resolve(Number(m[1]))
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${opts.name} exited (${code}) at start; log ${logPath}`))
    })
  })
  return { name: opts.name, kind: opts.kind, baseUrl: `http://127.0.0.1:${port}`, pid: child.pid!, logPath, stop: () => stopChild(child) }
}

export interface CajeOptions {
  name: string
  originUrl: string
  memoryCacheBytes: number
  /** Extra environment for caje. */
  env?: Record<string, string>
  /**
   * More flags for Node, after bin/caje's own (a later V8 flag wins): caje then runs as
   * `node <bin/caje's flags> <these> <bundle>` with bin/caje's environment, not through the script.
   */
  nodeFlags?: string[]
  startTimeoutMs?: number
}

/**
 * How bin/caje starts Node: its flags from the `exec node <flags> "${CAJE_BUNDLE...` line and the
 * variables it exports (`export NAME="${NAME:-value}"`), a value already in the environment winning
 * as in the script. For runs that start Node themselves with more flags.
 */
export function cajeLaunch(repoDir: string): { nodeArgs: string[]; env: Record<string, string> } {
  const script = readFileSync(path.join(repoDir, 'bin', 'caje'), 'utf8')
  const exec = /^exec node ((?:--\S+ )*)"\$\{CAJE_BUNDLE/m.exec(script)
  if (!exec) throw new Error('bin/caje: no `exec node <flags> "${CAJE_BUNDLE...` line to take the flags from')
  const env: Record<string, string> = {}
  for (const [, name, value] of script.matchAll(/^export (\w+)="\$\{\1:-([^}]*)\}"$/gm)) env[name!] = process.env[name!] ?? value!
  return { nodeArgs: exec[1]!.trim().split(/\s+/).filter(Boolean), env }
}

/**
 * Start caje from its build (built first) the way users start it, through bin/caje (Node with
 * caje's memory settings), with a fresh cache dir and database.
 */
export async function startCaje(ws: Workspace, opts: CajeOptions): Promise<RunningSystem> {
  if (!existsSync(path.join(ws.repoDir, 'src', 'main.ts'))) throw new Error('src/main.ts does not exist yet')
  const main = buildCaje(ws.repoDir)
  const port = await freePort()
  const slug = opts.name.replace(/[^a-z0-9]+/gi, '-').replace(/-+$/, '').toLowerCase()
  const dataDir = path.join(ws.tmpDir, slug)
  await mkdir(dataDir, { recursive: true })
  const logPath = path.join(ws.outDir, `${slug}.log`)
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    PORT: String(port),
    CAJE_LISTEN_HOST: '127.0.0.1',
    CAJE_ORIGIN: opts.originUrl,
    CAJE_CACHE_DIR: path.join(dataDir, 'cache'),
    CAJE_DATABASE_PATH: path.join(dataDir, 'manifest.db'),
    CAJE_POPULATE_INTERVAL: '0',
    CAJE_MEMORY_CACHE_BYTES: String(opts.memoryCacheBytes),
    CAJE_CACHE_MAX_BYTES: String(4 * 1024 ** 3),
    CAJE_NODE_ID: 'bench',
    CAJE_PUBLIC_ORIGIN: `http://127.0.0.1:${port}`,
    // This run's own build (see buildCaje) instead of dist/main.js.
    CAJE_BUNDLE: main,
    ...opts.env,
  }
  let child: ChildProcess
  if (opts.nodeFlags === undefined) child = spawnLogged(path.join(ws.repoDir, 'bin', 'caje'), [], { cwd: ws.repoDir, env, logPath })
  else {
    const launch = cajeLaunch(ws.repoDir)
    child = spawnLogged(process.execPath, [...launch.nodeArgs, ...opts.nodeFlags, env.CAJE_BUNDLE!], { cwd: ws.repoDir, env: { ...launch.env, ...env }, logPath })
  }
  const baseUrl = `http://127.0.0.1:${port}`
  await waitForHttp(`${baseUrl}/_caje/health`, child, opts.startTimeoutMs ?? 30_000, logPath)
  return { name: opts.name, kind: 'caje', baseUrl, pid: child.pid!, logPath, stop: () => stopChild(child, 'SIGTERM', 10_000) }
}

export interface ProxyOptions {
  originPort: number
  /** nginx worker_processes (1 matches caje's single process). */
  workers?: number
  /** nginx proxy_cache_lock (default on). */
  cacheLock?: boolean
}

/** nginx with proxy_cache in front of the origin; `X-Cache-Status` tells HIT/MISS. */
export async function startNginx(ws: Workspace, nginxPath: string, opts: ProxyOptions): Promise<RunningSystem> {
  const port = await freePort()
  const dir = path.join(ws.tmpDir, 'nginx')
  await mkdir(path.join(dir, 'cache'), { recursive: true })
  const logPath = path.join(ws.outDir, 'nginx.log')
  const runningAsRoot = process.getuid?.() === 0
  const conf = `# generated by bench/systems.ts
${runningAsRoot ? 'user root;' : '# not root: workers run as the current user'}
daemon off;
master_process on;
worker_processes ${opts.workers ?? 1};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=bench:64m max_size=4g inactive=2h use_temp_path=off;
  upstream origin {
    server 127.0.0.1:${opts.originPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_lock ${opts.cacheLock === false ? 'off' : 'on'};
      proxy_cache_revalidate on;
      add_header X-Cache-Status $upstream_cache_status;
    }
  }
}
`
  const confPath = path.join(dir, 'nginx.conf')
  await writeFile(confPath, conf)
  const child = spawnLogged(nginxPath, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', confPath], { logPath })
  const baseUrl = `http://127.0.0.1:${port}`
  await waitForHttp(`${baseUrl}/1k`, child, 10_000, path.join(dir, 'error.log'))
  return { name: 'nginx', kind: 'nginx', baseUrl, pid: child.pid!, logPath, stop: () => stopChild(child, 'SIGTERM') }
}

/** Varnish (malloc storage, builtin VCL) in front of the origin; `X-Cache-Status` tells HIT/MISS. */
export async function startVarnish(ws: Workspace, varnishdPath: string, opts: ProxyOptions): Promise<RunningSystem> {
  const port = await freePort()
  const dir = path.join(ws.tmpDir, 'varnish')
  await mkdir(dir, { recursive: true })
  const logPath = path.join(ws.outDir, 'varnish.log')
  const vcl = `vcl 4.1;
# generated by bench/systems.ts; everything else is Varnish's builtin VCL
backend default {
  .host = "127.0.0.1";
  .port = "${opts.originPort}";
}
sub vcl_deliver {
  if (obj.hits > 0) { set resp.http.X-Cache-Status = "HIT"; } else { set resp.http.X-Cache-Status = "MISS"; }
}
`
  const vclPath = path.join(dir, 'bench.vcl')
  await writeFile(vclPath, vcl)
  // -j none: no privilege separation, run as whoever started the bench.
  const args = ['-F', '-j', 'none', '-f', vclPath, '-a', `127.0.0.1:${port}`, '-n', path.join(dir, 'work'), '-s', 'malloc,1g', '-T', '127.0.0.1:0']
  const child = spawnLogged(varnishdPath, args, { logPath })
  const baseUrl = `http://127.0.0.1:${port}`
  await waitForHttp(`${baseUrl}/1k`, child, 15_000, logPath)
  return { name: 'varnish', kind: 'varnish', baseUrl, pid: child.pid!, logPath, stop: () => stopChild(child, 'SIGTERM') }
}

// ---- tools ----------------------------------------------------------------

const SEARCH_DIRS = (process.env.PATH ?? '').split(':').filter(Boolean).concat(['/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/bin'])

export function findExecutable(name: string): string | undefined {
  for (const dir of SEARCH_DIRS) {
    const p = path.join(dir, name)
    if (existsSync(p)) return p
  }
  return undefined
}

/** Debian package that provides each tool. */
const PACKAGES: Record<string, string> = { wrk: 'wrk', nginx: 'nginx', varnishd: 'varnish' }

/**
 * Find each tool; when some are missing and `install` is set, try
 * `apt-get update` once and `apt-get install -y` (as root, or with sudo -n).
 * Returns the paths found and one line per tool that is still missing.
 */
export function ensureTools(names: string[], install: boolean, log: (line: string) => void): { paths: Map<string, string>; missing: string[] } {
  const paths = new Map<string, string>()
  let missing = names.filter((n) => {
    const p = findExecutable(n)
    if (p) paths.set(n, p)
    return !p
  })
  if (missing.length > 0 && install) {
    const pkgs = missing.map((n) => PACKAGES[n] ?? n)
    const asRoot = process.getuid?.() === 0
    const sudo = !asRoot && findExecutable('sudo') ? ['sudo', '-n'] : []
    const apt = findExecutable('apt-get')
    if (!apt) {
      log(`cannot install ${pkgs.join(', ')}: apt-get is not available on this machine`)
    } else if (!asRoot && sudo.length === 0) {
      log(`cannot install ${pkgs.join(', ')}: not root and no sudo; run: sudo apt-get install -y ${pkgs.join(' ')}`)
    } else {
      log(`installing ${pkgs.join(', ')} with apt-get (this happens once)...`)
      const run = (args: string[]) => {
        const [cmd, ...rest] = [...sudo, apt, ...args]
        return spawnSync(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 300_000, encoding: 'utf8' })
      }
      const update = run(['update', '-qq'])
      if (update.status !== 0) log(`apt-get update failed (${update.status}): ${(update.stderr ?? '').trim().split('\n').slice(-2).join(' ')}`)
      const inst = run(['install', '-y', '-qq', '--no-install-recommends', ...pkgs])
      if (inst.status !== 0) log(`apt-get install ${pkgs.join(' ')} failed (${inst.status}): ${(inst.stderr ?? '').trim().split('\n').slice(-3).join(' ')}`)
    }
    missing = missing.filter((n) => {
      const p = findExecutable(n)
      if (p) paths.set(n, p)
      return !p
    })
  }
  return { paths, missing }
}

// ---- memory ---------------------------------------------------------------

/** pid and all its descendants (read from /proc; empty when /proc is missing). */
export async function processTree(rootPid: number): Promise<number[]> {
  const { readdir } = await import('node:fs/promises')
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return [rootPid]
  }
  const children = new Map<number, number[]>()
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e))
      .map(async (e) => {
        try {
          const stat = await readFile(`/proc/${e}/stat`, 'utf8')
          // Field 4 is the parent pid; the command name (field 2) may contain spaces, so split after ')'.
          const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
          const list = children.get(ppid) ?? []
          list.push(Number(e))
          children.set(ppid, list)
        } catch {
          // the process ended while we looked: nothing to measure
        }
      }),
  )
  const out: number[] = []
  const queue = [rootPid]
  while (queue.length > 0) {
    const pid = queue.shift()!
    out.push(pid)
    queue.push(...(children.get(pid) ?? []))
  }
  return out
}

/** Sum of a /proc/<pid>/status field (kB) over pids, in bytes; processes that ended count 0. */
export async function statusBytes(pids: number[], field: 'VmRSS' | 'VmHWM'): Promise<number> {
  let total = 0
  await Promise.all(
    pids.map(async (pid) => {
      try {
        const status = await readFile(`/proc/${pid}/status`, 'utf8')
        const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
        if (m) total += Number(m[1]) * 1024
      } catch {
        // ended
      }
    }),
  )
  return total
}

// ---- CPU ------------------------------------------------------------------

let clockTicks: number | undefined
/** Clock ticks per second of /proc/<pid>/stat times (getconf CLK_TCK; 100 on Linux almost always). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/**
 * CPU seconds (user + system, all threads) a process has used so far; undefined without /proc.
 * Per request, it is a measure of cost that other work on the machine disturbs far less than req/s.
 */
export async function cpuSeconds(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond()
  } catch {
    return undefined
  }
}

/**
 * Polls the RSS of a process tree while a run goes on; stop() returns the peak in bytes.
 * With `breakdownPid`, atPeak() is what that process's memory was made of (smaps.ts) when the
 * tree's RSS was last a new peak (read again only once the peak has grown by 4 MB, since a
 * read of smaps walks every page table of the process).
 */
export function pollPeakRss(
  pids: number[],
  intervalMs = 250,
  breakdownPid?: number,
  probe?: () => Promise<string | undefined>,
): { stop(): Promise<number>; atPeak(): MemoryBreakdown | undefined; probedAtPeak(): string | undefined } {
  let peak = 0
  let probed: string | undefined
  let busy = false
  let atPeak: MemoryBreakdown | undefined
  let breakdownAt = 0
  let executable: string | undefined
  const sample = async () => {
    if (busy) return
    busy = true
    try {
      const rss = await statusBytes(pids, 'VmRSS')
      if (rss > peak) {
        peak = rss
        if (breakdownPid !== undefined && rss >= breakdownAt + 4 * 1024 * 1024) {
          breakdownAt = rss
          try {
            executable ??= await readlink(`/proc/${breakdownPid}/exe`)
            const [smaps, extra] = await Promise.all([readFile(`/proc/${breakdownPid}/smaps`, 'utf8'), probe?.().catch(() => undefined)])
            atPeak = smapsBreakdown(smaps, executable)
            probed = [`huge-page mappings ${hugeMappingSizes(smaps)}`, extra].filter(Boolean).join('; ')
          } catch {
            // The process is gone, or there is no /proc: no breakdown.
          }
        }
      }
    } finally {
      busy = false
    }
  }
  void sample()
  const timer = setInterval(() => void sample(), intervalMs)
  return {
    atPeak: () => atPeak,
    probedAtPeak: () => probed,
    async stop() {
      clearInterval(timer)
      await sample()
      return peak
    },
  }
}
