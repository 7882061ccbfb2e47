// Frozen in time (see 2026112401_initial.ts).
//
// How often each cache key was asked for, summed over every node: a node that
// starts with an empty disk fetches the most asked-for entries first and is
// ready for traffic once it holds most of them (hot-set.ts). Nodes add their
// counts in batches; rows not asked for within the retention window are pruned,
// so the table stays bounded by the keys actually in use.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('url_hits')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('hits', 'integer', (c) => c.notNull())
    .addColumn('last_hit_at', 'integer', (c) => c.notNull())
    .execute()
  // The hot set is read hottest first; the prune drops the oldest.
  await db.schema.createIndex('url_hits_hits').on('url_hits').column('hits').execute()
  await db.schema.createIndex('url_hits_last_hit_at').on('url_hits').column('last_hit_at').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('url_hits').ifExists().execute()
}
