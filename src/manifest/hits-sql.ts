// The SQL of a batch of hit counts (hot-set.ts), in a module of its own that imports nothing:
// the hot writes' statements (statements.ts HOT_SQL) take it too, so the manifest's apply
// thread prepares it with them.

/** Keys not asked for within this long are dropped from the counts. */
export const HIT_RETENTION_MS = 7 * 24 * 3600_000
/** Most keys counted; past it the least asked-for are dropped. */
export const MAX_HIT_ROWS = 200_000

/**
 * A batch of counts, by statement: add each key's count (parameters: key, hits, the batch's
 * time), then prune what is older than HIT_RETENTION_MS (parameter: the batch's time) and the
 * least asked-for keys past MAX_HIT_ROWS (none while under it).
 */
export const HITS_SQL = {
  /** Batches arrive in any order: the newest hit stays the newest. */
  add: `insert into url_hits (key, hits, last_hit_at) values (?, ?, ?)
  on conflict (key) do update set hits = url_hits.hits + excluded.hits, last_hit_at = max(url_hits.last_hit_at, excluded.last_hit_at)`,
  pruneOld: `delete from url_hits where last_hit_at < ? - ${HIT_RETENTION_MS}`,
  // In the order of the index on (hits, last_hit_at) (migration 2026120501): read in order,
  // no sort; by rowid, so each row goes without a lookup of its key.
  pruneOver: `delete from url_hits where rowid in (
  select rowid from url_hits order by hits asc, last_hit_at asc
  limit max(0, (select count(*) from url_hits) - ${MAX_HIT_ROWS}))`,
} as const
