// Every read and write the admin makes to the manifest's admin tables. Writes
// live only here so they can be routed to the primary later (a replica must not
// write to the LiteFS-replicated file; see DESIGN.md "Cluster").
// TODO(Admin UI with passkey sign-in): route writes through the cluster writer on replicas.
//
// Reads take the database; writes take a transaction (`Tx`), which callers get
// from `shared.write` (writeWhenFree in manifest/ops.ts): it never blocks the
// event loop on another process's write lock, so the proxy keeps serving while
// an admin write waits. A plain Kysely handle is not a Tx, so a write that
// skips that path does not type-check.

import type { Kysely, Selectable, Transaction } from 'kysely'
import type { Database } from '../manifest/database.ts'

export type AdminRow = Selectable<Database['admins']>
export type PasskeyRow = Selectable<Database['passkeys']>
export type SessionRow = Selectable<Database['sessions']>
export type ChallengeRow = Selectable<Database['challenges']>
export type InviteRow = Selectable<Database['invites']>
export type ApiTokenRow = Selectable<Database['api_tokens']>

type Db = Kysely<Database>
/** A write transaction opened by writeWhenFree (see the top of this file). */
export type Tx = Transaction<Database>

// ── admins ──────────────────────────────────────────────────────────────

export async function insertAdmin(trx: Tx, admin: { id: string; name: string; createdAt: number }): Promise<void> {
  await trx.insertInto('admins').values({ id: admin.id, name: admin.name, created_at: admin.createdAt }).execute()
}

export async function getAdmin(db: Db, id: string): Promise<AdminRow | undefined> {
  return db.selectFrom('admins').selectAll().where('id', '=', id).executeTakeFirst()
}

/** The admin the password signs in as: the first one created. */
export async function firstAdmin(db: Db): Promise<AdminRow | undefined> {
  return db.selectFrom('admins').selectAll().orderBy('created_at').orderBy('id').limit(1).executeTakeFirst()
}

export interface AdminSummary {
  id: string
  name: string
  createdAt: number
  passkeys: number
}

export async function listAdmins(db: Db): Promise<AdminSummary[]> {
  const rows = await db
    .selectFrom('admins')
    .leftJoin('passkeys', 'passkeys.admin_id', 'admins.id')
    .select(({ fn }) => ['admins.id', 'admins.name', 'admins.created_at', fn.count<number>('passkeys.id').as('passkeys')])
    .groupBy(['admins.id', 'admins.name', 'admins.created_at'])
    .orderBy('admins.created_at')
    .execute()
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: Number(r.created_at), passkeys: Number(r.passkeys) }))
}

/**
 * Remove an admin and everything they could still use, in the caller's one
 * transaction: passkeys, sessions, pending challenges, the API tokens they
 * created (revoked at `at`, kept for the record) and their open invites (an
 * unused link they kept would enrol them again). Refused (false) for the last
 * admin holding passkeys.
 */
export async function deleteAdmin(trx: Tx, id: string, at: number): Promise<boolean> {
  const others = await trx
    .selectFrom('passkeys')
    .select(({ fn }) => fn.countAll<number>().as('n'))
    .where('admin_id', '!=', id)
    .executeTakeFirstOrThrow()
  if (Number(others.n) === 0) return false
  await trx.deleteFrom('sessions').where('admin_id', '=', id).execute()
  await trx.deleteFrom('challenges').where('admin_id', '=', id).execute()
  await trx.deleteFrom('passkeys').where('admin_id', '=', id).execute()
  await trx.updateTable('api_tokens').set({ revoked_at: at }).where('created_by', '=', id).where('revoked_at', 'is', null).execute()
  await trx.deleteFrom('invites').where('created_by', '=', id).where('used_at', 'is', null).execute()
  const res = await trx.deleteFrom('admins').where('id', '=', id).executeTakeFirst()
  return Number(res.numDeletedRows) === 1
}

// ── passkeys ────────────────────────────────────────────────────────────

export async function countPasskeys(db: Db, adminId?: string): Promise<number> {
  let q = db.selectFrom('passkeys').select(({ fn }) => fn.countAll<number>().as('n'))
  if (adminId !== undefined) q = q.where('admin_id', '=', adminId)
  const row = await q.executeTakeFirstOrThrow()
  return Number(row.n)
}

export async function listPasskeys(db: Db, adminId: string): Promise<PasskeyRow[]> {
  return db.selectFrom('passkeys').selectAll().where('admin_id', '=', adminId).orderBy('created_at').execute()
}

