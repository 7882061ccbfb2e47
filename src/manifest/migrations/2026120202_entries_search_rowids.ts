// Frozen in time (see 2026112401_initial.ts).
//
// The URL search index keeps which rows hold each trigram, not where in the
// URL (FTS5 `detail=none`). The admin filter asks for rows holding every
// trigram of its text (search.ts) and checks each candidate's URL itself, so
// positions bought nothing; storing them made each indexed URL about a
// quarter more of the manifest writer's time (tokens flushed and merged at
// every commit). FTS5 cannot change an index's detail in place: it is made
// again, empty, and every entry is queued for the writer to index in the
// background, as when the index was first made (2026120102); the filter
// reads the queue meanwhile.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

async function remake(db: Kysely<any>, detail: 'none' | 'full'): Promise<void> {
  await sql`drop table if exists entries_search`.execute(db)
  await sql
    .raw(`create virtual table entries_search using fts5(url, content='entries', content_rowid='rowid', tokenize='trigram', detail=${detail})`)
    .execute(db)
  // The new index holds nothing: no old URL to take out, and a deleted entry's row is not queued.
  await sql`delete from entries_search_queue`.execute(db)
  await sql`insert into entries_search_queue (rid, old_url) select rowid, null from entries`.execute(db)
}

export async function up(db: Kysely<any>): Promise<void> {
  await remake(db, 'none')
}

export async function down(db: Kysely<any>): Promise<void> {
  await remake(db, 'full')
}
