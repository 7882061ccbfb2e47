// Turning measurements into the results table: medians across repetitions,
// each system as a fraction of the bare Node server measured in the same
// repetition, and bench/RESULTS.md.

import type { LoadResult } from './load.ts'
import { totalErrors } from './load.ts'

export interface Measurement {
  scenario: string
  system: string
  rep: number
  load: LoadResult
  /** Peak RSS of the system's process tree during this run, bytes. */
  peakRssBytes?: number
  /** Requests that reached the origin during this run. */
  originRequests?: number
  /** caje's own count, from /_caje/metrics (hits / all requests) during this run. */
  cajeHitRatio?: number
  /** What an unbounded cache would reach for this many requests (Zipf scenario only). */
  idealHitRatio?: number
  /** CPU time (user + system, all threads) of the server's process per request answered, microseconds (caje only). */
  cpuUsPerRequest?: number
}

export interface Row {
  scenario: string
  system: string
  runs: number
  rps: number
  /** Half the range of req/s across repetitions, as a fraction of the median (noise indicator). */
  rpsSpread: number
  p50Ms: number
  p99Ms: number
  /** Median of (this system's req/s ÷ bare's req/s in the same repetition). */
  vsBare: number | undefined
  errors: number
  peakRssBytes: number | undefined
  /** 1 − origin requests ÷ requests served (median); undefined for bare/origin. */
  hitRatio: number | undefined
  cajeHitRatio: number | undefined
  idealHitRatio: number | undefined
  notes: string[]
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

function medianOrUndefined(values: (number | undefined)[]): number | undefined {
  const defined = values.filter((v): v is number => v !== undefined && Number.isFinite(v))
  return defined.length > 0 ? median(defined) : undefined
}

/** The system every other is compared with. */
export const BASELINE = 'bare node'
const NOT_A_CACHE = new Set([BASELINE, 'origin'])

/** One row per (scenario, system), in the order they were first measured. */
export function summarize(measurements: readonly Measurement[], notes: ReadonlyMap<string, string[]> = new Map()): Row[] {
  const groups = new Map<string, Measurement[]>()
  for (const m of measurements) {
    const k = `${m.scenario}\u0000${m.system}`
    const list = groups.get(k) ?? []
    list.push(m)
    groups.set(k, list)
  }
  const bareRps = new Map<string, number>()
  for (const m of measurements) if (m.system === BASELINE) bareRps.set(`${m.scenario}\u0000${m.rep}`, m.load.rps)

  const rows: Row[] = []
  for (const [k, list] of groups) {
    const [scenario, system] = k.split('\u0000') as [string, string]
    const ratios = list.map((m) => {
      const bare = bareRps.get(`${m.scenario}\u0000${m.rep}`)
      return bare && bare > 0 ? m.load.rps / bare : undefined
    })
    const hitRatios = NOT_A_CACHE.has(system)
      ? []
      : list.map((m) => (m.originRequests === undefined || m.load.requests === 0 ? undefined : Math.max(0, 1 - m.originRequests / m.load.requests)))
    const peaks = list.map((m) => m.peakRssBytes).filter((v): v is number => v !== undefined)
    const rpsList = list.map((m) => m.load.rps)
    const rps = median(rpsList)
    rows.push({
      scenario,
      system,
      runs: list.length,
      rps,
      rpsSpread: rps > 0 ? (Math.max(...rpsList) - Math.min(...rpsList)) / 2 / rps : 0,
      p50Ms: median(list.map((m) => m.load.latencyMs.p50)),
      p99Ms: median(list.map((m) => m.load.latencyMs.p99)),
      vsBare: medianOrUndefined(ratios),
      errors: list.reduce((a, m) => a + totalErrors(m.load), 0),
      peakRssBytes: peaks.length > 0 ? Math.max(...peaks) : undefined,
      hitRatio: medianOrUndefined(hitRatios),
      cajeHitRatio: medianOrUndefined(list.map((m) => m.cajeHitRatio)),
      idealHitRatio: NOT_A_CACHE.has(system) ? undefined : medianOrUndefined(list.map((m) => m.idealHitRatio)),
      notes: notes.get(k) ?? [],
    })
  }
  return rows
}

/** One system against another measured in the same repetitions of a scenario. */
export interface Comparison {
  scenario: string
  system: string
  reference: string
  /** system's req/s ÷ reference's req/s, per repetition. */
  rpsRatios: number[]
  rpsRatio: number
  /** system's CPU per request ÷ reference's, per repetition (where both were measured). */
  cpuRatios: number[]
  cpuRatio: number | undefined
  /** The largest cost allowed: 0.02 means at most 2% fewer req/s. */
  maxCost: number
  /** 1 − the median req/s ratio. */
  cost: number
  withinTarget: boolean
  /** One sentence for the report. */
  summary: string
}

/**
 * `system` against `reference` in each repetition of `scenario` where both ran: ratios of req/s
 * and of CPU per request, and their medians (a ratio per repetition, not a ratio of medians, so
 * drift between repetitions cancels out).
 */
export function compareSystems(measurements: readonly Measurement[], opts: { scenario: string; system: string; reference: string; maxCost: number }): Comparison | undefined {
  const byRep = (system: string) => new Map(measurements.filter((m) => m.scenario === opts.scenario && m.system === system).map((m) => [m.rep, m]))
  const mine = byRep(opts.system)
  const theirs = byRep(opts.reference)
  const rpsRatios: number[] = []
  const cpuRatios: number[] = []
  for (const [rep, m] of mine) {
    const r = theirs.get(rep)
    if (!r || r.load.rps <= 0) continue
    rpsRatios.push(m.load.rps / r.load.rps)
    if (m.cpuUsPerRequest !== undefined && r.cpuUsPerRequest !== undefined && r.cpuUsPerRequest > 0) cpuRatios.push(m.cpuUsPerRequest / r.cpuUsPerRequest)
  }
  if (rpsRatios.length === 0) return undefined
  const rpsRatio = median(rpsRatios)
  const cpuRatio = cpuRatios.length > 0 ? median(cpuRatios) : undefined
  const cost = 1 - rpsRatio
  const withinTarget = cost <= opts.maxCost
  const list = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(', ')
  const summary =
    `${opts.scenario}: ${opts.system} ÷ ${opts.reference} in the same repetition: req/s ${rpsRatio.toFixed(3)} (${list(rpsRatios)})` +
    (cpuRatio === undefined ? '' : `, CPU per request ${cpuRatio.toFixed(3)} (${list(cpuRatios)})`) +
    ` — a cost of ${(cost * 100).toFixed(1)}% in req/s, ${withinTarget ? 'within' : 'over'} the target of at most ${(opts.maxCost * 100).toFixed(0)}%`
  return { ...opts, rpsRatios, rpsRatio, cpuRatios, cpuRatio, cost, withinTarget, summary }
}

export function noteKey(scenario: string, system: string): string {
  return `${scenario}\u0000${system}`
}

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–')
const fmtMs = (n: number) => (!Number.isFinite(n) ? '–' : n < 10 ? n.toFixed(2) : n.toFixed(1))
const fmtPct = (n: number | undefined) => (n === undefined ? '' : `${(n * 100).toFixed(1)}%`)
const fmtSpread = (r: Row) => (r.runs < 2 ? '' : `±${(r.rpsSpread * 100).toFixed(0)}%`)
const fmtMb = (n: number | undefined) => (n === undefined ? '' : `${(n / 1024 / 1024).toFixed(0)} MB`)

function hitCell(r: Row): string {
  if (r.hitRatio === undefined) return ''
  const extra = [r.cajeHitRatio !== undefined ? `caje says ${fmtPct(r.cajeHitRatio)}` : '', r.idealHitRatio !== undefined ? `ideal ${fmtPct(r.idealHitRatio)}` : ''].filter(Boolean)
  return extra.length > 0 ? `${fmtPct(r.hitRatio)} (${extra.join(', ')})` : fmtPct(r.hitRatio)
}

export function markdownTable(rows: readonly Row[]): string {
  const header = ['scenario', 'system', 'req/s', 'spread', 'p50 ms', 'p99 ms', '× bare', 'errors', 'peak RSS', 'hit ratio', 'notes']
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map((h, i) => (i >= 2 && i <= 9 ? '---:' : '---')).join(' | ')} |`]
  for (const r of rows) {
    const hit = hitCell(r)
    lines.push(
      `| ${[r.scenario, r.system, fmtInt(r.rps), fmtSpread(r), fmtMs(r.p50Ms), fmtMs(r.p99Ms), r.vsBare === undefined ? '' : r.vsBare.toFixed(2), String(r.errors), fmtMb(r.peakRssBytes), hit, r.notes.join('; ')].join(' | ')} |`,
    )
  }
  return lines.join('\n')
}

/** Plain fixed-width table for the terminal. */
export function textTable(rows: readonly Row[]): string {
  const header = ['scenario', 'system', 'req/s', 'spread', 'p50 ms', 'p99 ms', 'x bare', 'errors', 'peak RSS', 'hit ratio']
  const cells = rows.map((r) => [
    r.scenario,
    r.system,
    fmtInt(r.rps),
    fmtSpread(r),
    fmtMs(r.p50Ms),
    fmtMs(r.p99Ms),
    r.vsBare === undefined ? '' : r.vsBare.toFixed(2),
    String(r.errors),
    fmtMb(r.peakRssBytes),
    hitCell(r),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: string[]) => c.map((v, i) => (i >= 2 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n')
}

export interface ReportMeta {
  date: string
  nproc: number
  cpuModel: string
  memory: string
  node: string
  os: string
  /** 1-minute load average when the run started and when it ended. */
  loadAverage: { start: number; end: number }
  tool: string
  toolVersion: string
  /** The file system under the systems' cache directories (bench/disk.ts). */
  disk: string
  /** The command that produced this report. */
  command: string
  settings: string[]
  /** How each system was started, one line each. */
  systems: string[]
  /** One load command per scenario (the URL's host part stands for every system). */
  loadCommands: string[]
  /** Extra facts, e.g. caje's VmHWM at the end. */
  facts: string[]
  /** Anything skipped or failed, in words. */
  warnings: string[]
}

export function renderResults(meta: ReportMeta, rows: readonly Row[], comparisons: readonly Comparison[] = []): string {
  const bullet = (xs: string[]) => xs.map((x) => `- ${x}`).join('\n')
  return `# Benchmark results

Produced by \`${meta.command}\` on ${meta.date}. Regenerate with \`npm run bench\` (see \`npm run bench -- --help\`).

## Machine

- CPUs (nproc): ${meta.nproc}, ${meta.cpuModel}
- Memory: ${meta.memory}
- Node.js ${meta.node}, ${meta.os}
- Load average (1 min) at start ${meta.loadAverage.start.toFixed(1)}, at end ${meta.loadAverage.end.toFixed(1)}${Math.max(meta.loadAverage.start, meta.loadAverage.end) > meta.nproc / 2 ? ' — other work was running: expect noisy numbers and read "× bare" rather than req/s' : ''}
- Load generator: ${meta.tool} ${meta.toolVersion}
- Cache directories: ${meta.disk}

## Settings

${bullet(meta.settings)}

## Results

Medians over the repetitions. Systems are interleaved within each repetition (A B C, A B C, ...) so drift on the
shared machine hits all of them alike; "× bare" is the median of each system's req/s divided by the bare Node
server's req/s in the same repetition. Hit ratio is 1 − (requests that reached the origin ÷ requests answered);
for caje the ratio of \`hit\` it reports itself in \`/_caje/metrics\` is shown beside it when available, and for
the Zipf mix the ratio an unbounded, coalescing cache would reach for the same number of requests ("ideal": a
system that serves fewer requests in the same time starts cold for a larger share of them). Peak RSS is the
largest resident set of the system's whole process tree sampled during its runs. "spread" is half the range of
req/s across the repetitions relative to the median: a large one means the machine was not quiet.

${markdownTable(rows)}
${
  comparisons.length > 0
    ? `
## Side by side

Two caje processes of the same build, with the same origin, URL and log settings, measured one after the other in
every repetition (their order alternating). Each ratio is taken within a repetition, then the median across them;
CPU per request is the process's user + system time divided by the requests it answered, which other work on the
machine disturbs less than req/s.

${bullet(comparisons.map((c) => c.summary))}
`
    : ''
}${meta.facts.length > 0 ? `\n${bullet(meta.facts)}\n` : ''}${meta.warnings.length > 0 ? `\n## Warnings\n\n${bullet(meta.warnings)}\n` : ''}
## How it ran

Systems:

${bullet(meta.systems.map((s) => `\`${s}\``))}

Load, per scenario:

${bullet(meta.loadCommands.map((c) => `\`${c}\``))}
`
}
