// Frozen in time (see 2026112401_initial.ts).
//
// Purges are applied by every node in id order; each node records the last
// one it applied so a restarted node catches up on purges it missed while it
// was down. The stale_at / delete_at indexes serve populate ("fresh entries
// this node lacks") and the expiry prune.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('nodes').addColumn('last_purge_id', 'integer', (c) => c.notNull().defaultTo(0)).execute()
  await db.schema.createIndex('entries_stale_at').on('entries').column('stale_at').execute()
  await db.schema.createIndex('entries_delete_at').on('entries').column('delete_at').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('entries_delete_at').ifExists().execute()
  await db.schema.dropIndex('entries_stale_at').ifExists().execute()
  await db.schema.alterTable('nodes').dropColumn('last_purge_id').execute()
}
