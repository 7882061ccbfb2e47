// Frozen in time (see 2026112401_initial.ts).
//
// The url index keeps only the URLs that differ from their key.
//
// A key is the URL as requested (scheme, host, path and query); it differs
// from the entry's url only when a rule rewrote the key (a query parameter
// left out, a header or cookie value added). So for almost every entry,
// entries_url was a second copy of entries_key, and every new entry was one
// more insert at a random place in it: at a million entries each stored op
// changed a random page of both, about half the pages a batch of stores
// writes to the WAL. Lookups by url read entries_key for the entries whose
// url is their key and this partial index for the others (repositories.ts
// purgeCondition and entriesMissingOn spell out both halves, and SQLite
// walks the two indexes and merges them).

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists entries_url`.execute(db)
  await sql`create index entries_url_not_key on entries (url) where url <> key`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists entries_url_not_key`.execute(db)
  await sql`create index entries_url on entries (url)`.execute(db)
}
