// Loaded into each caje process of `npm run bench:cluster-scale -- --trace`
// (node --import, bundled by the bench): it records, on the node itself, what
// a slow health probe waited for, in a JSON-lines file the bench reads
// afterwards (CAJE_BENCH_TRACE). Nothing of this ships: caje never imports it.
//
//  probe   per /_caje/health request: the client's port, when the node
//          accepted the connection ('connection'), parsed the request
//          ('request') and finished the response, on the wall clock in ms
//          (performance.timeOrigin + performance.now(), comparable across
//          processes on one machine)
//  window  per 50 ms: the worst event-loop delay (a 1 ms libuv timer: how
//          late it fired, about the longest turn), the loop's utilisation,
//          how long the main thread waited on the run queue for a CPU
//          (/proc/self/task/<pid>/schedstat) and ran, and the turns taken
//  gc      each garbage collection: start, duration and kind
//  threads once a second: each thread's name and CPU time so far (ms)
//  turn    each stretch of more than LONG_TURN_MS between two firings of a
//          1 ms timer (one turn of the loop, or several back to back): its
//          wall time, how much of it the main thread ran on a CPU and how
//          much it waited on the run queue (schedstat), and its span on the
//          monotonic clock V8's --cpu-prof stamps samples with (µs), so the
//          frames that ran in it can be read from the profile

import dc from 'node:diagnostics_channel'
import fs from 'node:fs'
import type http from 'node:http'
import type net from 'node:net'
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'

const file = process.env.CAJE_BENCH_TRACE
if (file) start(file)

function start(file: string): void {
  const wall = () => performance.timeOrigin + performance.now()
  let lines: string[] = []
  // Appended off the event loop: a synchronous append once a second held a node's loop 48 ms
  // in a purge run (the disk busy), long enough to make the probes it measures wait.
  let appending = false
  const flush = () => {
    if (lines.length === 0 || appending) return
    const text = lines.join('\n') + '\n'
    lines = []
    appending = true
    fs.appendFile(file, text, () => {
      appending = false
    })
  }
  const accepted = new WeakMap<net.Socket, number>()
  dc.subscribe('net.server.socket', (message) => {
    accepted.set((message as { socket: net.Socket }).socket, wall())
  })
  dc.subscribe('http.server.request.start', (message) => {
    const { request, response, socket } = message as { request: http.IncomingMessage; response: http.ServerResponse; socket: net.Socket }
    if (request.url !== '/_caje/health' || request.headers.authorization) return
    const req = wall()
    const conn = accepted.get(socket)
    const port = socket.remotePort
    response.once('finish', () => lines.push(JSON.stringify({ k: 'probe', port, conn, req, fin: wall() })))
  })

  new PerformanceObserver((list) => {
    // detail.kind: 1 scavenge (young generation), 2 mark-sweep-compact (whole heap), 4 incremental marking, 8 weak callbacks.
    for (const e of list.getEntries()) lines.push(JSON.stringify({ k: 'gc', at: performance.timeOrigin + e.startTime, ms: e.duration, kind: (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind }))
  }).observe({ entryTypes: ['gc'] })

  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const schedstat = `/proc/self/task/${process.pid}/schedstat`
  const sched = () => {
    try {
      const [run, wait, slices] = fs.readFileSync(schedstat, 'utf8').trim().split(' ').map(Number)
      return { run: run! / 1e6, wait: wait! / 1e6, slices: slices! }
    } catch {
      return { run: 0, wait: 0, slices: 0 }
    }
  }
  let last = { at: wall(), elu: performance.eventLoopUtilization(), sched: sched() }
  // Turns: one setImmediate per turn would keep the loop from ever blocking in
  // poll; the loop's own count is not exposed, so the 1 ms timer's count of
  // firings (delay.count) stands in: it fires at most once per turn.
  setInterval(() => {
    const at = wall()
    const elu = performance.eventLoopUtilization(last.elu)
    const s = sched()
    lines.push(
      JSON.stringify({
        k: 'window',
        from: last.at,
        to: at,
        delayMaxMs: delay.max / 1e6,
        util: Math.round(elu.utilization * 1000) / 1000,
        runMs: s.run - last.sched.run,
        waitMs: s.wait - last.sched.wait,
        timers: delay.count,
      }),
    )
    delay.reset()
    last = { at, elu: performance.eventLoopUtilization(), sched: s }
  }, 50).unref()
  // Long turns, measured on the main thread itself: a 1 ms timer notes the
  // main thread's run and wait time at each firing; a gap longer than
  // LONG_TURN_MS is a turn (or turns) that kept it from firing.
  const LONG_TURN_MS = 20
  const schedFd = fs.openSync(schedstat, 'r')
  const schedBuf = Buffer.alloc(128)
  const runWait = (): [number, number] => {
    const n = fs.readSync(schedFd, schedBuf, 0, 128, 0)
    const text = schedBuf.toString('latin1', 0, n)
    const sp = text.indexOf(' ')
    return [Number(text.slice(0, sp)) / 1e6, Number(text.slice(sp + 1, text.indexOf(' ', sp + 1))) / 1e6]
  }
  let tick = { at: performance.now(), mono: process.hrtime.bigint(), rw: runWait() }
  setInterval(() => {
    const at = performance.now()
    const mono = process.hrtime.bigint()
    const rw = runWait()
    const ms = at - tick.at
    if (ms > LONG_TURN_MS) {
      lines.push(
        JSON.stringify({
          k: 'turn',
          at: performance.timeOrigin + tick.at,
          ms: Math.round(ms * 10) / 10,
          runMs: Math.round((rw[0] - tick.rw[0]) * 10) / 10,
          waitMs: Math.round((rw[1] - tick.rw[1]) * 10) / 10,
          fromUs: Number(tick.mono / 1000n),
          toUs: Number(mono / 1000n),
        }),
      )
    }
    tick = { at, mono, rw }
  }, 1).unref()
  // Every thread's CPU so far (main, disk writer, read worker, libuv pool, V8's GC helpers), once a second.
  const threads = () => {
    const out: Record<string, [string, number]> = {}
    for (const tid of fs.readdirSync('/proc/self/task')) {
      try {
        const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        // Named by their thread name, and as lowered when they run below the process's priority (the disk writer).
        const comm = tid === String(process.pid) ? 'main' : `${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}${Number(f[16]) > 0 ? '-lowered' : ''}`
        out[tid] = [comm, (Number(f[11]) + Number(f[12])) * 10]
      } catch {
        // The thread ended meanwhile.
      }
    }
    return out
  }
  setInterval(() => {
    lines.push(JSON.stringify({ k: 'threads', at: wall(), threads: threads() }))
    flush()
  }, 1000).unref()
  // At exit only what is left, at once (an append still going may be cut short with the process).
  process.on('exit', () => {
    if (lines.length > 0) fs.appendFileSync(file, lines.join('\n') + '\n')
  })
}
