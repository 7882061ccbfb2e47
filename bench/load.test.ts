import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createOriginServer, ORIGIN_STATS_PATH } from './origin.ts'
import { parseWrkOutput, runLoad, totalErrors, wrkScript, zipfCdf, zipfIdealHitRatio, zipfPick } from './load.ts'
import { findExecutable } from './systems.ts'

describe('zipf', () => {
  it('builds a normalised, increasing CDF', () => {
    const cdf = zipfCdf(1000, 1)
    expect(cdf[cdf.length - 1]).toBeCloseTo(1, 12)
    for (let i = 1; i < cdf.length; i++) expect(cdf[i]!).toBeGreaterThan(cdf[i - 1]!)
    // rank 1 has weight 1/H(1000) ≈ 0.1336
    expect(cdf[0]).toBeCloseTo(0.1336, 3)
  })

  it('picks ranks by binary search', () => {
    const cdf = zipfCdf(10, 1)
    expect(zipfPick(cdf, 0)).toBe(0)
    expect(zipfPick(cdf, cdf[0]! - 1e-9)).toBe(0)
    expect(zipfPick(cdf, cdf[0]! + 1e-9)).toBe(1)
    expect(zipfPick(cdf, 0.999999999)).toBe(9)
  })

  it('gives an ideal hit ratio that grows with the number of requests', () => {
    const few = zipfIdealHitRatio(10_000, 1, 1_000)
    const many = zipfIdealHitRatio(10_000, 1, 100_000)
    expect(few).toBeGreaterThan(0)
    expect(many).toBeGreaterThan(few)
    expect(many).toBeLessThan(1)
    expect(zipfIdealHitRatio(10, 1, 0)).toBe(0)
  })
})

describe('wrk output', () => {
  it('parses the JSON line written by the script', () => {
    const out = `Running 1s test @ http://127.0.0.1:1/1k\n  1 threads and 50 connections\nWRK_JSON {"requests":20000,"duration_us":2000000,"bytes":24000000,"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},"latency_us":{"p50":1500,"p90":3000,"p99":12000,"max":50000,"mean":1800.5}}\n`
    const r = parseWrkOutput(out, 'wrk ...')
    expect(r.rps).toBe(10_000)
    expect(r.latencyMs.p50).toBe(1.5)
    expect(r.latencyMs.p99).toBe(12)
    expect(totalErrors(r)).toBe(3)
  })

  it('says what wrk printed when the summary is missing', () => {
    expect(() => parseWrkOutput('unable to connect to 127.0.0.1:1 Connection refused', 'wrk')).toThrow(/Connection refused/)
  })

  it('only defines request() for the Zipf mix (wrk sends a prebuilt request otherwise)', () => {
    expect(wrkScript({ kind: 'fixed', path: '/1k' })).not.toContain('request = function')
    const zipf = wrkScript({ kind: 'zipf', count: 100, exponent: 1, pathPrefix: '/obj/', query: 'r=1' })
    expect(zipf).toContain('request = function')
    expect(zipf).toContain('"?r=1"')
  })

  it('paces each connection with delay() only when asked to', () => {
    expect(wrkScript({ kind: 'fixed', path: '/1k' })).not.toContain('delay = function')
    expect(wrkScript({ kind: 'fixed', path: '/1k' }, 5)).toMatch(/delay = function\(\)\n\s*return 5\n/)
  })
})

describe('runLoad against a real origin', () => {
  let server: ReturnType<typeof createOriginServer>
  let baseUrl: string
  let scratch: string
  beforeAll(async () => {
    server = createOriginServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    scratch = await mkdtemp(path.join(os.tmpdir(), 'caje-load-test-'))
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await rm(scratch, { recursive: true, force: true })
  })

  const wrk = findExecutable('wrk')
  for (const tool of ['wrk', 'autocannon'] as const) {
    it(`${tool}: drives the Zipf mix and reports requests and latency`, async () => {
      // The benchmark's default load generator: a machine without it fails here instead of skipping
      // (.ci/run installs it; elsewhere: apt-get install wrk).
      if (tool === 'wrk') expect(wrk, 'wrk is not installed: install the Debian package "wrk" (apt-get install -y wrk)').toBeDefined()
      const before = (await (await fetch(baseUrl + ORIGIN_STATS_PATH)).json()) as { requests: number }
      const r = await runLoad({
        tool,
        wrkPath: wrk,
        baseUrl,
        workload: { kind: 'zipf', count: 100, exponent: 1, pathPrefix: '/obj/', query: 'r=t' },
        connections: 4,
        durationSec: 1,
        threads: 1,
        timeoutSec: 5,
        scratchDir: scratch,
      })
      const after = (await (await fetch(baseUrl + ORIGIN_STATS_PATH)).json()) as { requests: number }
      expect(r.requests).toBeGreaterThan(50)
      expect(totalErrors(r)).toBe(0)
      expect(r.latencyMs.p99).toBeGreaterThanOrEqual(r.latencyMs.p50)
      // every request reached the origin (give or take the ones in flight at the end)
      expect(after.requests - before.requests).toBeGreaterThanOrEqual(r.requests)
    })
  }
})
