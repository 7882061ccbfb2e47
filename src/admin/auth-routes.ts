// Sign-in page, password enrolment, passkey ceremonies, sign-out, invites.

import type { Context, Hono } from 'hono'
import { getCookie } from 'hono/cookie'
import { InvitePage } from '../../views/invite.tsx'
import { PATHS } from '../../views/paths.ts'
import { TEXT } from '../../views/text.ts'
import { authorize, clearSessionCookie, guardAttempt, lookupSession, requireAdmin, startSession } from './auth.ts'
import type { AdminEnv, Shared } from './context.ts'
import { field, finish, jsonError, readBody, renderPage, safeNext, setFlash, takeFlash, type Body } from './http.ts'
import {
  authenticationOptions,
  newAdminId,
  registrationOptions,
  verifyAuthentication,
  verifyRegistration,
  type RegistrationTarget,
} from './passkeys.ts'
import * as repo from './repo.ts'
import { bearerToken, secretEquals } from '../bearer.ts'
import { hashToken, normaliseCode } from './secrets.ts'
import { passwordMode, renderSignIn } from './sign-in-page.ts'

const NAME_MAX = 64


/** A ceremony's verify step answers the page script with JSON; the message waits for the next page. */
function ceremonyDone(c: Context, shared: Shared, message: string, redirect: string): Response {
  setFlash(c, shared, { kind: 'ok', text: message })
  return c.json({ ok: true, message, redirect })
}

export function registerAuthRoutes(app: Hono<AdminEnv>, shared: Shared): void {
  const signedIn = requireAdmin(shared, { sessionOnly: true })

  app.get('/auth', async (c) => {
    const next = safeNext(c.req.query('next'), PATHS.list)
    const found = await lookupSession(c, shared)
    if (found.state === 'ok') return c.redirect(next, 303)
    if (found.state === 'ended') clearSessionCookie(c, shared)
    return renderSignIn(c, shared, { next, flash: takeFlash(c, shared) })
  })

  // Password (or start-up code) sign-in: enrols the first admin; afterwards only with CAJE_ALLOW_PASSWORD_LOGIN.
  app.post('/auth/password', async (c) => {
    const refused = guardAttempt(c, shared, PATHS.auth)
    if (refused) return refused
    const body = await readBody(c)
    const back = (message: string, status: 400 | 401 | 403) =>
      finish(c, shared, { ok: false, message, status, redirect: PATHS.auth })
    const given = field(body, 'password', 1024)
    const ip = shared.clientIp(c)
    const passkeysExist = (await repo.countPasskeys(shared.db)) > 0
    const mode = passwordMode(shared, passkeysExist)
    if (mode === 'none') return back(TEXT.flash.passwordOff, 403)
    if (mode === 'code-used') return back(TEXT.flash.codeUsed, 403)
    const expected = mode === 'enrol-code' ? normaliseCode(shared.enrolment.code ?? '') : shared.config.adminPassword ?? ''
    const attempt = mode === 'enrol-code' ? normaliseCode(given) : given
    // Compared even when empty, so a wrong guess costs the same as a right one.
    if (!secretEquals(attempt, expected) || !given || !expected) {
      shared.log({ event: 'admin.password_refused', mode, ip })
      return back(TEXT.flash.passwordWrong, 401)
    }
    if (mode === 'enrol-code') shared.enrolment.used = true

    let admin = await repo.firstAdmin(shared.db)
    if (!admin) {
      const now = shared.now()
      const created = { id: newAdminId(), name: field(body, 'name', NAME_MAX) || 'admin', createdAt: now }
      await shared.write((trx) => repo.insertAdmin(trx, created))
      admin = { id: created.id, name: created.name, created_at: now }
      shared.log({ event: 'admin.enrolled', admin: admin.id, via: mode })
    }
    await startSession(c, shared, admin.id)
    shared.log({ event: 'admin.signed_in', admin: admin.id, via: 'password', ip })
    const hasPasskey = (await repo.countPasskeys(shared.db, admin.id)) > 0
    return finish(c, shared, {
      ok: true,
      message: hasPasskey ? TEXT.flash.signedIn : mode === 'enrol-code' ? TEXT.flash.codeWelcome : TEXT.flash.passwordWelcome,
      redirect: hasPasskey ? safeNext(field(body, 'next'), PATHS.list) : PATHS.access,
    })
  })

  app.post('/auth/options', async (c) => {
    const refused = guardAttempt(c, shared, PATHS.auth)
    if (refused) return refused
    return c.json(await authenticationOptions(shared))
  })

  app.post('/auth/verify', async (c) => {
    const refused = guardAttempt(c, shared, PATHS.auth)
    if (refused) return refused
    const body = await readBody(c)
    const result = await verifyAuthentication(shared, { challengeId: field(body, 'challengeId', 128), response: body.response })
    const ip = shared.clientIp(c)
    if (!result.ok) {
      shared.log({ event: 'admin.passkey_refused', ceremony: 'authentication', reason: result.reason, ip })
      return jsonError(c, result.status, result.message)
    }
    await startSession(c, shared, result.value.adminId)
    shared.log({ event: 'admin.signed_in', admin: result.value.adminId, via: 'passkey', passkey: result.value.passkeyId, ip })
    return ceremonyDone(c, shared, TEXT.flash.signedIn, safeNext(field(body, 'next'), PATHS.list))
  })

  // Registration: an invitee creating their account (body carries the invite),
  // or the signed-in admin adding a passkey (session + CSRF token).
  app.post('/register/options', async (c) => {
    const target = await registrationTarget(c, shared)
    if (target instanceof Response) return target
    const result = await registrationOptions(shared, target)
    if (!result.ok) return jsonError(c, result.status, result.message)
    return c.json(result.value)
  })

  app.post('/register/verify', async (c) => {
    const target = await registrationTarget(c, shared)
    if (target instanceof Response) return target
    const body = await readBody(c)
    const result = await verifyRegistration(shared, {
      challengeId: field(body, 'challengeId', 128),
      response: body.response,
      passkeyName: field(body, 'name', NAME_MAX),
      target,
    })
    const ip = shared.clientIp(c)
    if (!result.ok) {
      shared.log({ event: 'admin.passkey_refused', ceremony: 'registration', via: target.kind, reason: result.reason, ip })
      return jsonError(c, result.status, result.message)
    }
    if (target.kind === 'invite') {
      await startSession(c, shared, result.value.adminId)
      shared.log({ event: 'admin.invite_accepted', admin: result.value.adminId, passkey: result.value.passkeyId, ip })
      return ceremonyDone(c, shared, TEXT.flash.welcomeInvited(target.name || 'admin'), PATHS.list)
    }
    shared.log({ event: 'admin.passkey_added', admin: target.adminId, passkey: result.value.passkeyId })
    return ceremonyDone(c, shared, TEXT.flash.passkeyAdded(result.value.passkeyName), PATHS.access)
  })

  app.get('/invite/:token', async (c) => {
    const token = c.req.param('token')
    const open = token.length <= 256 ? await repo.getOpenInvite(shared.db, hashToken(token), shared.now()) : undefined
    return renderPage(c, InvitePage, { token: open ? token : undefined, flash: takeFlash(c, shared) }, open ? 200 : 410)
  })

  app.post('/logout', signedIn, async (c) => {
    const auth = c.get('auth')
    if (auth.kind === 'session') await shared.write((trx) => repo.deleteSession(trx, auth.sessionHash))
    clearSessionCookie(c, shared)
    shared.log({ event: 'admin.signed_out', admin: auth.kind === 'session' ? auth.adminId : null })
    return finish(c, shared, { ok: true, message: TEXT.flash.signedOut, redirect: PATHS.auth })
  })

  app.post('/logout/all', signedIn, async (c) => {
    const auth = c.get('auth')
    if (auth.kind !== 'session') return jsonError(c, 403, TEXT.errors.forbidden)
    const n = await shared.write((trx) => repo.deleteAdminSessions(trx, auth.adminId))
    clearSessionCookie(c, shared)
    shared.log({ event: 'admin.signed_out_everywhere', admin: auth.adminId, sessions: n })
    return finish(c, shared, { ok: true, message: TEXT.flash.signedOutEverywhere(n), redirect: PATHS.auth })
  })
}

