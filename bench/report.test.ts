import { describe, expect, it } from 'vitest'
import type { LoadResult } from './load.ts'
import { BASELINE, compareSystems, markdownTable, median, renderResults, summarize, textTable, type Measurement } from './report.ts'

function load(rps: number, p50 = 1, p99 = 10, errors = 0): LoadResult {
  return {
    tool: 'wrk',
    requests: rps * 10,
    durationSec: 10,
    rps,
    bytes: 0,
    latencyMs: { p50, p90: p50, p99, max: p99, mean: p50 },
    errors: { connect: 0, read: 0, write: 0, timeout: 0, status: errors },
    command: 'wrk',
  }
}

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 2, 3])).toBe(2.5)
    expect(median([])).toBeNaN()
  })
})

describe('summarize', () => {
  const ms: Measurement[] = [
    { scenario: 's', system: BASELINE, rep: 1, load: load(100) },
    { scenario: 's', system: 'caje', rep: 1, load: load(50, 2, 20), peakRssBytes: 100, originRequests: 0 },
    { scenario: 's', system: BASELINE, rep: 2, load: load(200) },
    { scenario: 's', system: 'caje', rep: 2, load: load(60, 3, 30, 1), peakRssBytes: 300, originRequests: 60 },
    { scenario: 's', system: BASELINE, rep: 3, load: load(100) },
    { scenario: 's', system: 'caje', rep: 3, load: load(70, 4, 40), peakRssBytes: 200, originRequests: 70 },
  ]

  it('compares each repetition with bare in the same repetition, then takes medians', () => {
    const [bare, caje] = summarize(ms)
    expect(bare!.vsBare).toBe(1)
    expect(bare!.hitRatio).toBeUndefined()
    expect(caje!.runs).toBe(3)
    expect(caje!.rps).toBe(60)
    // ratios 0.5, 0.3, 0.7 → 0.5 (a ratio of medians would say 60/100 = 0.6)
    expect(caje!.vsBare).toBeCloseTo(0.5, 10)
    expect(caje!.p50Ms).toBe(3)
    expect(caje!.p99Ms).toBe(30)
    expect(caje!.errors).toBe(1)
    expect(caje!.peakRssBytes).toBe(300)
    // hit ratios 1, 0.9, 0.9 → 0.9
    expect(caje!.hitRatio).toBeCloseTo(0.9, 10)
  })

  it('renders the tables and the results page', () => {
    const rows = summarize(ms, new Map([['s\u0000caje', ['wrong body']]]))
    const md = markdownTable(rows)
    expect(md.split('\n')).toHaveLength(4)
    expect(md).toContain('| s | caje | 60 | ±17% | 3.00 | 30.0 | 0.50 | 1 | 0 MB | 90.0% | wrong body |')
    expect(textTable(rows)).toContain('caje')
    const page = renderResults(
      { date: 'd', nproc: 2, cpuModel: 'cpu', memory: '1 GiB', node: 'v20', os: 'Linux', loadAverage: { start: 0.2, end: 0.4 }, tool: 'wrk', toolVersion: '4', disk: 'ext4 on /dev/vda (mounted at /)', command: 'npm run bench', settings: ['x'], systems: ['y'], loadCommands: ['z'], facts: [], warnings: [] },
      rows,
    )
    expect(page).toContain('nproc): 2, cpu')
    expect(page).toContain('`npm run bench`')
    expect(page).not.toContain('## Warnings')
  })
})

describe('compareSystems', () => {
  const run = (system: string, rep: number, rps: number, cpuUsPerRequest?: number): Measurement => ({ scenario: 'r', system, rep, load: load(rps), cpuUsPerRequest })
  const ms: Measurement[] = [
    run('caje (memory)', 1, 100, 30),
    run('caje (rules)', 1, 99, 30.3),
    // A slow repetition for both: its ratio counts like any other.
    run('caje (rules)', 2, 50, 62),
    run('caje (memory)', 2, 52, 60),
    run('caje (memory)', 3, 200, 20),
    run('caje (rules)', 3, 192, 21),
    // A repetition the reference missed is left out.
    run('caje (rules)', 4, 10, 90),
    { ...run('caje (memory)', 1, 1), scenario: 'other' },
  ]

  it('takes the ratio within each repetition, then the median, and says whether the cost is within the target', () => {
    const c = compareSystems(ms, { scenario: 'r', system: 'caje (rules)', reference: 'caje (memory)', maxCost: 0.02 })!
    expect(c.rpsRatios.map((x) => x.toFixed(3))).toEqual(['0.990', '0.962', '0.960'])
    expect(c.rpsRatio).toBeCloseTo(50 / 52, 10)
    expect(c.cpuRatios.map((x) => x.toFixed(3))).toEqual(['1.010', '1.033', '1.050'])
    expect(c.cpuRatio).toBeCloseTo(62 / 60, 10)
    expect(c.cost).toBeCloseTo(1 - 50 / 52, 10)
    expect(c.withinTarget).toBe(false)
    expect(c.summary).toContain('req/s 0.962 (0.990, 0.962, 0.960)')
    expect(c.summary).toContain('over the target of at most 2%')
    expect(compareSystems(ms, { scenario: 'r', system: 'caje (rules)', reference: 'caje (memory)', maxCost: 0.05 })!.withinTarget).toBe(true)
    expect(compareSystems(ms, { scenario: 'none', system: 'caje (rules)', reference: 'caje (memory)', maxCost: 0.02 })).toBeUndefined()
  })

  it('puts the comparison on the results page', () => {
    const c = compareSystems(ms, { scenario: 'r', system: 'caje (rules)', reference: 'caje (memory)', maxCost: 0.05 })!
    const page = renderResults(
      { date: 'd', nproc: 2, cpuModel: 'cpu', memory: '1 GiB', node: 'v20', os: 'Linux', loadAverage: { start: 0.2, end: 0.4 }, tool: 'wrk', toolVersion: '4', disk: 'ext4 on /dev/vda (mounted at /)', command: 'npm run bench', settings: ['x'], systems: ['y'], loadCommands: ['z'], facts: [], warnings: [] },
      summarize(ms),
      [c],
    )
    expect(page).toContain('## Side by side')
    expect(page).toContain(`- ${c.summary}`)
  })
})
