// Passkeys, admins, invites, API tokens: managed by signed-in admins only.

import type { Hono } from 'hono'
import { AccessPage } from '../../views/access.tsx'
import { PATHS } from '../../views/paths.ts'
import { TEXT } from '../../views/text.ts'
import { requireAdmin } from './auth.ts'
import { chrome } from './cache-routes.ts'
import type { AdminEnv, Auth, Shared } from './context.ts'
import { field, finish, readBody, renderPage, takeFlash } from './http.ts'
import * as repo from './repo.ts'
import { hashToken, randomToken } from './secrets.ts'

export const INVITE_TTL_MS = 24 * 3600_000
const NAME_MAX = 64

type SessionAuth = Extract<Auth, { kind: 'session' }>

export function registerAccessRoutes(app: Hono<AdminEnv>, shared: Shared): void {
  const signedIn = requireAdmin(shared, { sessionOnly: true })
  const session = (auth: Auth) => auth as SessionAuth // sessionOnly guarantees it
  const back = PATHS.access

  app.get('/passkeys', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const now = shared.now()
    const [passkeys, admins, invites, tokens, sessions] = await Promise.all([
      repo.listPasskeys(shared.db, auth.adminId),
      repo.listAdmins(shared.db),
      repo.listOpenInvites(shared.db, now),
      repo.listApiTokens(shared.db),
      repo.countAdminSessions(shared.db, auth.adminId, now),
    ])
    const names = new Map(admins.map((a) => [a.id, a.name]))
    return renderPage(c, AccessPage, {
      chrome: (await chrome(c, shared, auth, 'access'))!,
      flash: takeFlash(c, shared),
      now,
      adminId: auth.adminId,
      passkeys: passkeys.map((p) => ({ id: p.id, name: p.name, createdAt: p.created_at, lastUsedAt: p.last_used_at, backedUp: p.backed_up === 1 })),
      admins,
      invites: invites.map((i) => ({ id: i.token_hash, createdAt: i.created_at, expiresAt: i.expires_at, createdBy: i.created_by_name ?? '—' })),
      tokens: tokens.map((t) => ({
        id: t.id,
        name: t.name,
        createdAt: t.created_at,
        lastUsedAt: t.last_used_at,
        revokedAt: t.revoked_at,
        createdBy: names.get(t.created_by) ?? '—',
      })),
      sessions,
    })
  })

  app.post('/passkeys/:id/rename', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const name = field(await readBody(c), 'name', NAME_MAX + 1)
    if (!name || name.length > NAME_MAX) return finish(c, shared, { ok: false, message: TEXT.flash.nameRequired, redirect: back })
    const ok = await shared.write((trx) => repo.renamePasskey(trx, auth.adminId, c.req.param('id'), name))
    if (!ok) return finish(c, shared, { ok: false, message: TEXT.flash.passkeyNotFound, status: 404, redirect: back })
    shared.log({ event: 'admin.passkey_renamed', admin: auth.adminId, passkey: c.req.param('id') })
    return finish(c, shared, { ok: true, message: TEXT.flash.passkeyRenamed(name), redirect: back })
  })

  app.post('/passkeys/:id/remove', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const id = c.req.param('id')
    const result = await shared.write((trx) => repo.removePasskey(trx, auth.adminId, id))
    if (result === 'last') return finish(c, shared, { ok: false, message: TEXT.flash.passkeyLast, status: 409, redirect: back })
    if (result === 'not-found') return finish(c, shared, { ok: false, message: TEXT.flash.passkeyNotFound, status: 404, redirect: back })
    shared.log({ event: 'admin.passkey_removed', admin: auth.adminId, passkey: id })
    return finish(c, shared, { ok: true, message: TEXT.flash.passkeyRemoved, redirect: back })
  })

  app.post('/admins/:id/remove', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const id = c.req.param('id')
    if (id === auth.adminId) return finish(c, shared, { ok: false, message: TEXT.flash.adminSelf, status: 409, redirect: back })
    if (!(await repo.getAdmin(shared.db, id))) return finish(c, shared, { ok: false, message: TEXT.errors.notFound, status: 404, redirect: back })
    if (!(await shared.write((trx) => repo.deleteAdmin(trx, id, shared.now())))) return finish(c, shared, { ok: false, message: TEXT.flash.adminLast, status: 409, redirect: back })
    shared.log({ event: 'admin.admin_removed', admin: auth.adminId, removed: id })
    return finish(c, shared, { ok: true, message: TEXT.flash.adminRemoved, redirect: back })
  })

  app.post('/invites', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const token = randomToken(24)
    const now = shared.now()
    await shared.write((trx) => repo.insertInvite(trx, { tokenHash: hashToken(token), createdBy: auth.adminId, createdAt: now, expiresAt: now + INVITE_TTL_MS }))
    const link = `${shared.config.publicOrigin}${PATHS.invite(token)}`
    shared.log({ event: 'admin.invite_created', admin: auth.adminId })
    return finish(c, shared, {
      ok: true,
      message: TEXT.flash.inviteCreated,
      secret: { label: TEXT.flash.inviteLinkLabel, value: link },
      data: { url: link, expiresAt: now + INVITE_TTL_MS },
      status: 201,
      redirect: `${back}#invites`,
    })
  })

  app.post('/invites/:id/revoke', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const ok = await shared.write((trx) => repo.deleteInvite(trx, c.req.param('id')))
    if (!ok) return finish(c, shared, { ok: false, message: TEXT.flash.inviteGone, status: 404, redirect: `${back}#invites` })
    shared.log({ event: 'admin.invite_revoked', admin: auth.adminId })
    return finish(c, shared, { ok: true, message: TEXT.flash.inviteRevoked, redirect: `${back}#invites` })
  })

  app.post('/tokens', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const name = field(await readBody(c), 'name', NAME_MAX + 1)
    if (!name || name.length > NAME_MAX) return finish(c, shared, { ok: false, message: TEXT.flash.nameRequired, redirect: `${back}#tokens` })
    const token = `caje_${randomToken(32)}`
    const id = `tok_${randomToken(12)}`
    await shared.write((trx) => repo.insertApiToken(trx, { id, name, tokenHash: hashToken(token), createdBy: auth.adminId, createdAt: shared.now() }))
    shared.log({ event: 'admin.token_created', admin: auth.adminId, token: id })
    return finish(c, shared, {
      ok: true,
      message: TEXT.flash.tokenCreated,
      secret: { label: TEXT.flash.tokenLabel, value: token },
      data: { id },
      status: 201,
      redirect: `${back}#tokens`,
    })
  })

  app.post('/tokens/:id/revoke', signedIn, async (c) => {
    const auth = session(c.get('auth'))
    const id = c.req.param('id')
    const ok = await shared.write((trx) => repo.revokeApiToken(trx, id, shared.now()))
    if (!ok) return finish(c, shared, { ok: false, message: TEXT.flash.tokenGone, status: 404, redirect: `${back}#tokens` })
    shared.log({ event: 'admin.token_revoked', admin: auth.adminId, token: id })
    return finish(c, shared, { ok: true, message: TEXT.flash.tokenRevoked, redirect: `${back}#tokens` })
  })
}
