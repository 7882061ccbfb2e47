// The query plans of the statements a piece of manifest code runs: for tests that
// check an index is used, and for bench/manifest-upsert.ts, which prints them.

import type SQLite from 'better-sqlite3'

/**
 * The query plans (EXPLAIN QUERY PLAN, one line per step) of every SELECT, DELETE or UPDATE
 * that `run` makes on this handle, with the values it bound.
 */
export async function queryPlans(sqlite: SQLite.Database, run: () => Promise<unknown>): Promise<string[]> {
  const seen: { source: string; args: unknown[] }[] = []
  const prepare = sqlite.prepare.bind(sqlite)
  sqlite.prepare = ((source: string) => {
    const stmt = prepare(source)
    for (const m of ['all', 'get', 'run', 'iterate'] as const) {
      const f = (stmt[m] as (...a: unknown[]) => unknown).bind(stmt)
      ;(stmt as unknown as Record<string, unknown>)[m] = (...args: unknown[]) => {
        seen.push({ source, args })
        return f(...args)
      }
    }
    return stmt
  }) as typeof sqlite.prepare
  try {
    await run()
  } finally {
    // The handle's own prepare (its prototype's) again.
    Reflect.deleteProperty(sqlite, 'prepare')
  }
  return seen
    .filter((s) => /^\s*(select|delete|update|with)/i.test(s.source))
    .map((s) => prepare(`explain query plan ${s.source}`).all(...s.args).map((r) => (r as { detail: string }).detail).join('; '))
}
