// Counting the collections V8's --trace-gc prints, one line each:
//   [pid:isolate]  1234 ms: Scavenge 30.1 (35.2) -> 27.0 (36.2) MB, 1.23 / 0.00 ms  (average mu = ...) allocation failure;
//   [pid:isolate]  1240 ms: Mark-Compact 57.6 (69.9) -> 47.4 (70.2) MB, 2.95 / 0.01 ms  (+ 17.7 ms in 178 steps since start of marking, ...
// Every isolate (the event loop and each worker thread) prints its own.

export interface GcCounts {
  scavenges: number
  markCompacts: number
  /** The pauses the lines give (the first of the two times), in ms. */
  pauseMs: number
}

const LINE = /^\[\d+:(0x[0-9a-f]+)\]\s+\d+ ms: (Scavenge|Mark-Compact)(?: \(reduce\))? [\d.]+ \([\d.]+\) -> [\d.]+ \([\d.]+\) MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \//gm

/** The collections of the isolate that collected most often in `text` (in caje, the event loop's). */
export function gcCounts(text: string): GcCounts {
  const isolates = new Map<string, GcCounts>()
  for (const m of text.matchAll(LINE)) {
    const c = isolates.get(m[1]!) ?? { scavenges: 0, markCompacts: 0, pauseMs: 0 }
    if (m[2] === 'Scavenge') c.scavenges++
    else c.markCompacts++
    c.pauseMs += Number(m[3])
    isolates.set(m[1]!, c)
  }
  let busiest: GcCounts = { scavenges: 0, markCompacts: 0, pauseMs: 0 }
  for (const c of isolates.values()) if (c.scavenges + c.markCompacts > busiest.scavenges + busiest.markCompacts) busiest = c
  return busiest
}