/**
 * Who a registration ceremony is for: the signed-in admin adding a passkey
 * (session + CSRF token), or an invitee (the body carries the invite;
 * rate-limited like sign-in). No body is read before the request is
 * authenticated or counted: a request presenting a credential (bearer token,
 * session cookie) is checked first and a bad one refused unread (the refusal
 * clears a stale cookie, so an invitee's retry goes through); one presenting
 * none can only be an invitee's, and is counted against the client's sign-in
 * budget before its body is read.
 */
async function registrationTarget(c: Context, shared: Shared): Promise<RegistrationTarget | Response> {
  const invitee = (body: Body): RegistrationTarget => ({ kind: 'invite', inviteToken: field(body, 'invite', 256), name: field(body, 'adminName', NAME_MAX) })
  if (bearerToken(c) === undefined && getCookie(c, shared.cookies.session) === undefined) {
    const refused = guardAttempt(c, shared, PATHS.auth)
    if (refused) return refused
    const body = await readBody(c)
    if (field(body, 'invite', 256)) return invitee(body)
  } else {
    const found = bearerToken(c) === undefined ? await lookupSession(c, shared) : undefined
    if (found?.state === 'ok') {
      const body = await readBody(c)
      if (field(body, 'invite', 256)) {
        // A signed-in admin opening an invite link is counted too: invites are guessed only at the sign-in rate.
        const refused = guardAttempt(c, shared, PATHS.auth)
        return refused ?? invitee(body)
      }
    }
  }
  const auth = await authorize(c, shared, { sessionOnly: true })
  if (auth instanceof Response) return auth
  if (auth.kind !== 'session') return jsonError(c, 403, TEXT.errors.forbidden)
  return { kind: 'admin', adminId: auth.adminId, adminName: auth.adminName }
}
