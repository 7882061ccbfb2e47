// Frozen in time (see 2026112401_initial.ts).
//
// The number of entries, kept in a one-row table by triggers in the same
// transaction as every insert and delete, so the admin list's unfiltered
// total is one row read instead of a count over an index. That count was
// the last reader of entries_delete_at (the narrowest index, which SQLite
// counted): every stored op inserted into it at a random place (lifetimes
// vary), one B-tree page more to write per op. It goes; the expiry prune,
// which no node sends on a schedule, scans instead.
//
// A trigger fires only for a row really inserted or deleted: an upsert that
// takes its DO UPDATE branch, or an INSERT OR IGNORE that ignores, counts
// nothing.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table entries_count (id integer primary key check (id = 0), n integer not null)`.execute(db)
  await sql`insert into entries_count (id, n) select 0, count(*) from entries`.execute(db)
  await sql`create trigger entries_count_insert after insert on entries begin
    update entries_count set n = n + 1 where id = 0;
  end`.execute(db)
  await sql`create trigger entries_count_delete after delete on entries begin
    update entries_count set n = n - 1 where id = 0;
  end`.execute(db)
  await db.schema.dropIndex('entries_delete_at').ifExists().execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('entries_delete_at').ifNotExists().on('entries').column('delete_at').execute()
  await sql`drop trigger if exists entries_count_delete`.execute(db)
  await sql`drop trigger if exists entries_count_insert`.execute(db)
  await sql`drop table if exists entries_count`.execute(db)
}
