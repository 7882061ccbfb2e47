// Frozen in time (see 2026112401_initial.ts).
//
// Counts kept by triggers, in the same transaction as every insert and
// delete, so the admin list reads one row where it counted an index:
//
// - entries_count: the number of entries (one row, id 0), the list's
//   unfiltered total. That count was the last reader of entries_delete_at
//   (the narrowest index, which SQLite counted): every stored op inserted
//   into it at a random place (lifetimes vary), one B-tree page more to write
//   per op. It goes; the expiry prune, which no node sends on a schedule,
//   scans instead.
// - node_holdings: how many variants each node holds, which the list shows
//   per node. Counting entry_nodes_node for three nodes at 1,000,000
//   entries walked a million index entries on every list request.
//
// A trigger fires only for a row really inserted or deleted: an upsert that
// takes its DO UPDATE branch, or an INSERT OR IGNORE that ignores, counts
// nothing. Cascaded deletes (a purge removing entries) fire the holdings'
// delete trigger too.

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

  await sql`create table node_holdings (node_id text primary key, n integer not null) without rowid`.execute(db)
  await sql`insert into node_holdings (node_id, n) select node_id, count(*) from entry_nodes group by node_id`.execute(db)
  await sql`create trigger node_holdings_insert after insert on entry_nodes begin
    insert into node_holdings (node_id, n) values (new.node_id, 1) on conflict (node_id) do update set n = n + 1;
  end`.execute(db)
  await sql`create trigger node_holdings_delete after delete on entry_nodes begin
    update node_holdings set n = n - 1 where node_id = old.node_id;
  end`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['node_holdings_delete', 'node_holdings_insert', 'entries_count_delete', 'entries_count_insert']) await sql.raw(`drop trigger if exists ${t}`).execute(db)
  await sql`drop table if exists node_holdings`.execute(db)
  await sql`drop table if exists entries_count`.execute(db)
  await db.schema.createIndex('entries_delete_at').ifNotExists().on('entries').column('delete_at').execute()
}
