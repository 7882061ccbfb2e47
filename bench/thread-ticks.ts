// CPU time of a process's threads, read from /proc/<pid>/task/*/stat and grouped by what each
// thread is: for bench/thread-cpu.ts (caje's threads, per request) and bench/zipf-cpu.ts (caje,
// Varnish's process tree and the bench origin). Linux only.

import { readdir, readFile } from 'node:fs/promises'
import os from 'node:os'

/** Microseconds per clock tick (USER_HZ, 100 on Linux). */
export const TICK_US = 1e6 / 100

export interface Thread {
  /** The process the thread belongs to. */
  pid: number
  tid: string
  comm: string
  /** User and system time, in ticks. */
  ticks: number
  /** V8's platform worker threads in its process (Node's --v8-pool-size; 4 unless its command line says otherwise). */
  v8Workers: number
}

/**
 * V8's platform workers a Node process started with `args` runs: 4 by default, the number given
 * to --v8-pool-size, or for 0 (bin/caje's) one fewer than the cores, at least one, as Node 20
 * sizes it.
 */
export function v8WorkersOf(args: readonly string[]): number {
  const flag = args.find((a) => a.startsWith('--v8-pool-size='))
  if (flag === undefined) return 4
  const n = Number(flag.slice('--v8-pool-size='.length))
  return n > 0 ? n : Math.max(1, os.availableParallelism() - 1)
}

/** The threads of one process as they are now; none when it has ended. */
export async function threads(pid: number): Promise<Thread[]> {
  let tids: string[]
  try {
    tids = await readdir(`/proc/${pid}/task`)
  } catch {
    return []
  }
  const out: Thread[] = []
  const v8Workers = v8WorkersOf((await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0'))
  for (const tid of tids) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const comm = (await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8')).trim()
      // The fields after the command name, which may itself hold spaces and parentheses.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.push({ pid, tid, comm, ticks: Number(f[11]) + Number(f[12]), v8Workers })
    } catch {
      // ended meanwhile
    }
  }
  return out
}

/**
 * caje's thread map (CAJE_THREAD_MAP, src/thread-heap.ts): thread id → the name caje gave the
 * worker. Empty while caje has not written it.
 */
export async function readThreadMap(file: string): Promise<Map<string, string>> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return new Map(
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.split(' ')[0]!, l.split(' ').slice(1).join(' ')] as [string, string]),
  )
}

/**
 * Ticks per group of threads. `mainPid`'s own thread is "main"; threads in `threadMap` take
 * their name from it; the other threads named "node" go by the order Node starts them, in each
 * process (V8's delayed-task thread, then its platform workers, which do most of the garbage
 * collection off the event loop, four unless --v8-pool-size says otherwise; after those, libuv's
 * pool); libuv's named pool threads
 * ("libuv-worker") join the pool; any other thread (Varnish's) is grouped by its name.
 */
export function groups(list: Thread[], opts: { mainPid?: number; threadMap?: Map<string, string> } = {}): Map<string, number> {
  const out = new Map<string, number>()
  const sorted = [...list].sort((a, b) => a.pid - b.pid || Number(a.tid) - Number(b.tid))
  let pid = -1
  let n = 0
  for (const t of sorted) {
    if (t.pid !== pid) {
      pid = t.pid
      n = 0
    }
    let name = t.comm
    if (Number(t.tid) === opts.mainPid) name = 'main'
    else if (opts.threadMap?.has(t.tid)) name = opts.threadMap.get(t.tid)!
    else if (t.comm === 'node') {
      n++
      name = n === 1 ? 'V8 delayed tasks' : n <= 1 + t.v8Workers ? 'V8 platform (GC, compile)' : 'libuv pool, other'
    } else if (t.comm.startsWith('libuv-worker')) name = 'libuv pool, other'
    out.set(name, (out.get(name) ?? 0) + t.ticks)
  }
  return out
}

/** The threads of all of `pids`, grouped (see groups). */
export async function taskTicks(pids: number[], opts: { mainPid?: number; threadMap?: Map<string, string> } = {}): Promise<Map<string, number>> {
  const list: Thread[] = []
  for (const pid of pids) list.push(...(await threads(pid)))
  return groups(list, opts)
}

/**
 * Resolves once `pids` have gone idle: at most 2 ticks between two readings 300 ms apart. Work a
 * load queued (disk writes, manifest) belongs to it, so CPU is read again only after this.
 */
export async function untilIdle(pids: number[]): Promise<void> {
  let prev = -1
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    let now = 0
    for (const pid of pids) for (const t of await threads(pid)) now += t.ticks
    if (now - prev <= 2) return
    prev = now
  }
}
