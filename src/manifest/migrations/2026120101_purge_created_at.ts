// Frozen in time (see 2026112401_initial.ts).
//
// A purge covers what was stored before it. Every 'stored' op checks whether
// a purge newer than the entry already covers it (the op was delivered after
// the purge); this index makes that a look at the few newest purges.

import type { Kysely } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('purges_created_at').on('purges').column('created_at').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('purges_created_at').ifExists().execute()
}
