// Frozen in time (see 2026112401_initial.ts).
//
// The hit counts' index on hits alone becomes one on (hits, last_hit_at): the
// order in which the prune past MAX_HIT_ROWS (hits-sql.ts) drops keys, the
// least asked-for and among those the longest unasked. With hits alone SQLite
// walked that index and sorted every row of the lowest count by last_hit_at in
// a temporary B-tree before taking the few it drops: once the table was full,
// every batch of counts sorted up to 200,000 rows (the sort alone about 30 ms
// of the apply thread in memory; on a busy node's file a batch of 1,000 counts
// took 50-110 ms in all), and after a storm of unique URLs the manifest's
// queue took up to a second to drain. With both columns the
// prune reads the index in order and stops after the rows it drops. The hot
// set, read hottest first (hot-set.ts), is served by the same index.
//
// Only the node that may write runs migrations (the primary under LiteFS);
// the index is built in the migration's one transaction, from the rows.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists url_hits_hits`.execute(db)
  await sql`create index url_hits_hits_last_hit_at on url_hits (hits, last_hit_at)`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists url_hits_hits_last_hit_at`.execute(db)
  await sql`create index url_hits_hits on url_hits (hits)`.execute(db)
}
