import { describe, expect, it } from 'vitest'
import type { Kysely } from 'kysely'
import type { Database } from './database.ts'
import { applyOps, parseOps } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { MINUTES_KEPT_MS, minutesSince, topPathsSince } from './repositories.ts'
import type { MinuteStats, PathMisses } from './repositories.ts'
import { freshManifestPerTest } from './test-helpers.ts'

const M = Date.UTC(2026, 0, 1, 12, 0)
const MIN = 60_000

const path = (p: string, misses: number, originBytes: number, reasons: Record<string, number>): PathMisses => ({ path: p, misses, originBytes, reasons })
const minute = (at: number, paths?: PathMisses[]): MinuteStats => {
  const misses = (paths ?? []).reduce((n, p) => n + p.misses, 0)
  return { minute: at, requests: misses + 1, hits: 1, misses, bytesCache: 1, bytesOrigin: (paths ?? []).reduce((n, p) => n + p.originBytes, 0), ...(paths ? { paths } : {}) }
}
const minutesOp = (nodeId: string, minutes: MinuteStats[]): ManifestOp => ({ type: 'minutes', nodeId, minutes })

describe('minutes op with top paths', () => {
  it('round-trips the paths as JSON, and reads an older node’s minutes without paths', () => {
    const op = minutesOp('a', [minute(M, [path('h/cart', 3, 30, { private: 3 })]), minute(M + MIN, [])])
    expect(parseOps(JSON.parse(JSON.stringify({ ops: [op] })))).toEqual({ ok: true, ops: [op], unknownTypes: [] })
    const older = { type: 'minutes', nodeId: 'old', minutes: [{ minute: M, requests: 2, hits: 1, misses: 1, bytesCache: 5, bytesOrigin: 7 }] }
    const parsed = parseOps({ ops: [older] })
    expect(parsed).toEqual({ ok: true, ops: [older], unknownTypes: [] })
    expect(parsed.ok && parsed.ops[0]!.type === 'minutes' && 'paths' in parsed.ops[0]!.minutes[0]!).toBe(false)
  })

  it('refuses paths that do not fit, saying which minute and what is wrong', () => {
    const withPaths = (paths: unknown) => ({ ops: [{ type: 'minutes', nodeId: 'a', minutes: [{ ...minute(M), paths }] }] })
    expect(parseOps(withPaths('all of them'))).toMatchObject({ ok: false, error: expect.stringContaining(`ops[0]: minute ${M}: paths must be an array`) })
    expect(parseOps(withPaths([{ path: 'h/a', misses: -1, originBytes: 0, reasons: {} }]))).toMatchObject({ ok: false, error: expect.stringContaining('h/a: misses and originBytes must be whole numbers') })
    expect(parseOps(withPaths([{ path: 'h/a', misses: 1, originBytes: 0, reasons: { private: 'often' } }]))).toMatchObject({ ok: false, error: expect.stringContaining('reasons must map') })
    expect(parseOps(withPaths([{ path: '', misses: 1, originBytes: 0, reasons: {} }]))).toMatchObject({ ok: false, error: expect.stringContaining('each path needs path') })
    expect(parseOps(withPaths(Array.from({ length: 1001 }, (_, i) => path(`h/${i}`, 1, 1, {}))))).toMatchObject({ ok: false, error: expect.stringContaining('at most 1000') })
  })
})

