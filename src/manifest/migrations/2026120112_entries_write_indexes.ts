// Frozen in time (see 2026112401_initial.ts).
//
// Every stored op writes a row of `entries`, and each index on the table is
// one more B-tree to change per write. Two indexes served no query that runs:
// entries_stale_at (populate walks the primary key in key order and checks
// freshness per row; soft purges narrow by url or host) and entries_delete_at
// (only the 'prune' op reads delete_at, and nothing sends it). Without them a
// prune reads the whole table once, which a rare maintenance op can afford.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('entries_stale_at').ifExists().execute()
  await db.schema.dropIndex('entries_delete_at').ifExists().execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('entries_stale_at').ifNotExists().on('entries').column('stale_at').execute()
  await db.schema.createIndex('entries_delete_at').ifNotExists().on('entries').column('delete_at').execute()
}
