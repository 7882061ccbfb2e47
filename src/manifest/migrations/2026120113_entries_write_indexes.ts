// Frozen in time (see 2026112401_initial.ts).
//
// Every stored op writes a row of `entries`, and each index on the table is
// one more B-tree to change per write. entries_stale_at served no query that
// runs: populate walks the primary key in key order and checks freshness per
// row, soft purges narrow by url or host. entries_delete_at stays: besides
// the expiry prune, it is the narrowest index, which SQLite counts to answer
// the admin list's unfiltered total (without it, it counts entries_url, about
// ten times the pages).

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('entries_stale_at').ifExists().execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('entries_stale_at').ifNotExists().on('entries').column('stale_at').execute()
}
