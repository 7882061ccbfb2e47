import { afterEach, describe, expect, it } from 'vitest'
import * as repo from './repo.ts'
import { createCredential, getAssertion, type SoftCredential } from './soft-authenticator.test-support.ts'
import { Client, flashOf, ORIGIN, PASSWORD, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness
afterEach(async () => {
  await h?.close()
})

type Options = { challengeId: string; options: { challenge: string; rp: { id?: string; name: string }; user: { id: string; name: string }; rpId?: string } }

async function registerPasskey(client: Client, name = 'Laptop'): Promise<SoftCredential> {
  const res = await client.request('/_caje/register/options', { json: {} })
  expect(res.status).toBe(200)
  const o = (await res.json()) as Options
  const { credential, response } = createCredential(o.options, ORIGIN)
  const v = await client.request('/_caje/register/verify', { json: { challengeId: o.challengeId, response, name } })
  expect(v.status, await v.clone().text()).toBe(200)
  return credential
}

async function signInWithPasskey(client: Client, credential: SoftCredential): Promise<Response> {
  const o = (await (await client.request('/_caje/auth/options', { json: {} })).json()) as Options
  return client.request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: getAssertion(credential, o.options, ORIGIN) } })
}

describe('sign-in page', () => {
  it('offers first-time setup with the password while no passkey exists', async () => {
    h = await setup()
    const { res, html } = await h.client().page('/_caje/auth')
    expect(res.status).toBe(200)
    expect(html).toContain('First-time setup')
    expect(html).toContain('CAJE_ADMIN_PASSWORD')
    expect(html).not.toContain('sign-in.js')
  })

  it('says passkeys need the CAJE_PUBLIC_ORIGIN address when opened at another one, and links there', async () => {
    h = await setup()
    const at127 = await h.app.request('http://127.0.0.1:8080/_caje/auth')
    const html = await at127.text()
    expect(html).toContain('Passkeys work only at the address in CAJE_PUBLIC_ORIGIN, and this page was opened at 127.0.0.1:8080.')
    expect(html).toContain('<a href="http://localhost:8080/_caje/auth">open http://localhost:8080</a>')
    const right = await h.app.request('http://localhost:8080/_caje/auth')
    expect(await right.text()).not.toContain('wrong-origin')
  })

  it('offers only the passkey once one exists', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    await registerPasskey(c)
    const { html } = await h.client().page('/_caje/auth')
    expect(html).toContain('Sign in with a passkey')
    expect(html).toContain('sign-in.js')
    expect(html).not.toContain('name="password"')
  })
})

