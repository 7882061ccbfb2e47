import { readFile, readlink } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { formatBreakdown, formatHeapLog, smapsBreakdown } from './smaps.ts'

/** One smaps entry: its header line, Rss in kB, and VmFlags. */
function mapping(range: string, name: string, rssKb: number, flags: string): string {
  return [`${range} rw-p 00000000 00:00 0${name ? `          ${name}` : ''}`, `Size:  ${rssKb} kB`, `Rss:   ${rssKb} kB`, `AnonHugePages: 0 kB`, `VmFlags: ${flags}`].join('\n')
}

describe('smapsBreakdown', () => {
  it('puts each mapping into one part of the process memory', () => {
    const smaps = [
      mapping('00400000-02400000', '/usr/bin/node', 4096, 'rd ex mr mw me dw'),
      mapping('02400000-02500000', '/usr/lib/x86_64-linux-gnu/libc.so.6', 1024, 'rd ex mr mw me'),
      mapping('03000000-03400000', '[heap]', 3072, 'rd wr mr mw me ac hg'),
      mapping('7f0000000000-7f0000800000', '', 8192, 'rd wr mr mw me ac hg'),
      mapping('7f0000800000-7f0002800000', '', 30720, 'rd wr mr mw me nr'),
      mapping('7f0002800000-7f0002840000', '', 256, 'rd wr mr mw me ac'),
      mapping('7f0002840000-7f0002880000', '', 128, 'rd wr mr mw me ac'),
      mapping('7ffc00000000-7ffc00021000', '[stack]', 64, 'rd wr mr mw me gd ac'),
    ].join('\n')
    const b = smapsBreakdown(smaps, '/usr/bin/node')
    expect(b).toEqual({
      rss: (4096 + 1024 + 3072 + 8192 + 30720 + 256 + 128 + 64) * 1024,
      binary: 4096 * 1024,
      files: 1024 * 1024,
      mallocHeap: 3072 * 1024,
      hugeAnon: 8192 * 1024,
      largestAnon: 30720 * 1024,
      otherAnon: (256 + 128 + 64) * 1024,
    })
    expect(formatBreakdown(b)).toBe('huge-page anon (slabs, large arrays) 8, other anon (V8 heaps, stacks) 0, largest plain anon mapping (malloc arena) 30, [heap] 3, node binary 4, other files 1')
  })

  it('adds up to the RSS of a live process', async () => {
    const smaps = await readFile('/proc/self/smaps', 'utf8')
    const b = smapsBreakdown(smaps, await readlink('/proc/self/exe'))
    expect(b.binary).toBeGreaterThan(0)
    expect(b.hugeAnon + b.mallocHeap + b.largestAnon + b.otherAnon + b.binary + b.files).toBe(b.rss)
  })
})

describe('formatHeapLog', () => {
  it("gives each thread's newest heap from the log's tail, skipping a line cut short", () => {
    const MB = 1024 * 1024
    const line = (thread: string, committed: number, used: number) => JSON.stringify({ t: 1, thread, committed: committed * MB, used: used * MB, external: 0, spaces: {} })
    const tail = ['ead":"main","committed":1}', line('main', 100, 60), line('cache disk writer', 13, 12), line('main', 114, 78), '{"t":2,"thread":"manifest a'].join('\n')
    expect(formatHeapLog(tail)).toBe('main 114 (78 used), cache disk writer 13 (12 used)')
    expect(formatHeapLog('')).toBe('')
  })
})
