// Frozen in time (see 2026112401_initial.ts).
//
// The admin list's order index holds (stored_at, id) instead of
// (stored_at, key, variant). Its key columns were there so a page could be
// found in the index alone; each entry of it repeated the entry's key, a
// whole URL, in a second B-tree that every stored op wrote to and every
// re-store rewrote (the old position out, the new one in). An index entry of
// SQLite ends with the row's rowid, which is `id` (2026120115): an index on
// stored_at alone is ordered by (stored_at, id), and the list's keyset
// (repositories.ts listManifest) pages by that pair. Its cursors name the id
// of a page's edge row, no longer its key.
//
// Only the node that may write runs migrations (the primary under LiteFS);
// the index is built in the migration's one transaction, from the rows.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists entries_stored_at`.execute(db)
  await sql`create index entries_stored_at on entries (stored_at)`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists entries_stored_at`.execute(db)
  await sql`create index entries_stored_at on entries (stored_at, key, variant)`.execute(db)
}