describe('password enrolment', () => {
  it('signs in with the right password, creates the first admin, and asks for a passkey', async () => {
    h = await setup()
    const c = h.client()
    const res = await c.request('/_caje/auth/password', { form: { password: PASSWORD, name: 'Ada' } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/passkeys')
    expect(flashOf(res)?.text).toMatch(/Register a passkey now/)
    const admins = await repo.listAdmins(h.deps.db)
    expect(admins.map((a) => a.name)).toEqual(['Ada'])
    const { res: list, html } = await c.page('/_caje/list')
    expect(list.status).toBe(200)
    expect(html).toContain('You signed in with the password and have no passkey yet')
  })

  it('refuses a wrong password and starts no session', async () => {
    h = await setup()
    const c = h.client()
    const res = await c.request('/_caje/auth/password', { form: { password: 'wrong password!!' } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/auth')
    expect(flashOf(res)?.kind).toBe('error')
    expect([...c.jar.keys()]).not.toContain('caje_session')
    expect(await repo.listAdmins(h.deps.db)).toEqual([])
    const json = await c.request('/_caje/auth/password', { json: { password: 'nope' } })
    expect(json.status).toBe(401)
  })

  it('stops accepting the password once a passkey exists', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    await registerPasskey(c)
    const res = await h.client().request('/_caje/auth/password', { json: { password: PASSWORD } })
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: string }).error).toMatch(/Password sign-in is off/)
  })

  it('keeps accepting the password with CAJE_ALLOW_PASSWORD_LOGIN', async () => {
    h = await setup({ env: { CAJE_ALLOW_PASSWORD_LOGIN: 'true' } })
    const c = h.client()
    await c.signInWithPassword()
    await registerPasskey(c)
    const d = h.client()
    const res = await d.request('/_caje/auth/password', { form: { password: PASSWORD, next: '/_caje/list?filter=x' } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/list?filter=x')
    expect((await d.page('/_caje/list')).res.status).toBe(200)
  })

  it('uses a one-time enrolment code when no password is set', async () => {
    h = await setup({ env: { CAJE_ADMIN_PASSWORD: '' }, deps: { enrolmentCode: 'ABCD-EFGH-JKLM-NPQR' } })
    const page = await h.client().page('/_caje/auth')
    expect(page.html).toContain('one-time enrolment code')
    expect((await h.client().request('/_caje/auth/password', { json: { password: 'ABCD-EFGH-JKLM-NPQS' } })).status).toBe(401)
    const ok = await h.client().request('/_caje/auth/password', { form: { password: 'abcd efgh jklm npqr' } })
    expect(ok.status).toBe(303)
    // The message names what was used: the code, not a password.
    expect(flashOf(ok)?.text).toBe('Signed in with the one-time code. Register a passkey now: the code works only once.')
    // One use only.
    const again = await h.client().request('/_caje/auth/password', { json: { password: 'ABCD-EFGH-JKLM-NPQR' } })
    expect(again.status).toBe(403)
    expect((await h.client().page('/_caje/auth')).html).toContain('Restart caje')
  })

  it('generates and logs a code when neither password nor code is given', async () => {
    h = await setup({ env: { CAJE_ADMIN_PASSWORD: '' } })
    const logged = h.logs.find((l) => l.event === 'admin.enrolment_code')
    expect(logged?.code).toMatch(/^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/)
  })
})

describe('passkeys', () => {
  it('registers, signs out, and signs in again with the passkey; the counter is saved', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c, 'Laptop')
    const stored = await repo.getPasskey(h.deps.db, credential.id)
    expect(stored).toMatchObject({ name: 'Laptop', counter: 0, device_type: 'singleDevice', transports: '["internal"]' })

    const out = await c.request('/_caje/logout', { form: {} })
    expect(out.status).toBe(303)
    expect(out.headers.get('location')).toBe('/_caje/auth')
    expect((await c.request('/_caje/list')).status).toBe(303)

    const d = h.client()
    const res = await signInWithPasskey(d, credential)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ ok: true, redirect: '/_caje/list' })
    expect((await d.page('/_caje/list')).res.status).toBe(200)
    const after = await repo.getPasskey(h.deps.db, credential.id)
    expect(after?.counter).toBe(1)
    expect(after?.last_used_at).toBe(h.clock.now)
  })

  it('consumes a challenge once: a replayed answer is refused', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c)
    const o = (await (await c.request('/_caje/auth/options', { json: {} })).json()) as Options
    const response = getAssertion(credential, o.options, ORIGIN)
    expect((await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response } })).status).toBe(200)
    const replay = await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response } })
    expect(replay.status).toBe(400)
    expect(((await replay.json()) as { error: string }).error).toMatch(/expired or was already used/)
  })

  it('consumes a challenge on failure too', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c)
    const o = (await (await c.request('/_caje/auth/options', { json: {} })).json()) as Options
    const bad = getAssertion(credential, o.options, ORIGIN, { tamper: true })
    expect((await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: bad } })).status).toBe(401)
    const good = getAssertion(credential, o.options, ORIGIN)
    const res = await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: good } })
    expect(res.status).toBe(400)
    expect(h.logs.some((l) => l.event === 'admin.passkey_refused' && l.reason === 'not_verified')).toBe(true)
  })

  it('refuses an expired challenge', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c)
    const o = (await (await c.request('/_caje/auth/options', { json: {} })).json()) as Options
    h.clock.now += 6 * 60_000
    const res = await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: getAssertion(credential, o.options, ORIGIN) } })
    expect(res.status).toBe(400)
  })

  it('refuses a counter that went backwards (cloned authenticator)', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c)
    expect((await signInWithPasskey(h.client(), credential)).status).toBe(200)
    expect((await signInWithPasskey(h.client(), credential)).status).toBe(200)
    credential.counter = 0 // next assertion says 1, stored is 2
    const res = await signInWithPasskey(h.client(), credential)
    expect(res.status).toBe(401)
    expect((await repo.getPasskey(h.deps.db, credential.id))?.counter).toBe(2)
  })

  it('refuses to start a registration without the CSRF token', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    expect((await c.request('/_caje/register/options', { json: {}, csrf: false })).status).toBe(403)
    expect((await c.request('/_caje/register/verify', { json: { challengeId: 'x', response: {} }, csrf: false })).status).toBe(403)
    expect(await h.deps.db.selectFrom('challenges').selectAll().execute()).toEqual([])
  })

  it('refuses an unknown credential', async () => {
    h = await setup()
    const o = (await (await h.client().request('/_caje/auth/options', { json: {} })).json()) as Options
    const { credential } = createCredential({ challenge: 'x', rp: { name: 'caje', id: 'localhost' }, user: { id: 'u', name: 'u' } }, ORIGIN)
    const res = await h.client().request('/_caje/auth/verify', { json: { challengeId: o.challengeId, response: getAssertion(credential, o.options, ORIGIN) } })
    expect(res.status).toBe(401)
  })

  it('refuses an answer signed for another origin', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const credential = await registerPasskey(c)
    const o = (await (await c.request('/_caje/auth/options', { json: {} })).json()) as Options
    const res = await h.client().request('/_caje/auth/verify', {
      json: { challengeId: o.challengeId, response: getAssertion(credential, o.options, 'http://evil.localhost:8080') },
    })
    expect(res.status).toBe(401)
  })

  it('lists, renames and removes passkeys, never the last one', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const first = await registerPasskey(c, 'Laptop')
    const second = await registerPasskey(c, 'Phone')
    const { html } = await c.page('/_caje/passkeys')
    expect(html).toContain('value="Laptop"')
    expect(html).toContain('value="Phone"')

    const renamed = await c.request(`/_caje/passkeys/${first.id}/rename`, { form: { name: 'Work laptop' } })
    expect(renamed.status).toBe(303)
    expect((await repo.getPasskey(h.deps.db, first.id))?.name).toBe('Work laptop')

    const removed = await c.request(`/_caje/passkeys/${second.id}/remove`, { form: {} })
    expect(flashOf(removed)?.text).toBe('Passkey removed.')
    expect(await repo.getPasskey(h.deps.db, second.id)).toBeUndefined()

    const last = await c.request(`/_caje/passkeys/${first.id}/remove`, { json: {} })
    expect(last.status).toBe(409)
    expect(await repo.getPasskey(h.deps.db, first.id)).toBeDefined()
  })

  it('does not let an admin rename or remove another admin’s passkey', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const mine = await registerPasskey(c)
    await registerPasskey(c)
    // A second admin via an invite.
    const invite = await c.request('/_caje/invites', { json: {} })
    const { url } = (await invite.json()) as { url: string }
    const token = url.split('/').pop()!
    const b = h.client()
    const o = (await (await b.request('/_caje/register/options', { json: { invite: token, adminName: 'Bob' } })).json()) as Options
    const { response } = createCredential(o.options, ORIGIN)
    expect((await b.request('/_caje/register/verify', { json: { invite: token, adminName: 'Bob', challengeId: o.challengeId, response } })).status).toBe(200)
    await b.page('/_caje/list')
    expect((await b.request(`/_caje/passkeys/${mine.id}/rename`, { json: { name: 'pwned' } })).status).toBe(404)
    expect((await b.request(`/_caje/passkeys/${mine.id}/remove`, { json: {} })).status).toBe(404)
  })
})

