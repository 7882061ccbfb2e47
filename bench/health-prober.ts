// The cluster-scale bench's health probes, from a process of their own.
//
// A probe's wait is measured by the process that sends it: from the request
// sent to the response read. When the bench's own process sent them, the wait
// included whatever that process ran meanwhile (polling every node for its
// first miss every 5 ms, parsing admin answers, answering the fill as the
// origin): a probe the node had answered in time was read late. Here the
// process does nothing else, as a load balancer's checker would, and reports
// its own event loop's worst delay beside the probes, so a wait it added
// shows.
//
// A checker runs on another machine, where the nodes do not take its CPU;
// here it shares two cores with three nodes and the rest of the machine's
// work, and a probe the node answered in time was read up to 80 ms late
// while this process waited for a core. So it asks for ten nice steps above
// the nodes (which needs CAP_SYS_NICE; without it, it says so once and
// probes at the bench's priority); `proberLoopWorstMs` still says what it
// added.
//
// Started by bench/cluster-scale.ts with fork(); it says { k: 'ready', nice } once loaded. Then:
//   → { k: 'start', ports }   a probe on a fresh connection to each port every 50 ms
//   → { k: 'stop' }           ← { k: 'stopped', samples, loopWorstMs } once every probe in flight is answered

import http from 'node:http'
import os from 'node:os'
import { monitorEventLoopDelay } from 'node:perf_hooks'

/** One health probe: which node (index into the ports), when it was sent (wall clock, ms) and how long it waited. */
export interface ProberSample {
  node: number
  wall: number
  ms: number
  /** The probe's local port (the node sees it as the remote port). */
  port?: number
  /** When the client's connect completed and its response headers arrived, ms after it was sent. */
  connectMs?: number
  headersMs?: number
}

export type ProberCommand = { k: 'start'; ports: number[] } | { k: 'stop' }
export interface ProberReport {
  k: 'stopped'
  samples: ProberSample[]
  /** This process's worst event-loop delay while it probed (ms): an upper bound on what it added to any probe. */
  loopWorstMs: number
}

const EVERY_MS = 50

/** Ten nice steps above the nodes; the priority it got is in the 'ready' message. */
function raisePriority(): number {
  try {
    os.setPriority(os.getPriority() - 10)
  } catch (err) {
    process.stderr.write(`health prober: could not raise its priority (${(err as Error).message}); probes wait for a core with the nodes\n`)
  }
  return os.getPriority()
}

function run(): void {
  let timer: NodeJS.Timeout | undefined
  let samples: ProberSample[] = []
  const inflight = new Set<Promise<void>>()
  const delay = monitorEventLoopDelay({ resolution: 5 })

  const probe = (port: number, node: number) => {
    const t0 = performance.now()
    const sample: ProberSample = { node, wall: performance.timeOrigin + t0, ms: 0 }
    const p = new Promise<void>((resolve) => {
      const done = () => {
        sample.ms = performance.now() - t0
        samples.push(sample)
        resolve()
      }
      const req = http.get({ host: '127.0.0.1', port, path: '/_caje/health', agent: false }, (res) => {
        sample.headersMs = performance.now() - t0
        res.resume()
        res.on('end', done)
      })
      req.on('socket', (socket) => {
        socket.once('connect', () => {
          sample.connectMs = performance.now() - t0
          sample.port = socket.localPort
        })
      })
      req.on('error', done)
    })
    inflight.add(p)
    void p.finally(() => inflight.delete(p))
  }

  process.on('message', (m: ProberCommand) => {
    if (m.k === 'start') {
      samples = []
      delay.reset()
      delay.enable()
      const all = () => m.ports.forEach(probe)
      timer = setInterval(all, EVERY_MS)
      all()
    } else {
      clearInterval(timer)
      void Promise.all([...inflight]).then(() => {
        delay.disable()
        const report: ProberReport = { k: 'stopped', samples, loopWorstMs: delay.max / 1e6 }
        process.send!(report)
      })
    }
  })
  // The bench ends this process by closing the channel.
  process.on('disconnect', () => process.exit(0))
  process.send!({ k: 'ready', nice: raisePriority() })
}

if (process.send) run()
