import { fork, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import http from 'node:http'
import type net from 'node:net'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { ProberCommand, ProberReport } from './health-prober.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * A health endpoint that notes the client port of each request; `hold` keeps the next answer until
 * released; `requests(n)` resolves once it has seen n requests.
 */
async function node(): Promise<{ port: number; seen: number[]; hold(): Promise<() => void>; requests(n: number): Promise<void> }> {
  const seen: number[] = []
  const arrived = new EventEmitter()
  let holding: ((release: () => void) => void) | undefined
  const server = http.createServer((req, res) => {
    seen.push(req.socket.remotePort!)
    arrived.emit('request')
    const answer = () => res.end('{"ok":true}')
    if (holding) {
      holding(answer)
      holding = undefined
    } else answer()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => new Promise((resolve) => server.close(resolve)))
  const requests = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => seen.length >= n && (arrived.off('request', check), resolve())
      arrived.on('request', check)
      check()
    })
  return { port: (server.address() as net.AddressInfo).port, seen, hold: () => new Promise((resolve) => (holding = resolve)), requests }
}

async function startProber(): Promise<ChildProcess> {
  const child = fork(path.join(import.meta.dirname, 'health-prober.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  cleanups.push(() => child.connected && child.disconnect())
  await new Promise((resolve) => child.once('message', resolve))
  return child
}

const send = (child: ChildProcess, command: ProberCommand) => child.send(command)

describe('the cluster-scale health prober', () => {
  it('probes every node on a fresh connection each time, from its own process, and answers stop with every probe once all are answered', async () => {
    const a = await node()
    const b = await node()
    const prober = await startProber()
    expect(prober.pid).not.toBe(process.pid)
    send(prober, { k: 'start', ports: [a.port, b.port] })
    // Node b keeps one probe unanswered until stop has been asked for.
    const release = await b.hold()
    await a.requests(3)
    const report = new Promise<ProberReport>((resolve) => prober.once('message', (m: ProberReport) => resolve(m)))
    send(prober, { k: 'stop' })
    release()
    const { samples, loopWorstMs } = await report
    expect(loopWorstMs).toBeGreaterThanOrEqual(0)
    const of = (n: number) => samples.filter((s) => s.node === n)
    // Every request the nodes saw is a probe reported, on a connection of its own.
    expect(of(0).map((s) => s.port).sort()).toEqual([...a.seen].sort())
    expect(of(1).map((s) => s.port).sort()).toEqual([...b.seen].sort())
    expect(new Set(a.seen).size).toBe(a.seen.length)
    expect(new Set(b.seen).size).toBe(b.seen.length)
    for (const s of samples) expect(s.ms).toBeGreaterThanOrEqual(s.headersMs!)
  })
})
