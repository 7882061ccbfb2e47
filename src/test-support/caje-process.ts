// caje as its own process (`node --import tsx src/main.ts`), the way production
// runs it: its own memory, its own signals, its own stdout. Tests that need a
// real process (memory, SIGKILL, SIGHUP, start-up errors, several nodes on one
// manifest) start it here, so the start-up wait and the clean-up live in one place.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'

export interface CajeProcess {
  child: ChildProcessWithoutNullStreams
  /** The address caje printed it listens on. */
  url: string
  port: number
  /** Everything the process wrote to stdout and stderr so far. */
  out(): string
  /** Its JSON log lines so far. */
  logs(): Record<string, unknown>[]
  /** Resolves once `seen(out())` holds (see untilPrinted); throws if the process ends first. */
  printed(seen: (out: string) => boolean, what: string): Promise<void>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code once it has exited. */
  stop(graceMs?: number): Promise<number | null>
}

const LISTENING = /caje is listening on (http:\/\/\S+)/

/**
 * Resolves once `seen()` holds, checked as `child` writes to stdout or stderr and once its
 * streams close, never on a timer: true when it held, false when the process ended without.
 * Listeners added before this call (the ones that collect the output) run first for each chunk.
 */
export function untilPrinted(child: ChildProcessWithoutNullStreams, seen: () => boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (held: boolean) => {
      child.stdout.off('data', check)
      child.stderr.off('data', check)
      child.off('close', closed)
      resolve(held)
    }
    const check = () => seen() && done(true)
    const closed = () => done(seen())
    child.stdout.on('data', check)
    child.stderr.on('data', check)
    child.once('close', closed)
    if (seen()) done(true)
    else if (child.stdout.closed && child.stderr.closed) done(false)
  })
}

/** What every test process gets unless the test says otherwise: any free port on loopback, no access log, no background populate. */
export const PROCESS_DEFAULTS: Readonly<Record<string, string>> = {
  PORT: '0',
  CAJE_LISTEN_HOST: '127.0.0.1',
  CAJE_ACCESS_LOG: 'false',
  CAJE_POPULATE_INTERVAL: '0',
}

const running = new Set<ChildProcessWithoutNullStreams>()

export interface StartOptions {
  /** Names it in errors (default: CAJE_NODE_ID, else `caje`). */
  name?: string
  /** What node runs: the TypeScript sources by default; a benchmark passes its bundle. */
  entry?: string[]
  /** Node's own options, before the entry (`--cpu-prof`, say). */
  nodeArgs?: string[]
  /** `false`: the runner's environment and `env` alone, without PROCESS_DEFAULTS. */
  defaults?: boolean
  startTimeoutMs?: number
  /**
   * Keep only about the last this many characters of its output, for a process
   * that runs long enough to print more than a test reads (a benchmark).
   */
  keepOutputChars?: number
}

/**
 * Start caje with `env` over the test runner's environment and PROCESS_DEFAULTS (pass
 * `defaults: false` to start with the runner's environment alone), and wait until it listens.
 * Throws with everything it printed if it exits first.
 */
export async function startCajeProcess(env: Record<string, string>, opts: StartOptions = {}): Promise<CajeProcess> {
  const name = opts.name ?? env.CAJE_NODE_ID ?? 'caje'
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...(opts.entry ?? ['--import', 'tsx', 'src/main.ts'])], {
    env: { ...process.env, ...(opts.defaults === false ? {} : PROCESS_DEFAULTS), ...env },
  })
  running.add(child)
  child.once('exit', () => running.delete(child))
  let out = ''
  const keep = opts.keepOutputChars ?? Infinity
  // Read everything it writes: caje's stdout is blocking on a pipe, so an unread pipe would stall it.
  const read = (d: Buffer) => {
    out += d.toString()
    // Cut to half the limit, not to the limit: one slice per many chunks, not one per chunk.
    if (out.length > keep) out = out.slice(-Math.floor(keep / 2))
  }
  child.stdout.on('data', read)
  child.stderr.on('data', read)
  // Start-up is not under test: under tsx a busy machine takes many seconds to load src/, so
  // the guard only stops a process that never listens from hanging the run.
  let guard: NodeJS.Timeout | undefined
  const listening = await Promise.race([
    untilPrinted(child, () => LISTENING.test(out)),
    new Promise<'stuck'>((resolve) => (guard = setTimeout(() => resolve('stuck'), opts.startTimeoutMs ?? 60_000))),
  ])
  clearTimeout(guard)
  if (listening === 'stuck') throw new Error(`${name} did not listen within ${opts.startTimeoutMs ?? 60_000} ms:\n${out}`)
  if (!listening) throw new Error(`${name} exited at start (code ${child.exitCode}):\n${out}`)
  const url = LISTENING.exec(out)![1]!
  return {
    child,
    url,
    port: Number(new URL(url).port),
    out: () => out,
    logs: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    printed: async (seen, what) => {
      if (!(await untilPrinted(child, () => seen(out)))) throw new Error(`${name} ended before printing ${what}:\n${out}`)
    },
    stop: (graceMs = 5_000) => stopProcess(child, graceMs),
  }
}

async function stopProcess(child: ChildProcessWithoutNullStreams, graceMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  const code = await exited
  clearTimeout(timer)
  return code
}

/** SIGKILL every caje process a test started and left running (for afterEach). */
export function killCajeProcesses(): void {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  running.clear()
}