describe('invites', () => {
  it('creates a one-time link that registers a new admin', async () => {
    h = await setup()
    const a = h.client()
    await a.signInWithPassword()
    await registerPasskey(a)
    const created = await a.request('/_caje/invites', { form: {} })
    expect(created.status).toBe(303)
    const link = flashOf(created)?.secret?.value
    expect(link).toMatch(new RegExp(`^${ORIGIN}/_caje/invite/`))
    const token = link!.split('/').pop()!
    expect(await repo.listOpenInvites(h.deps.db, h.clock.now)).toHaveLength(1)

    const b = h.client()
    const page = await b.page(`/_caje/invite/${token}`)
    expect(page.res.status).toBe(200)
    expect(page.html).toContain('Register a passkey')
    const o = (await (await b.request('/_caje/register/options', { json: { invite: token, adminName: 'Bob' } })).json()) as Options
    const { response } = createCredential(o.options, ORIGIN)
    const v = await b.request('/_caje/register/verify', { json: { invite: token, adminName: 'Bob', challengeId: o.challengeId, response, name: 'Bob’s key' } })
    expect(v.status).toBe(200)
    expect((await b.page('/_caje/list')).res.status).toBe(200)
    expect((await repo.listAdmins(h.deps.db)).map((x) => x.name).sort()).toEqual(['Ada', 'Bob'])

    // The link works once.
    expect((await h.client().page(`/_caje/invite/${token}`)).res.status).toBe(410)
    const again = await h.client().request('/_caje/register/options', { json: { invite: token, adminName: 'Eve' } })
    expect(again.status).toBe(400)
  })

  it('expires, and can be revoked', async () => {
    h = await setup({ deps: { session: { idleMs: 48 * 3600_000 } } })
    const a = h.client()
    await a.signInWithPassword()
    const r1 = (await (await a.request('/_caje/invites', { json: {} })).json()) as { url: string }
    h.clock.now += 25 * 3600_000
    expect((await h.client().page(new URL(r1.url).pathname)).res.status).toBe(410)
    const r2 = (await (await a.request('/_caje/invites', { json: {} })).json()) as { url: string }
    const open = await repo.listOpenInvites(h.deps.db, h.clock.now)
    expect(open).toHaveLength(1)
    expect((await a.request(`/_caje/invites/${open[0]!.token_hash}/revoke`, { form: {} })).status).toBe(303)
    expect((await h.client().page(new URL(r2.url).pathname)).res.status).toBe(410)
  })

  it('cannot be used to add a passkey to an existing admin', async () => {
    h = await setup()
    const a = h.client()
    await a.signInWithPassword()
    const { url } = (await (await a.request('/_caje/invites', { json: {} })).json()) as { url: string }
    const token = url.split('/').pop()!
    // An invite-less registration challenge is bound to the signed-in admin; an invite one to nobody.
    const o = (await (await a.request('/_caje/register/options', { json: {} })).json()) as Options
    const { response } = createCredential(o.options, ORIGIN)
    const res = await h.client().request('/_caje/register/verify', { json: { invite: token, challengeId: o.challengeId, response } })
    expect(res.status).toBe(400)
  })
})

