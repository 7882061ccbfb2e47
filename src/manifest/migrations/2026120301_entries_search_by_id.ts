// Frozen in time (see 2026112401_initial.ts).
//
// New entries reach the URL search index by id range instead of through its
// queue. Every stored op of a new entry put a row in entries_search_queue (a
// trigger) and the indexing took it out again: two more B-tree writes per new
// entry, and the queue read back and joined to `entries` row by row. A new
// entry's id is past every id the index has seen (SQLite gives a new row the
// largest rowid plus one), so one number says which entries the index has yet
// to take: entries_search_through. Every entry with an id up to it is in the
// index or queued; every entry past it is not in the index, and the writer
// indexes them in id order, moving the number on (search.ts).
//
// The queue keeps what a range cannot say, and only at or below the number:
// a URL changed or deleted (what the index holds for that row, to take out),
// and a new row that took the id of a deleted one (SQLite reuses the largest
// id once its row is gone). Past the number the triggers do nothing: the index
// holds nothing for those rows, and the range takes their URL as it is then.
//
// On a file with rows: the number starts past every entry and every queued
// row, so what is queued stays queued and is indexed as before.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

const TRIGGERS = ['entries_search_insert', 'entries_search_delete', 'entries_search_update']
const THROUGH = '(select through from entries_search_through where id = 0)'

async function dropTriggers(db: Kysely<any>): Promise<void> {
  for (const t of TRIGGERS) await sql.raw(`drop trigger if exists ${t}`).execute(db)
}

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table entries_search_through (id integer primary key check (id = 0), through integer not null)`.execute(db)
  await sql`insert into entries_search_through (id, through)
    select 0, max(coalesce((select max(id) from entries), 0), coalesce((select max(rid) from entries_search_queue), 0))`.execute(db)
  await dropTriggers(db)
  // "do nothing" on conflict: a row already queued keeps the old_url the index really holds.
  await sql.raw(`create trigger entries_search_insert after insert on entries when new.id <= ${THROUGH} begin
    insert into entries_search_queue (rid, old_url) values (new.id, null) on conflict (rid) do nothing;
  end`).execute(db)
  await sql.raw(`create trigger entries_search_delete after delete on entries when old.id <= ${THROUGH} begin
    insert into entries_search_queue (rid, old_url) values (old.id, old.url) on conflict (rid) do nothing;
  end`).execute(db)
  await sql.raw(`create trigger entries_search_update after update of url on entries when old.url <> new.url and old.id <= ${THROUGH} begin
    insert into entries_search_queue (rid, old_url) values (old.id, old.url) on conflict (rid) do nothing;
  end`).execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await dropTriggers(db)
  // The triggers of 2026120102, as they were: every change queued.
  await sql`create trigger entries_search_insert after insert on entries begin
    insert into entries_search_queue (rid, old_url) values (new.rowid, null) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_delete after delete on entries begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_update after update of url on entries when old.url <> new.url begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  // The entries the range had yet to index, queued as new.
  await sql.raw(`insert into entries_search_queue (rid, old_url) select id, null from entries where id > ${THROUGH} on conflict (rid) do nothing`).execute(db)
  await sql`drop table entries_search_through`.execute(db)
}
