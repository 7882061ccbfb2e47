// Frozen in time: this file describes the schema as it was when written and
// never imports application code (a later refactor must not change what an
// old migration does). Hence Kysely<any>.

import type { Kysely } from 'kysely'
import { sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('nodes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('region', 'text', (c) => c.notNull())
    .addColumn('internal_url', 'text', (c) => c.notNull())
    .addColumn('started_at', 'integer', (c) => c.notNull())
    .addColumn('last_seen_at', 'integer', (c) => c.notNull())
    .execute()

  await db.schema
    .createTable('entries')
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('variant', 'text', (c) => c.notNull())
    .addColumn('host', 'text', (c) => c.notNull())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('status', 'integer', (c) => c.notNull())
    .addColumn('size', 'integer', (c) => c.notNull())
    .addColumn('content_type', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('stored_at', 'integer', (c) => c.notNull())
    .addColumn('stale_at', 'integer', (c) => c.notNull())
    .addColumn('delete_at', 'integer', (c) => c.notNull())
    .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('vary_headers', 'text', (c) => c.notNull().defaultTo('{}'))
    .addPrimaryKeyConstraint('entries_pk', ['key', 'variant'])
    .execute()
  // The admin list pages newest first. With key and variant in the index, a
  // page (even at OFFSET 99,950) is found by walking the index alone.
  await db.schema.createIndex('entries_stored_at').on('entries').columns(['stored_at', 'key', 'variant']).execute()
  await db.schema.createIndex('entries_host').on('entries').column('host').execute()
  await db.schema.createIndex('entries_url').on('entries').column('url').execute()

  await db.schema
    .createTable('entry_nodes')
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('variant', 'text', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('stored_at', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('entry_nodes_pk', ['key', 'variant', 'node_id'])
    // A purge or clear deletes entries; the holdings go with them in the same statement.
    .addForeignKeyConstraint('entry_nodes_entry_fk', ['key', 'variant'], 'entries', ['key', 'variant'], (fk) => fk.onDelete('cascade'))
    .execute()
  // "Forget everything node X holds" (its clear_fs) without a full scan.
  await db.schema.createIndex('entry_nodes_node').on('entry_nodes').column('node_id').execute()

  await db.schema
    .createTable('purges')
    .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('request_id', 'text', (c) => c.notNull().unique())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('url', 'prefix', 'tag', 'all')`))
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('host', 'text')
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('node_id', 'text', (c) => c.notNull())
    .execute()

  // Admin tables: the admin UI (src/admin/repo.ts) is written against exactly these names.
  await db.schema
    .createTable('admins')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .execute()

  await db.schema
    .createTable('passkeys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('admin_id', 'text', (c) => c.notNull().references('admins.id').onDelete('cascade'))
    .addColumn('public_key', 'blob', (c) => c.notNull())
    .addColumn('counter', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('transports', 'text')
    .addColumn('device_type', 'text', (c) => c.notNull())
    .addColumn('backed_up', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('last_used_at', 'integer')
    .execute()
  await db.schema.createIndex('passkeys_admin').on('passkeys').column('admin_id').execute()

  await db.schema
    .createTable('sessions')
    .addColumn('id_hash', 'text', (c) => c.primaryKey())
    .addColumn('admin_id', 'text', (c) => c.notNull().references('admins.id').onDelete('cascade'))
    .addColumn('csrf_token', 'text', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('expires_at', 'integer', (c) => c.notNull())
    .addColumn('last_seen_at', 'integer', (c) => c.notNull())
    .addColumn('user_agent', 'text')
    .execute()
  await db.schema.createIndex('sessions_admin').on('sessions').column('admin_id').execute()
  await db.schema.createIndex('sessions_expires_at').on('sessions').column('expires_at').execute()

  await db.schema
    .createTable('challenges')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('challenge', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('registration', 'authentication')`))
    .addColumn('admin_id', 'text', (c) => c.references('admins.id').onDelete('cascade'))
    .addColumn('expires_at', 'integer', (c) => c.notNull())
    .execute()
  await db.schema.createIndex('challenges_expires_at').on('challenges').column('expires_at').execute()

  await db.schema
    .createTable('invites')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('expires_at', 'integer', (c) => c.notNull())
    .addColumn('used_at', 'integer')
    .execute()

  await db.schema
    .createTable('api_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'integer', (c) => c.notNull())
    .addColumn('last_used_at', 'integer')
    .addColumn('revoked_at', 'integer')
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['api_tokens', 'invites', 'challenges', 'sessions', 'passkeys', 'admins', 'purges', 'entry_nodes', 'entries', 'nodes']) {
    await db.schema.dropTable(table).ifExists().execute()
  }
}