describe('sessions', () => {
  it('sets a strict, HttpOnly cookie scoped to /_caje on http', async () => {
    h = await setup()
    const res = await h.client().request('/_caje/auth/password', { form: { password: PASSWORD } })
    const cookie = res.headers.getSetCookie().find((l) => l.startsWith('caje_session='))!
    expect(cookie).toMatch(/HttpOnly/)
    expect(cookie).toMatch(/SameSite=Strict/)
    expect(cookie).toMatch(/Path=\/_caje/)
    expect(cookie).not.toMatch(/Secure/)
  })

  it('uses a __Host- cookie, Secure, Path=/ on https', async () => {
    h = await setup({ env: { CAJE_PUBLIC_ORIGIN: 'https://cdn.example.com' } })
    const res = await h.client().request('/_caje/auth/password', { form: { password: PASSWORD } })
    const cookie = res.headers.getSetCookie().find((l) => l.startsWith('__Host-caje_session='))!
    expect(cookie).toMatch(/Secure/)
    expect(cookie).toMatch(/Path=\/;|Path=\/$/)
    expect(cookie).toMatch(/HttpOnly/)
    expect(cookie).toMatch(/SameSite=Strict/)
  })

  it('stores only the hash of the session id', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const id = c.jar.get('caje_session')!
    const rows = await h.deps.db.selectFrom('sessions').selectAll().execute()
    expect(rows).toHaveLength(1)
    expect(rows[0]!.id_hash).not.toBe(id)
    expect(rows[0]!.id_hash).toMatch(/^[0-9a-f]{64}$/)
  })

  it('slides the expiry on use and ends an idle session', async () => {
    h = await setup({ deps: { session: { idleMs: 60 * 60_000, touchEveryMs: 60_000 } } })
    const c = h.client()
    await c.signInWithPassword()
    h.clock.now += 50 * 60_000
    expect((await c.page('/_caje/list')).res.status).toBe(200) // slides to +60 min from here
    h.clock.now += 50 * 60_000
    expect((await c.page('/_caje/list')).res.status).toBe(200)
    h.clock.now += 61 * 60_000
    const page = await c.request('/_caje/list')
    expect(page.status).toBe(303)
    expect(page.headers.get('location')).toBe('/_caje/auth?next=%2F_caje%2Flist')
    expect(flashOf(page)?.text).toMatch(/session ended/)
    const api = await c.request('/_caje/purge', { json: { all: true } })
    expect(api.status).toBe(401)
    expect(await h.purgeCount()).toBe(0)
  })

  it('ends a session at its absolute lifetime however active', async () => {
    h = await setup({ deps: { session: { idleMs: 60 * 60_000, absoluteMs: 3 * 60 * 60_000 } } })
    const c = h.client()
    await c.signInWithPassword()
    for (let i = 0; i < 5; i++) {
      h.clock.now += 40 * 60_000
      const res = await c.request('/_caje/list', { headers: { accept: 'application/json' } })
      expect(res.status).toBe(i < 4 ? 200 : 401)
    }
  })

  it('signs out everywhere', async () => {
    h = await setup()
    const a = h.client()
    const b = h.client()
    await a.signInWithPassword()
    await b.signInWithPassword()
    const res = await a.request('/_caje/logout/all', { form: {} })
    expect(flashOf(res)?.text).toMatch(/2 sessions/)
    expect((await b.request('/_caje/list')).status).toBe(303)
    expect((await a.request('/_caje/list')).status).toBe(303)
  })

  it('redirects a signed-in visitor away from the sign-in page', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const res = await c.request('/_caje/auth?next=/_caje/passkeys')
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/passkeys')
    const evil = await c.request('/_caje/auth?next=//evil.example/')
    expect(evil.headers.get('location')).toBe('/_caje/list')
  })
})

