// Frozen in time (see 2026112401_initial.ts).
//
// Holdings name their entry by an integer id instead of a copy of its text key.
//
// Every 'stored' op inserts a holding. Keyed by (key, variant, node_id), that
// was a rowid table plus a primary-key index holding a copy of the URL-long
// key, at a random place in it: one more random B-tree page per op, and a
// lookup of the entry by key for the foreign key. Keyed by the entry's id
// (a rowid alias), a new entry's holdings land at the end of a small
// WITHOUT ROWID table, and the foreign key checks a rowid.
//
// `entries` gets `id integer primary key`, the rowid made explicit: VACUUM
// may renumber the rowids of a table without one, which would break every
// holding (and the URL search index, which already names rows by rowid). The
// table is rebuilt with each row keeping its rowid, so the search index and
// its queue stay valid; (key, variant) stays unique through entries_key.
// Counts (entries_count, node_holdings) are untouched: the same rows are
// copied with their triggers dropped meanwhile.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

const ENTRY_COLUMNS = `"key" text not null, "variant" text not null, "host" text not null, "url" text not null,
  "status" integer not null, "size" integer not null, "content_type" text default '' not null,
  "stored_at" integer not null, "stale_at" integer not null, "delete_at" integer not null,
  "tags" text default '[]' not null, "vary_headers" text default '{}' not null`

const ENTRY_FIELDS = 'key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers'

const TRIGGERS = ['entries_search_insert', 'entries_search_delete', 'entries_search_update', 'entries_count_insert', 'entries_count_delete', 'node_holdings_insert', 'node_holdings_delete']

async function dropTriggers(db: Kysely<any>): Promise<void> {
  for (const t of TRIGGERS) await sql.raw(`drop trigger if exists ${t}`).execute(db)
}

/** The triggers of 2026120102 (search queue) and 2026120114 (counts), as they were. */
async function createTriggers(db: Kysely<any>): Promise<void> {
  await sql`create trigger entries_search_insert after insert on entries begin
    insert into entries_search_queue (rid, old_url) values (new.rowid, null) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_delete after delete on entries begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_search_update after update of url on entries when old.url <> new.url begin
    insert into entries_search_queue (rid, old_url) values (old.rowid, old.url) on conflict (rid) do nothing;
  end`.execute(db)
  await sql`create trigger entries_count_insert after insert on entries begin
    update entries_count set n = n + 1 where id = 0;
  end`.execute(db)
  await sql`create trigger entries_count_delete after delete on entries begin
    update entries_count set n = n - 1 where id = 0;
  end`.execute(db)
  await sql`create trigger node_holdings_insert after insert on entry_nodes begin
    insert into node_holdings (node_id, n) values (new.node_id, 1) on conflict (node_id) do update set n = n + 1;
  end`.execute(db)
  await sql`create trigger node_holdings_delete after delete on entry_nodes begin
    update node_holdings set n = n - 1 where node_id = old.node_id;
  end`.execute(db)
}

export async function up(db: Kysely<any>): Promise<void> {
  await dropTriggers(db)
  // The holdings go first: dropping `entries` while a table references it would cascade into them.
  await sql`create table entry_nodes_moving as
    select e.rowid as entry_id, h.node_id, h.stored_at from entry_nodes h join entries e on e.key = h.key and e.variant = h.variant`.execute(db)
  await sql`drop table entry_nodes`.execute(db)

  await sql.raw(`create table entries_moving (id integer primary key, ${ENTRY_COLUMNS})`).execute(db)
  await sql.raw(`insert into entries_moving (id, ${ENTRY_FIELDS}) select rowid, ${ENTRY_FIELDS} from entries`).execute(db)
  await sql`drop table entries`.execute(db)
  await sql`alter table entries_moving rename to entries`.execute(db)
  await sql`create unique index entries_key on entries (key, variant)`.execute(db)
  await sql`create index entries_stored_at on entries (stored_at, key, variant)`.execute(db)
  await sql`create index entries_host on entries (host)`.execute(db)
  await sql`create index entries_url on entries (url)`.execute(db)

  await sql`create table entry_nodes (
    entry_id integer not null references entries (id) on delete cascade,
    node_id text not null,
    stored_at integer not null,
    primary key (entry_id, node_id)
  ) without rowid`.execute(db)
  // "Forget everything node X holds" (its clear_fs, forget node) and the list's per-node filter.
  await sql`create index entry_nodes_node on entry_nodes (node_id)`.execute(db)
  await sql`insert into entry_nodes (entry_id, node_id, stored_at) select entry_id, node_id, stored_at from entry_nodes_moving`.execute(db)
  await sql`drop table entry_nodes_moving`.execute(db)
  await createTriggers(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await dropTriggers(db)
  await sql`create table entry_nodes_moving as
    select e.key, e.variant, h.node_id, h.stored_at from entry_nodes h join entries e on e.id = h.entry_id`.execute(db)
  await sql`drop table entry_nodes`.execute(db)

  await sql.raw(`create table entries_moving (${ENTRY_COLUMNS}, constraint "entries_pk" primary key ("key", "variant"))`).execute(db)
  await sql.raw(`insert into entries_moving (rowid, ${ENTRY_FIELDS}) select id, ${ENTRY_FIELDS} from entries`).execute(db)
  await sql`drop table entries`.execute(db)
  await sql`alter table entries_moving rename to entries`.execute(db)
  await sql`create index "entries_stored_at" on "entries" ("stored_at", "key", "variant")`.execute(db)
  await sql`create index "entries_host" on "entries" ("host")`.execute(db)
  await sql`create index "entries_url" on "entries" ("url")`.execute(db)

  await sql`create table "entry_nodes" ("key" text not null, "variant" text not null, "node_id" text not null, "stored_at" integer not null,
    constraint "entry_nodes_pk" primary key ("key", "variant", "node_id"),
    constraint "entry_nodes_entry_fk" foreign key ("key", "variant") references "entries" ("key", "variant") on delete cascade)`.execute(db)
  await sql`create index "entry_nodes_node" on "entry_nodes" ("node_id")`.execute(db)
  await sql`insert into entry_nodes (key, variant, node_id, stored_at) select key, variant, node_id, stored_at from entry_nodes_moving`.execute(db)
  await sql`drop table entry_nodes_moving`.execute(db)
  await createTriggers(db)
}