describe('recorded top paths', () => {
  let db: Kysely<Database>
  freshManifestPerTest((m) => (db = m.db))
  const top = (q: { since?: number; nodeId?: string | null; by?: 'misses' | 'bytes'; limit?: number; alsoPaths?: string[] }) =>
    topPathsSince(db, { since: q.since ?? M, nodeId: q.nodeId ?? null, by: q.by ?? 'misses', limit: q.limit ?? 10, alsoPaths: q.alsoPaths })

  it('sums paths and their reasons across nodes and minutes, or for one node', async () => {
    await applyOps(db, [
      minutesOp('a', [minute(M, [path('h/cart', 3, 30, { private: 3 }), path('h/video', 1, 5_000_000, { 'too-large': 1 })]), minute(M + MIN, [path('h/cart', 1, 10, { private: 1 })])]),
      minutesOp('b', [minute(M, [path('h/cart', 2, 20, { private: 1, 'set-cookie': 1 }), path('h/only-b', 4, 4, { 'no-store': 4 })])]),
    ])
    expect(await top({})).toEqual([
      path('h/cart', 6, 60, { private: 5, 'set-cookie': 1 }),
      path('h/only-b', 4, 4, { 'no-store': 4 }),
      path('h/video', 1, 5_000_000, { 'too-large': 1 }),
    ])
    expect((await top({ by: 'bytes', limit: 1 })).map((p) => p.path)).toEqual(['h/video'])
    expect(await top({ nodeId: 'a' })).toEqual([path('h/cart', 4, 40, { private: 4 }), path('h/video', 1, 5_000_000, { 'too-large': 1 })])
    expect(await top({ nodeId: 'b', limit: 1 })).toEqual([path('h/only-b', 4, 4, { 'no-store': 4 })])
    // Only the window asked for.
    expect(await top({ since: M + MIN })).toEqual([path('h/cart', 1, 10, { private: 1 })])
    // Paths the caller adds counts to come back too, top or not.
    expect((await top({ limit: 1, alsoPaths: ['h/video', 'h/never'] })).map((p) => p.path)).toEqual(['h/cart', 'h/video'])
  })

  it('overwrites a redelivered minute, keeps the paths of a minute sent without them, and drops them after the retention', async () => {
    const first = minutesOp('a', [minute(M, [path('h/x', 1, 1, { private: 1 })])])
    await applyOps(db, [first, first])
    expect(await top({})).toEqual([path('h/x', 1, 1, { private: 1 })])
    await applyOps(db, [minutesOp('a', [minute(M, [path('h/y', 2, 2, { 'no-store': 2 })])])])
    expect(await top({})).toEqual([path('h/y', 2, 2, { 'no-store': 2 })])
    // An older node's batch for the same minute (no paths) leaves them alone.
    await applyOps(db, [minutesOp('a', [minute(M)])])
    expect(await top({})).toEqual([path('h/y', 2, 2, { 'no-store': 2 })])
    // Another node's paths stay whatever a's retention drops.
    await applyOps(db, [minutesOp('b', [minute(M, [path('h/b', 1, 1, { private: 1 })])])])
    const later = M + MINUTES_KEPT_MS + MIN
    await applyOps(db, [minutesOp('a', [minute(later, [path('h/z', 1, 1, { private: 1 })])])])
    expect(await top({ since: 0, nodeId: 'a' })).toEqual([path('h/z', 1, 1, { private: 1 })])
    expect(await top({ since: 0, nodeId: 'b' })).toEqual([path('h/b', 1, 1, { private: 1 })])
    expect((await minutesSince(db, 0)).map((m) => [m.nodeId, m.minute])).toEqual([
      ['b', M],
      ['a', later],
    ])
  })

  it('forgets a node’s minutes and paths with the node, and keeps the other nodes’', async () => {
    await applyOps(db, [
      minutesOp('gone', [minute(M, [path('h/old', 5, 50, { private: 5 })]), minute(M + MIN, [path('h/cart', 1, 10, { private: 1 })])]),
      minutesOp('b', [minute(M, [path('h/cart', 2, 20, { private: 2 })])]),
    ])
    await applyOps(db, [{ type: 'node-forgotten', nodeId: 'gone' }])
    expect(await top({ since: 0 })).toEqual([path('h/cart', 2, 20, { private: 2 })])
    expect(await top({ since: 0, nodeId: 'gone' })).toEqual([])
    expect((await minutesSince(db, 0)).map((m) => [m.nodeId, m.minute])).toEqual([['b', M]])
  })
})
