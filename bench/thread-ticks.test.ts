import { spawn } from 'node:child_process'
import os from 'node:os'
import { describe, expect, it } from 'vitest'
import { groups, threads, v8WorkersOf, type Thread } from './thread-ticks.ts'

describe('v8WorkersOf', () => {
  it('reads the pool size from a Node command line: 4 by default, one fewer than the cores for 0', () => {
    expect(v8WorkersOf(['node', 'main.js'])).toBe(4)
    expect(v8WorkersOf(['node', '--v8-pool-size=2', 'main.js'])).toBe(2)
    expect(v8WorkersOf(['node', '--v8-pool-size=0', 'main.js'])).toBe(Math.max(1, os.availableParallelism() - 1))
  })
})

describe('groups', () => {
  const thread = (tid: number, v8Workers: number): Thread => ({ pid: 100, tid: String(tid), comm: 'node', ticks: 1, v8Workers })

  it('counts as V8 platform threads only as many as the process runs, the rest of its unnamed threads as the pool', () => {
    const list = [100, 101, 102, 103, 104, 105, 106].map((tid) => thread(tid, 1))
    expect(Object.fromEntries(groups(list, { mainPid: 100 }))).toEqual({ main: 1, 'V8 delayed tasks': 1, 'V8 platform (GC, compile)': 1, 'libuv pool, other': 4 })
    const four = [100, 101, 102, 103, 104, 105, 106].map((tid) => thread(tid, 4))
    expect(groups(four, { mainPid: 100 }).get('V8 platform (GC, compile)')).toBe(4)
  })

  it('takes the pool size from a live process', async () => {
    const child = spawn(process.execPath, ['--v8-pool-size=2', '-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
    try {
      // Node's threads are there once the forked child has become Node (before that it has one thread and its parent's command line).
      let list: Thread[] = []
      while (list.length < 2) list = await threads(child.pid!)
      expect(list.every((t) => t.v8Workers === 2)).toBe(true)
    } finally {
      child.kill()
    }
  })
})
