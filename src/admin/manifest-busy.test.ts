// Admin writes while another process holds the manifest's write lock (another
// node, a migration, sqlite3 in a shell). better-sqlite3 is synchronous, so a
// write that waited in SQLite's busy handler would freeze the event loop and
// with it every request the node serves. Admin writes fail fast and retry with
// timers instead (writeWhenFree), and answer 503 when the lock outlasts the
// retry window.

import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { TEXT } from '../../views/text.ts'
import { TEST_BUSY_TIMEOUT_MS, holdWriteLock, loopTurnsWhile } from '../manifest/test-helpers.ts'
import * as repo from './repo.ts'
import { createCredential, getAssertion } from './soft-authenticator.test-support.ts'
import { ORIGIN, PASSWORD, setup, type Client, type Harness } from './test-setup.test-support.ts'

let h: Harness
const unlocks: Array<() => void> = []
afterEach(async () => {
  for (const unlock of unlocks.splice(0)) unlock()
  await h?.close()
})

/**
 * Hold the manifest's write lock from another connection in this process. The
 * node's own connection gets a busy timeout of a minute first: a write that
 * waited in SQLite's busy handler, instead of on timers, would stop this
 * process (the lock holder with it) past the test's timeout.
 */
async function lockManifest(): Promise<ReturnType<typeof holdWriteLock>> {
  await sql.raw(`PRAGMA busy_timeout = ${TEST_BUSY_TIMEOUT_MS}`).execute(h.deps.db)
  const lock = holdWriteLock(h.config.databasePath)
  unlocks.push(lock.release)
  return lock
}

/** Long enough that no write gives up while a test holds the lock on purpose. */
const LONG_WINDOW_MS = 20_000

type Options = { challengeId: string; options: Parameters<typeof createCredential>[0] & Parameters<typeof getAssertion>[1] }

/** The signed-in admin registers a passkey (the soft authenticator's). */
async function registerPasskey(c: Client) {
  const o = (await (await c.request('/_caje/register/options', { json: {} })).json()) as Options
  const { credential, response } = createCredential(o.options, ORIGIN)
  expect((await c.request('/_caje/register/verify', { json: { challengeId: o.challengeId, response } })).status).toBe(200)
  return credential
}

const sessionRows = () => h.deps.db.selectFrom('sessions').selectAll().execute()