describe('rate limit', () => {
  it('limits sign-in attempts per client IP', async () => {
    h = await setup({ deps: { loginRateLimit: { max: 3, windowMs: 60_000 } } })
    const c = h.client()
    for (let i = 0; i < 3; i++) expect((await c.request('/_caje/auth/password', { json: { password: 'wrong' } })).status).toBe(401)
    const limited = await c.request('/_caje/auth/password', { json: { password: PASSWORD } })
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toBe('60')
    expect(await repo.listAdmins(h.deps.db)).toEqual([]) // not even the right password gets through
    expect((await c.request('/_caje/auth/options', { json: {} })).status).toBe(429)
    // Another client is not affected; the window passes.
    expect((await c.request('/_caje/auth/password', { json: { password: PASSWORD }, headers: { 'x-test-ip': '198.51.100.7' } })).status).toBe(200)
    h.clock.now += 61_000
    expect((await h.client().request('/_caje/auth/options', { json: {} })).status).toBe(200)
  })

  it('answers a limited form post with a redirect and a message', async () => {
    h = await setup({ deps: { loginRateLimit: { max: 1, windowMs: 60_000 } } })
    const c = h.client()
    await c.request('/_caje/auth/password', { form: { password: 'wrong' } })
    const res = await c.request('/_caje/auth/password', { form: { password: 'wrong' } })
    expect(res.status).toBe(303)
    expect(flashOf(res)?.text).toMatch(/Too many attempts/)
  })
})

describe('cross-site requests to the sign-in endpoints', () => {
  it('are refused', async () => {
    h = await setup()
    const res = await h.client().request('/_caje/auth/password', { form: { password: PASSWORD }, headers: { origin: 'https://evil.example' } })
    expect(res.status).toBe(403)
    const fetchSite = await h.client().request('/_caje/auth/options', { json: {}, headers: { 'sec-fetch-site': 'cross-site' } })
    expect(fetchSite.status).toBe(403)
    expect(await repo.listAdmins(h.deps.db)).toEqual([])
  })
})