export async function getPasskey(db: Db, id: string): Promise<PasskeyRow | undefined> {
  return db.selectFrom('passkeys').selectAll().where('id', '=', id).executeTakeFirst()
}

export interface NewPasskey {
  id: string
  adminId: string
  publicKey: Uint8Array
  counter: number
  transports: string[] | undefined
  deviceType: string
  backedUp: boolean
  name: string
  createdAt: number
}

export async function insertPasskey(trx: Tx, p: NewPasskey): Promise<void> {
  await trx
    .insertInto('passkeys')
    .values({
      id: p.id,
      admin_id: p.adminId,
      public_key: Buffer.from(p.publicKey),
      counter: p.counter,
      transports: p.transports ? JSON.stringify(p.transports) : null,
      device_type: p.deviceType,
      backed_up: p.backedUp ? 1 : 0,
      name: p.name,
      created_at: p.createdAt,
      last_used_at: null,
    })
    .execute()
}

/** After a verified sign-in: the authenticator's new signature counter and backup state. */
export async function recordPasskeyUse(trx: Tx, id: string, use: { counter: number; backedUp: boolean; at: number }): Promise<void> {
  await trx
    .updateTable('passkeys')
    .set({ counter: use.counter, backed_up: use.backedUp ? 1 : 0, last_used_at: use.at })
    .where('id', '=', id)
    .execute()
}

export async function renamePasskey(trx: Tx, adminId: string, id: string, name: string): Promise<boolean> {
  const res = await trx.updateTable('passkeys').set({ name }).where('id', '=', id).where('admin_id', '=', adminId).executeTakeFirst()
  return Number(res.numUpdatedRows) === 1
}

export type RemovePasskeyResult = 'removed' | 'not-found' | 'last'

/** Remove one of the admin's passkeys; never their last one. */
export async function removePasskey(trx: Tx, adminId: string, id: string): Promise<RemovePasskeyResult> {
  const own = await trx.selectFrom('passkeys').select('id').where('admin_id', '=', adminId).execute()
  if (!own.some((p) => p.id === id)) return 'not-found'
  if (own.length <= 1) return 'last'
  await trx.deleteFrom('passkeys').where('id', '=', id).where('admin_id', '=', adminId).execute()
  return 'removed'
}

// ── sessions ────────────────────────────────────────────────────────────

export async function insertSession(
  trx: Tx,
  s: { idHash: string; adminId: string; csrfToken: string; createdAt: number; expiresAt: number; userAgent: string | null },
): Promise<void> {
  await trx
    .insertInto('sessions')
    .values({
      id_hash: s.idHash,
      admin_id: s.adminId,
      csrf_token: s.csrfToken,
      created_at: s.createdAt,
      expires_at: s.expiresAt,
      last_seen_at: s.createdAt,
      user_agent: s.userAgent,
    })
    .execute()
}

export async function getSession(db: Db, idHash: string): Promise<SessionRow | undefined> {
  return db.selectFrom('sessions').selectAll().where('id_hash', '=', idHash).executeTakeFirst()
}

/** Sliding expiry: push expires_at forward on use. */
export async function touchSession(trx: Tx, idHash: string, at: number, expiresAt: number): Promise<void> {
  await trx.updateTable('sessions').set({ last_seen_at: at, expires_at: expiresAt }).where('id_hash', '=', idHash).execute()
}

export async function deleteSession(trx: Tx, idHash: string): Promise<void> {
  await trx.deleteFrom('sessions').where('id_hash', '=', idHash).execute()
}

export async function deleteAdminSessions(trx: Tx, adminId: string): Promise<number> {
  const res = await trx.deleteFrom('sessions').where('admin_id', '=', adminId).executeTakeFirst()
  return Number(res.numDeletedRows)
}