describe('admin writes while another process holds the manifest write lock', () => {
  it('password sign-in waits without stopping the event loop, other admin requests are answered meanwhile, and it signs in once the lock is released', async () => {
    h = await setup({ deps: { busyRetryMs: LONG_WINDOW_MS } })
    const lock = await lockManifest()
    const signIn = h.client().request('/_caje/auth/password', { form: { password: PASSWORD, name: 'Ada' } })
    await loopTurnsWhile(signIn)
    // Another request while the sign-in waits for the lock: a read, answered at once.
    const page = await h.client().page('/_caje/auth')
    expect(page.res.status).toBe(200)
    // The sign-in is still waiting for the lock after the other request was answered.
    await loopTurnsWhile(signIn, 1)
    expect(await repo.listAdmins(h.deps.db)).toEqual([])

    lock.release()
    const res = await signIn
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/passkeys')
    expect(await repo.listAdmins(h.deps.db)).toMatchObject([{ name: 'Ada' }])
    expect(await sessionRows()).toHaveLength(1)
  })

  it('passkey sign-in (challenge, counter, session) waits for a lock released within the window and succeeds', async () => {
    h = await setup({ deps: { busyRetryMs: LONG_WINDOW_MS } })
    const a = h.client()
    await a.signInWithPassword()
    const credential = await registerPasskey(a)
    const c = h.client()
    const o = (await (await c.request('/_caje/auth/options', { json: {} })).json()) as Options
    const lock = await lockManifest()
    const verify = c.request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: getAssertion(credential, o.options, ORIGIN) } })
    await loopTurnsWhile(verify)
    lock.release()
    const res = await verify
    expect(res.status, await res.clone().text()).toBe(200)
    expect((await c.page('/_caje/list')).res.status).toBe(200)
    expect((await repo.getPasskey(h.deps.db, credential.id))?.counter).toBe(1)
    expect(await sessionRows()).toHaveLength(2)
  })

  it('an invitee registration (invite used, admin and passkey created) waits for the lock and lands whole', async () => {
    h = await setup({ deps: { busyRetryMs: LONG_WINDOW_MS } })
    const a = h.client()
    await a.signInWithPassword()
    const { url } = (await (await a.request('/_caje/invites', { json: {} })).json()) as { url: string }
    const token = url.split('/').pop()!
    const b = h.client()
    const o = (await (await b.request('/_caje/register/options', { json: { invite: token, adminName: 'Bob' } })).json()) as Options
    const { response } = createCredential(o.options, ORIGIN)
    const lock = await lockManifest()
    const verify = b.request('/_caje/register/verify', { json: { invite: token, adminName: 'Bob', challengeId: o.challengeId, response } })
    await loopTurnsWhile(verify)
    lock.release()
    const res = await verify
    expect(res.status, await res.clone().text()).toBe(200)
    expect((await repo.listAdmins(h.deps.db)).map((x) => [x.name, x.passkeys]).sort()).toEqual([
      ['Ada', 0],
      ['Bob', 1],
    ])
  })

  it('a session touch (sliding expiry) never waits: the page is answered at once and a later request extends the session', async () => {
    // A retry window of ten minutes: a touch that waited for the lock would hold the page past the test's timeout.
    h = await setup({ deps: { busyRetryMs: 600_000 } })
    const c = h.client()
    await c.signInWithPassword()
    const [before] = await sessionRows()
    h.clock.now += 5 * 60_000 // past touchEveryMs: the next request extends the session
    const lock = await lockManifest()
    const page = await c.page('/_caje/list')
    expect(page.res.status).toBe(200)
    expect((await sessionRows())[0]!.expires_at).toBe(before!.expires_at)
    expect(h.logs.some((l) => l.event === 'admin.bookkeeping_skipped' && l.what === 'extend session')).toBe(true)

    lock.release()
    expect((await c.page('/_caje/list')).res.status).toBe(200)
    expect((await sessionRows())[0]!.expires_at).toBe(h.clock.now + 12 * 3600_000)
  })

  it('answers 503 "the manifest is busy" (JSON and page) when the lock is held past the window, writes nothing, and works after', async () => {
    const windowMs = 400
    h = await setup({ deps: { busyRetryMs: windowMs } })
    const c = h.client()
    await c.signInWithPassword()
    // Something for every write to act on: two passkeys, another admin, a token, an invite.
    const [k1, k2] = [await registerPasskey(c), await registerPasskey(c)]
    await h.deps.db.insertInto('admins').values({ id: 'adm_x', name: 'X', created_at: 1 }).execute()
    const { id: tokenId } = (await (await c.request('/_caje/tokens', { json: { name: 'ci' } })).json()) as { id: string }
    await c.request('/_caje/invites', { json: {} })
    const [invite] = await repo.listOpenInvites(h.deps.db, h.clock.now)
    const snapshot = async () => ({
      admins: await repo.listAdmins(h.deps.db),
      passkeys: await h.deps.db.selectFrom('passkeys').selectAll().orderBy('id').execute(),
      sessions: await h.deps.db.selectFrom('sessions').selectAll().orderBy('id_hash').execute(),
      challenges: await h.deps.db.selectFrom('challenges').selectAll().orderBy('id').execute(),
      invites: await h.deps.db.selectFrom('invites').selectAll().orderBy('token_hash').execute(),
      tokens: await repo.listApiTokens(h.deps.db),
    })
    const d = h.client()
    const pending = (await (await d.request('/_caje/auth/options', { json: {} })).json()) as Options
    const before = await snapshot()
    const lock = await lockManifest()

    // Every admin write path, as a script (JSON) would call it.
    const writes: Array<[string, Record<string, unknown>]> = [
      ['/_caje/tokens', { name: 'deploy' }],
      [`/_caje/tokens/${tokenId}/revoke`, {}],
      ['/_caje/invites', {}],
      [`/_caje/invites/${invite!.token_hash}/revoke`, {}],
      [`/_caje/passkeys/${encodeURIComponent(k1.id)}/rename`, { name: 'Laptop' }],
      [`/_caje/passkeys/${encodeURIComponent(k2.id)}/remove`, {}],
      ['/_caje/admins/adm_x/remove', {}],
      ['/_caje/register/options', {}],
      ['/_caje/logout', {}],
      ['/_caje/logout/all', {}],
    ]
    for (const [p, json] of writes) {
      const res = await c.request(p, { json })
      expect(res.status, p).toBe(503)
      expect(res.headers.get('retry-after'), p).toBe('1')
      expect(await res.json(), p).toEqual({ ok: false, error: TEXT.errors.manifestBusy })
      // It kept trying for the whole window (by its own clock), attempt after attempt with timers
      // between: one wait in SQLite's busy handler would take a minute, past the test's timeout.
      const busy = h.logs.filter((l) => l.event === 'admin.manifest_busy' && l.path === p)
      expect(busy, p).toHaveLength(1)
      expect(busy[0]!.attempts, p).toBeGreaterThan(1)
      expect(busy[0]!.waitedMs, p).toBeGreaterThanOrEqual(windowMs)
    }
    // Passkey sign-in from a new browser: the options step stores a challenge, the verify step consumes it.
    for (const [p, json] of [
      ['/_caje/auth/options', {}],
      ['/_caje/auth/verify', { challengeId: pending.challengeId, response: getAssertion(k1, pending.options, ORIGIN) }],
    ] as const) {
      const res = await d.request(p, { json })
      expect(res.status, p).toBe(503)
      expect(((await res.json()) as { error: string }).error, p).toBe(TEXT.errors.manifestBusy)
    }
    // A form post gets the message as a page, without details.
    const form = await c.request('/_caje/invites', { form: {} })
    expect(form.status).toBe(503)
    expect(form.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await form.text()
    expect(html).toContain(TEXT.errors.manifestBusy)
    expect(html).not.toMatch(/SQLITE|\.ts:\d+/)
    expect(h.logs.filter((l) => l.event === 'admin.error')).toEqual([])
    expect(h.logs.filter((l) => l.event === 'admin.manifest_busy')).toHaveLength(writes.length + 3)

    // Nothing was half-written (the session survived the refused sign-outs), and everything works once the lock is gone.
    lock.release()
    expect(await snapshot()).toEqual(before)
    // The refused verify did not use up its challenge: nothing was written.
    const retried = await d.request('/_caje/auth/verify', { json: { challengeId: pending.challengeId, response: getAssertion(k1, pending.options, ORIGIN) } })
    expect(retried.status, await retried.clone().text()).toBe(200)
    expect((await c.request('/_caje/tokens', { json: { name: 'deploy' } })).status).toBe(201)
    expect((await c.request(`/_caje/passkeys/${encodeURIComponent(k2.id)}/remove`, { json: {} })).status).toBe(200)
    expect((await c.request('/_caje/logout', { json: {} })).status).toBe(200)
    expect(await sessionRows()).toHaveLength(1) // d's
  })
})
