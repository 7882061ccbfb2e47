// Frozen in time (see 2026112401_initial.ts).
//
// Soft purges: a purge row may mark what it covers stale instead of removing
// it (`soft` = 1), so every node revalidates those entries with the origin on
// their next use and may still serve them under stale-if-error.
//
// When each node applied each purge: one row per purge and node, written when
// the node reports its progress, so the purge history can say "applied on
// node b at 10:01:02" and not only how far each node got.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('purges').addColumn('soft', 'integer', (c) => c.notNull().defaultTo(0)).execute()
  await db.schema
    .createTable('purge_nodes')
    .addColumn('purge_id', 'integer', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('applied_at', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('purge_nodes_pk', ['purge_id', 'node_id'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('purge_nodes').ifExists().execute()
  await db.schema.alterTable('purges').dropColumn('soft').execute()
}