export async function countAdminSessions(db: Db, adminId: string, now: number): Promise<number> {
  const row = await db
    .selectFrom('sessions')
    .select(({ fn }) => fn.countAll<number>().as('n'))
    .where('admin_id', '=', adminId)
    .where('expires_at', '>', now)
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

// ── challenges ──────────────────────────────────────────────────────────

export async function insertChallenge(
  trx: Tx,
  ch: { id: string; challenge: string; kind: 'registration' | 'authentication'; adminId: string | null; expiresAt: number },
): Promise<void> {
  await trx
    .insertInto('challenges')
    .values({ id: ch.id, challenge: ch.challenge, kind: ch.kind, admin_id: ch.adminId, expires_at: ch.expiresAt })
    .execute()
}

/**
 * Consume a challenge: it is deleted whatever happens next, so it can be
 * answered at most once. Returns it only while it has not expired.
 */
export async function takeChallenge(trx: Tx, id: string, now: number): Promise<ChallengeRow | undefined> {
  const row = await trx.deleteFrom('challenges').where('id', '=', id).returningAll().executeTakeFirst()
  if (!row || Number(row.expires_at) <= now) return undefined
  return row
}

// ── housekeeping ────────────────────────────────────────────────────────

/** Drop expired challenges, sessions and invites; cheap, run on sign-in paths. */
export async function deleteExpired(trx: Tx, now: number): Promise<void> {
  await trx.deleteFrom('challenges').where('expires_at', '<=', now).execute()
  await trx.deleteFrom('sessions').where('expires_at', '<=', now).execute()
  await trx.deleteFrom('invites').where('expires_at', '<=', now).where('used_at', 'is', null).execute()
}

// ── invites ─────────────────────────────────────────────────────────────

export async function insertInvite(trx: Tx, inv: { tokenHash: string; createdBy: string; createdAt: number; expiresAt: number }): Promise<void> {
  await trx
    .insertInto('invites')
    .values({ token_hash: inv.tokenHash, created_by: inv.createdBy, created_at: inv.createdAt, expires_at: inv.expiresAt, used_at: null })
    .execute()
}

/** An invite that can still be used. */
export async function getOpenInvite(db: Db, tokenHash: string, now: number): Promise<InviteRow | undefined> {
  return db
    .selectFrom('invites')
    .selectAll()
    .where('token_hash', '=', tokenHash)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst()
}

/** Mark an invite used; false when it was used or expired in the meantime (one use only). */
export async function useInvite(trx: Tx, tokenHash: string, now: number): Promise<boolean> {
  const res = await trx
    .updateTable('invites')
    .set({ used_at: now })
    .where('token_hash', '=', tokenHash)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst()
  return Number(res.numUpdatedRows) === 1
}

export async function listOpenInvites(db: Db, now: number): Promise<Array<InviteRow & { created_by_name: string | null }>> {
  return db
    .selectFrom('invites')
    .leftJoin('admins', 'admins.id', 'invites.created_by')
    .selectAll('invites')
    .select('admins.name as created_by_name')
    .where('invites.used_at', 'is', null)
    .where('invites.expires_at', '>', now)
    .orderBy('invites.created_at', 'desc')
    .execute()
}

export async function deleteInvite(trx: Tx, tokenHash: string): Promise<boolean> {
  const res = await trx.deleteFrom('invites').where('token_hash', '=', tokenHash).where('used_at', 'is', null).executeTakeFirst()
  return Number(res.numDeletedRows) === 1
}

// ── API tokens ──────────────────────────────────────────────────────────

export async function insertApiToken(
  trx: Tx,
  t: { id: string; name: string; tokenHash: string; createdBy: string; createdAt: number },
): Promise<void> {
  await trx
    .insertInto('api_tokens')
    .values({ id: t.id, name: t.name, token_hash: t.tokenHash, created_by: t.createdBy, created_at: t.createdAt, last_used_at: null, revoked_at: null })
    .execute()
}

export async function findActiveApiToken(db: Db, tokenHash: string): Promise<ApiTokenRow | undefined> {
  return db.selectFrom('api_tokens').selectAll().where('token_hash', '=', tokenHash).where('revoked_at', 'is', null).executeTakeFirst()
}

export async function touchApiToken(trx: Tx, id: string, at: number): Promise<void> {
  await trx.updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', id).execute()
}

export async function listApiTokens(db: Db): Promise<ApiTokenRow[]> {
  return db.selectFrom('api_tokens').selectAll().orderBy('revoked_at').orderBy('created_at', 'desc').execute()
}

export async function revokeApiToken(trx: Tx, id: string, at: number): Promise<boolean> {
  const res = await trx.updateTable('api_tokens').set({ revoked_at: at }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst()
  return Number(res.numUpdatedRows) === 1
}

export async function getSessionWithAdmin(db: Db, idHash: string): Promise<(SessionRow & { admin_name: string }) | undefined> {
  return db
    .selectFrom('sessions')
    .innerJoin('admins', 'admins.id', 'sessions.admin_id')
    .selectAll('sessions')
    .select('admins.name as admin_name')
    .where('sessions.id_hash', '=', idHash)
    .executeTakeFirst()
}
