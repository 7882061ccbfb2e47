// Frozen in time (see 2026112401_initial.ts).
//
// Traffic per node per minute, recorded by each node in batches, so any node
// can draw every node's hit ratio, requests and bytes saved.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('node_minutes')
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('minute', 'integer', (c) => c.notNull())
    .addColumn('requests', 'integer', (c) => c.notNull())
    .addColumn('hits', 'integer', (c) => c.notNull())
    .addColumn('misses', 'integer', (c) => c.notNull())
    .addColumn('bytes_cache', 'integer', (c) => c.notNull())
    .addColumn('bytes_origin', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('node_minutes_pk', ['node_id', 'minute'])
    .execute()
  await db.schema.createIndex('node_minutes_minute').on('node_minutes').column('minute').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('node_minutes').ifExists().execute()
}
