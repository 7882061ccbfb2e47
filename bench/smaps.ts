// What a process's resident memory is made of, from /proc/<pid>/smaps: the
// miss storm's target is a bound on RSS, and a peak alone does not say which
// part of caje grew. Each mapping's Rss goes to one part:
// - hugeAnon: anonymous memory madvised for transparent huge pages ("hg" in
//   VmFlags). Under bin/caje (GLIBC_TUNABLES=glibc.malloc.hugetlb=1) these
//   are glibc's own mappings of 2 MiB and more: the memory tier's slabs and
//   the disk index's larger typed arrays.
// - mallocHeap: `[heap]`, glibc's main arena (the event loop's small mallocs).
// - largestAnon: the largest other anonymous mapping. With MALLOC_ARENA_MAX=2
//   it is glibc's second arena (64 MB of address space), shared by the worker
//   threads: SQLite's page caches among them.
// - otherAnon: every other anonymous mapping: V8's heaps (the event loop's and
//   the worker threads'), thread stacks, glibc's mappings under 2 MiB.
// - binary: the executable's own file (Node's code and its snapshot).
// - files: other file mappings (shared libraries, mapped files).

export interface MemoryBreakdown {
  rss: number
  hugeAnon: number
  mallocHeap: number
  largestAnon: number
  otherAnon: number
  binary: number
  files: number
}

/** Parts of `smaps` text (bytes); `executable` is the process's /proc/<pid>/exe target. */
export function smapsBreakdown(smaps: string, executable: string): MemoryBreakdown {
  const parts: MemoryBreakdown = { rss: 0, hugeAnon: 0, mallocHeap: 0, largestAnon: 0, otherAnon: 0, binary: 0, files: 0 }
  const plainAnon: number[] = []
  let name = ''
  let rss = 0
  for (const line of smaps.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (header) {
      name = header[1]!.trim()
      rss = 0
    } else if (line.startsWith('Rss:')) {
      rss = Number(line.split(/\s+/)[1]) * 1024
    } else if (line.startsWith('VmFlags:')) {
      // The last field of a mapping: it is complete now.
      parts.rss += rss
      if (name === '[heap]') parts.mallocHeap += rss
      else if (name === executable) parts.binary += rss
      else if (name.startsWith('/')) parts.files += rss
      else if (name === '' && line.split(/\s+/).includes('hg')) parts.hugeAnon += rss
      else plainAnon.push(rss)
    }
  }
  plainAnon.sort((a, b) => b - a)
  parts.largestAnon = plainAnon[0] ?? 0
  for (let i = 1; i < plainAnon.length; i++) parts.otherAnon += plainAnon[i]!
  return parts
}

/** One line for a results note, in MB. */
export function formatBreakdown(b: MemoryBreakdown): string {
  const mb = (n: number) => (n / 1024 / 1024).toFixed(0)
  return `huge-page anon (slabs, large arrays) ${mb(b.hugeAnon)}, other anon (V8 heaps, stacks) ${mb(b.otherAnon)}, largest plain anon mapping (malloc arena) ${mb(b.largestAnon)}, [heap] ${mb(b.mallocHeap)}, node binary ${mb(b.binary)}, other files ${mb(b.files)}`
}

/** The huge-page anonymous mappings of `smaps` text by size: "count×size MB (resident MB)", largest total first. */
export function hugeMappingSizes(smaps: string): string {
  const bySize = new Map<number, { count: number; rss: number }>()
  let size = 0
  let rss = 0
  let name = ''
  for (const line of smaps.split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (header) {
      size = Number.parseInt(header[2]!, 16) - Number.parseInt(header[1]!, 16)
      name = header[3]!.trim()
      rss = 0
    } else if (line.startsWith('Rss:')) {
      rss = Number(line.split(/\s+/)[1]) * 1024
    } else if (line.startsWith('VmFlags:') && name === '' && line.split(/\s+/).includes('hg')) {
      const s = bySize.get(size) ?? { count: 0, rss: 0 }
      s.count++
      s.rss += rss
      bySize.set(size, s)
    }
  }
  const mb = (n: number) => (n / 1024 / 1024).toFixed(n < 10 * 1024 * 1024 ? 2 : 0)
  return [...bySize].sort((a, b) => b[1].rss - a[1].rss).map(([sz, s]) => `${s.count}×${mb(sz)} (${mb(s.rss)})`).join(', ')
}

/** One line of caje's heap log (src/thread-heap.ts logHeap, CAJE_HEAP_LOG). */
interface HeapLogLine {
  thread: string
  committed: number
  used: number
}

/**
 * The V8 heaps in the end of caje's heap log (CAJE_HEAP_LOG): each thread's newest line, as
 * "main 114 (78 used), cache disk writer 13 (12 used)" in MB, committed first. Lines cut short
 * (the text is the file's tail) are skipped. A thread busy with one long task writes no line
 * meanwhile (the disk writer under a storm): its newest one may be a few seconds old.
 */
export function formatHeapLog(tail: string): string {
  const newest = new Map<string, HeapLogLine>()
  for (const text of tail.split('\n')) {
    let line: HeapLogLine
    try {
      line = JSON.parse(text) as HeapLogLine
    } catch {
      continue
    }
    if (typeof line?.thread === 'string' && typeof line.committed === 'number') newest.set(line.thread, line)
  }
  const mb = (n: number) => (n / 1024 / 1024).toFixed(0)
  return [...newest.values()].map((h) => `${h.thread} ${mb(h.committed)} (${mb(h.used)} used)`).join(', ')
}
