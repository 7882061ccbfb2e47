// Frozen in time (see 2026112401_initial.ts).
//
// The paths that went to the origin most, per node per finished minute (a
// bounded top list, recorded with the node's minutes), so any node can show
// every node's top misses and why they missed. `reasons` is a JSON object of
// reason → count.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('node_minute_paths')
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('minute', 'integer', (c) => c.notNull())
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('misses', 'integer', (c) => c.notNull())
    .addColumn('origin_bytes', 'integer', (c) => c.notNull())
    .addColumn('reasons', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('node_minute_paths_pk', ['node_id', 'minute', 'path'])
    .execute()
  await db.schema.createIndex('node_minute_paths_minute').on('node_minute_paths').column('minute').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('node_minute_paths').ifExists().execute()
}
