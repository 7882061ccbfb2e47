// npx tsx bench/long-turns.ts <trace-nodeN.jsonl> <profile.cpuprofile> [turns] [frames] [fromUs toUs]
//
// What ran in a node's long turns: the 'turn' lines bench/node-trace.ts
// records (cluster-scale --trace --keep) cut the same node's --cpu-prof
// profile (cluster-scale --cpu-prof) to each long turn's span, and this prints
// the frames that ran in it: self time, and inclusive time per frame (a frame
// counted once per sample however deep it recurses). The longest turns by the
// main thread's own CPU come first; then the same totals over all long turns.
// A span (the bench prints each scenario's as 'profile window <name>: from to')
// keeps only the turns in it.

import fs from 'node:fs'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  startTime: number
  samples: number[]
  timeDeltas: number[]
}
interface Turn {
  k: 'turn'
  ms: number
  runMs: number
  waitMs: number
  fromUs: number
  toUs: number
}

const [traceFile, profileFile, turnsArg, framesArg, fromArg, toArg] = process.argv.slice(2)
if (!traceFile || !profileFile) {
  console.error('usage: npx tsx bench/long-turns.ts <trace-nodeN.jsonl> <profile.cpuprofile> [turns=5] [frames=12]')
  process.exit(2)
}
const showTurns = Number(turnsArg ?? 5)
const showFrames = Number(framesArg ?? 12)

const profile = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as Profile
const turns = fs
  .readFileSync(traceFile, 'utf8')
  .split('\n')
  .filter((l) => l.includes('"k":"turn"'))
  .map((l) => JSON.parse(l) as Turn)
  .filter((t) => t.fromUs >= profile.startTime)
  .filter((t) => fromArg === undefined || (t.fromUs >= Number(fromArg) && t.toUs <= Number(toArg ?? Infinity)))

const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const label = (f: CallFrame) => `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`

// Sample times on the profile's clock (µs).
const times: number[] = []
let t = profile.startTime
for (const d of profile.timeDeltas) times.push((t += d))

/** Self and inclusive sample time (ms) per frame between two times. */
function frames(fromUs: number, toUs: number): { self: Map<string, number>; incl: Map<string, number>; totalMs: number } {
  const self = new Map<string, number>()
  const incl = new Map<string, number>()
  let totalMs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    if (times[i]! < fromUs || times[i]! > toUs) continue
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000
    totalMs += ms
    let node = byId.get(profile.samples[i]!)
    if (!node) continue
    const name = label(node.callFrame)
    self.set(name, (self.get(name) ?? 0) + ms)
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      node = byId.get(id)!
      const n = label(node.callFrame)
      if (seen.has(n)) continue
      seen.add(n)
      incl.set(n, (incl.get(n) ?? 0) + ms)
    }
  }
  return { self, incl, totalMs }
}

const top = (m: Map<string, number>) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, showFrames)
    .map(([k, v]) => `      ${v.toFixed(1).padStart(7)} ms  ${k}`)
    .join('\n')

console.log(`${turns.length} turns over 20 ms in the profile's span`)
for (const turn of [...turns].sort((a, b) => b.runMs - a.runMs).slice(0, showTurns)) {
  const f = frames(turn.fromUs, turn.toUs)
  console.log(`\nturn ${turn.ms} ms (ran ${turn.runMs}, waited ${turn.waitMs}) at ${turn.fromUs}: ${f.totalMs.toFixed(1)} ms sampled`)
  console.log(`    self:\n${top(f.self)}\n    inclusive:\n${top(f.incl)}`)
}
const all = { self: new Map<string, number>(), incl: new Map<string, number>() }
for (const turn of turns) {
  const f = frames(turn.fromUs, turn.toUs)
  for (const k of ['self', 'incl'] as const) for (const [n, v] of f[k]) all[k].set(n, (all[k].get(n) ?? 0) + v)
}
console.log(`\nall ${turns.length} long turns:\n    self:\n${top(all.self)}\n    inclusive:\n${top(all.incl)}`)
