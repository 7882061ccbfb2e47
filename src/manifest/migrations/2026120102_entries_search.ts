// Frozen in time (see 2026112401_initial.ts).
//
// A substring index over entry URLs for the admin list's filter: an FTS5
// table with the trigram tokenizer (SQLite 3.34+), its content read from
// `entries` by rowid. Tokenizing a URL costs tens of microseconds, too much
// for the primary's hot loop of 'stored' ops, so triggers only queue the
// rowids whose URL changed (entries_search_queue) and the manifest writer
// indexes the queue in small background chunks. old_url is what the index
// holds for that rowid (null: nothing), which FTS5 needs to remove it.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create virtual table entries_search using fts5(url, content='entries', content_rowid='rowid', tokenize='trigram')`.execute(db)
  await sql`create table entries_search_queue (rid integer primary key, old_url text)`.execute(db)
  // "do nothing" on conflict: a row already queued keeps the old_url the index really holds.
  await sql`create trigger entries_search_insert after insert on entries begin
    insert into entries_search_queue (rid, old_url) values (new.rowid, null) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_delete after delete on entries begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_update after update of url on entries when old.url <> new.url begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  // Entries already recorded are indexed by the writer in the background, like new ones.
  await sql`insert into entries_search_queue (rid, old_url) select rowid, null from entries`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['entries_search_update', 'entries_search_delete', 'entries_search_insert']) await sql.raw(`drop trigger if exists ${t}`).execute(db)
  await sql`drop table if exists entries_search_queue`.execute(db)
  await sql`drop table if exists entries_search`.execute(db)
}
