import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { cajeLaunch } from './systems.ts'
import { gcCounts } from './gc-trace.ts'

const run = promisify(execFile)

describe('gcCounts', () => {
  it("counts the busiest isolate's scavenges and mark-compacts in Node's own --trace-gc output", async () => {
    // The event loop churns (scavenges) and keeps objects through two forced full collections; a worker collects once.
    const script = `
      const { Worker } = require('node:worker_threads')
      new Worker('globalThis.gc()', { eval: true }).on('exit', () => {
        let keep = []
        for (let i = 0; i < 2e6; i++) { keep.push({ i }); if (keep.length > 5000) keep = [] }
        globalThis.gc()
        globalThis.gc()
      })
    `
    const { stdout } = await run(process.execPath, ['--trace-gc', '--expose-gc', '--max-semi-space-size=1', '-e', script])
    const counts = gcCounts(stdout)
    expect(counts.scavenges).toBeGreaterThan(0)
    expect(counts.markCompacts).toBe(2)
    expect(counts.pauseMs).toBeGreaterThan(0)
    expect(gcCounts('no collections here')).toEqual({ scavenges: 0, markCompacts: 0, pauseMs: 0 })
  })
})

describe('cajeLaunch', () => {
  it("takes bin/caje's Node flags and exported defaults, a variable already set winning", () => {
    const before = process.env.MALLOC_ARENA_MAX
    process.env.MALLOC_ARENA_MAX = '7'
    try {
      const launch = cajeLaunch(process.cwd())
      expect(launch.nodeArgs).toContain('--max-semi-space-size=4')
      expect(launch.nodeArgs.every((a) => a.startsWith('--'))).toBe(true)
      expect(launch.env.MALLOC_ARENA_MAX).toBe('7')
      expect(launch.env.MALLOC_MMAP_THRESHOLD_).toBe('131072')
    } finally {
      if (before === undefined) delete process.env.MALLOC_ARENA_MAX
      else process.env.MALLOC_ARENA_MAX = before
    }
  })
})
