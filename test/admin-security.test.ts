// The admin's defences through a real node (HTTP server, fast path, admin and
// internal mounts, forward-to-primary): src/admin/*.test.ts check each rule on
// the admin app alone; here every route refuses every kind of bad credential
// and provably does nothing, CSRF guards every POST, sign-in is rate limited,
// pages carry a strict CSP, and no configured secret ever leaves the node.

import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Hono } from 'hono'
import * as adminRepo from '../src/admin/repo.ts'
import { createCredential } from '../src/admin/soft-authenticator.test-support.ts'
import { Client, ORIGIN } from '../src/admin/test-setup.test-support.ts'
import { startNode, startOrigin, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'

const SECRETS = {
  CAJE_ADMIN_PASSWORD: `pw-${randomBytes(12).toString('hex')}`,
  CAJE_CLUSTER_SECRET: `cluster-${randomBytes(12).toString('hex')}`,
  CAJE_API_TOKEN: `api-${randomBytes(12).toString('hex')}`,
  CAJE_METRICS_TOKEN: `metrics-${randomBytes(12).toString('hex')}`,
}
const OTHER_CLUSTER_SECRET = `other-${randomBytes(12).toString('hex')}`

let origin: TestOrigin
let node: TestNode
let other: TestNode
const logs: Array<Record<string, unknown>> = []
/** Every response text (status line, headers, body) this file saw, searched for secrets at the end. */
const seen: string[] = []

async function call(path: string, init: RequestInit & { headers?: Record<string, string> } = {}, on: TestNode = node): Promise<{ status: number; headers: Headers; body: string }> {
  const res = await fetch(on.url + path, { redirect: 'manual', ...init })
  const body = await res.text()
  seen.push(`${res.status} ${path}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${body}`)
  return { status: res.status, headers: res.headers, body }
}

const form = (fields: Record<string, string>) => ({ 'content-type': 'application/x-www-form-urlencoded', body: new URLSearchParams(fields).toString() })

/** Sign in through the real enrolment form: read its fields from the auth page, post the password. */
async function signIn(on: TestNode = node): Promise<{ cookie: string; setCookie: string; csrf: string }> {
  const page = await call('/_caje/auth', {}, on)
  expect(page.status).toBe(200)
  const fields: Record<string, string> = {}
  for (const m of page.body.matchAll(/<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields[m[1]!] = m[2]!
  expect(page.body).toMatch(/name="password"/)
  const { body, ...headers } = form({ ...fields, password: SECRETS.CAJE_ADMIN_PASSWORD })
  const res = await call('/_caje/auth/password', { method: 'POST', headers, body }, on)
  expect(res.status).toBe(303)
  const setCookie = res.headers.getSetCookie().find((c) => /^(__Host-)?caje_session=/.test(c))!
  expect(setCookie).toBeDefined()
  const cookie = setCookie.split(';')[0]!
  const list = await call('/_caje/list', { headers: { cookie } }, on)
  expect(list.status).toBe(200)
  const csrf = /name="_csrf" value="([^"]+)"/.exec(list.body)?.[1]
  expect(csrf).toBeTruthy()
  return { cookie, setCookie, csrf: csrf! }
}

/** What "nothing happened" means: the cached object, the manifest rows and the admin state are as they were. */
async function snapshot() {
  const db = node.manifest.readDb()
  const count = async (table: 'entries' | 'purges' | 'api_tokens' | 'invites' | 'sessions' | 'admins') =>
    Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
  return {
    stored: (await node.store.variants(`http://${new URL(node.url).host}/page`)).length,
    entries: await count('entries'),
    purges: await count('purges'),
    tokens: await count('api_tokens'),
    invites: await count('invites'),
    sessions: await count('sessions'),
    admins: await count('admins'),
    populate: (await call('/_caje/status', { headers: { authorization: `Bearer ${SECRETS.CAJE_API_TOKEN}`, accept: 'application/json' } })).body.includes('"populate":null'),
  }
}

const ADMIN_GETS = ['/_caje/list', '/_caje/status', '/_caje/passkeys', '/_caje/populate', '/_caje/confirm/clear_fs']
/** Sign-in steps, taken before there is a session and so a CSRF token: they refuse cross-site posts instead. */
const SIGN_IN_POSTS = ['/_caje/auth/password', '/_caje/auth/options', '/_caje/auth/verify']
/** Form fields that would make a route act if its guard let the request through. */
const POST_FIELDS: Record<string, Array<Record<string, string>>> = {
  '/_caje/purge': [{ all: 'true', confirm: 'yes' }, { url: 'PAGE' }],
  '/_caje/clear_fs': [{ confirm: 'yes' }],
  '/_caje/clear_db': [{ confirm: 'yes' }],
  '/_caje/tokens': [{ name: 'sneaky' }],
  '/_caje/passkeys/x/rename': [{ name: 'sneaky' }],
}
/** Every POST route the node's router has, with its parameters filled in. */
function postRoutes(): string[] {
  const paths = node.app.routes.filter((r) => r.method === 'POST').map((r) => r.path.replace(/:[^/]+/g, 'x').replace(/\*/g, 'x'))
  return [...new Set(paths)]
}
/**
 * The admin's POST routes (taken from the router, so a new route is covered
 * the day it is added) with the fields that would make each act: every one
 * needs a session with its CSRF token, or an API token.
 */
function adminPosts(): Array<[string, Record<string, string>]> {
  return postRoutes()
    .filter((p) => !p.startsWith('/_caje/internal/') && !SIGN_IN_POSTS.includes(p))
    .flatMap((p) => (POST_FIELDS[p] ?? [{}]).map((fields): [string, Record<string, string>] => [p, fields]))
}
const INTERNAL: Array<[string, string, string | undefined]> = [
  ['GET', '/_caje/internal/role', undefined],
  ['GET', '/_caje/internal/object?key=PAGEKEY&variant=', undefined],
  ['POST', '/_caje/internal/manifest', JSON.stringify({ ops: [{ type: 'clear' }] })],
  ['POST', '/_caje/internal/purge-nudge', '{}'],
]

beforeAll(async () => {
  origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=3600' })
    res.end(`body of ${req.url}`)
  })
  node = await startNode(origin.url, { ...SECRETS, CAJE_ACCESS_LOG: 'true' }, { log: (l) => logs.push(l) })
  other = await startNode(origin.url, { CAJE_CLUSTER_SECRET: OTHER_CLUSTER_SECRET, CAJE_NODE_ID: 'other-node' })
  await node.get('/page').then((r) => r.text())
  await node.stored('/page')
  await node.manifest.writer.flush()
})

afterAll(async () => {
  await node?.close()
  await other?.close()
  await origin?.close()
})

describe('every admin and internal route refuses bad credentials and does nothing', () => {
  it('no credentials, a forged session cookie, an expired session, forged or wrong-kind bearer tokens', async () => {
    const before = await snapshot()
    expect(before.stored).toBe(1)
    expect(before.entries).toBe(1)

    // An expired session: signed in for real, then its expiry moved into the past.
    const expired = await signIn()
    await node.manifest.readDb().updateTable('sessions').set({ expires_at: 1 }).execute()
    // Seen once, the expired session is deleted: that is the only change any of this may make.
    expect((await call('/_caje/list', { headers: { cookie: expired.cookie } })).status).toBe(303)
    const baseline = await snapshot()

    const forgedCookie = `caje_session=${randomBytes(32).toString('base64url')}`
    const credentials: Array<[string, Record<string, string>]> = [
      ['none', {}],
      ['forged session cookie', { cookie: forgedCookie }],
      ['expired session', { cookie: expired.cookie }],
      ['forged bearer token', { authorization: `Bearer ${randomBytes(24).toString('hex')}` }],
      // Secrets for other purposes are not admin credentials.
      ['cluster secret as bearer', { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}` }],
      ['metrics token as bearer', { authorization: `Bearer ${SECRETS.CAJE_METRICS_TOKEN}` }],
      ['another node’s cluster secret', { authorization: `Bearer ${OTHER_CLUSTER_SECRET}` }],
    ]
    for (const [label, headers] of credentials) {
      for (const path of ADMIN_GETS) {
        for (const accept of ['text/html', 'application/json']) {
          const res = await call(path, { headers: { ...headers, accept } })
          const ok = res.status === 401 || res.status === 403 || (res.status === 303 && res.headers.get('location')!.startsWith('/_caje/auth'))
          expect(ok, `${label}: GET ${path} (${accept}) answered ${res.status}`).toBe(true)
          expect(res.body).not.toContain('body of /page')
        }
      }
      for (const [path, fields] of adminPosts()) {
        const f = { ...fields, _csrf: expired.csrf }
        if (f.url === 'PAGE') f.url = `${node.url}/page`
        const asForm = await call(path, { method: 'POST', headers: { ...headers, ...form(f), 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(f).toString() })
        expect([401, 403], `${label}: POST ${path} (form) answered ${asForm.status}`).toContain(asForm.status)
        const asJson = await call(path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json', accept: 'application/json', 'x-csrf-token': expired.csrf }, body: JSON.stringify(f) })
        expect([401, 403], `${label}: POST ${path} (json) answered ${asJson.status}`).toContain(asJson.status)
      }
    }
    // The internal routes take only this node's cluster secret: not none, not a forged one,
    // not another cluster's, not the admin API token, not a session.
    const internalCredentials: Array<[string, Record<string, string>]> = [
      ['none', {}],
      ['forged', { authorization: `Bearer ${randomBytes(24).toString('hex')}` }],
      ['another node’s cluster secret', { authorization: `Bearer ${OTHER_CLUSTER_SECRET}` }],
      ['the admin API token', { authorization: `Bearer ${SECRETS.CAJE_API_TOKEN}` }],
      ['the metrics token', { authorization: `Bearer ${SECRETS.CAJE_METRICS_TOKEN}` }],
      ['the secret without "Bearer"', { authorization: SECRETS.CAJE_CLUSTER_SECRET }],
      ['an expired admin session', { cookie: expired.cookie }],
    ]
    const pageKey = encodeURIComponent(`http://${new URL(node.url).host}/page`)
    for (const [label, headers] of internalCredentials) {
      for (const [method, rawPath, body] of INTERNAL) {
        const path = rawPath.replace('PAGEKEY', pageKey)
        const res = await call(path, { method, headers: { ...headers, 'content-type': 'application/json' }, body })
        expect(res.status, `${label}: ${method} ${path}`).toBe(401)
        expect(res.body).not.toContain('body of /page')
      }
    }
    // Node B's own internal routes refuse node A's secret too (each cluster its own).
    expect((await call('/_caje/internal/role', { headers: { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}` } }, other)).status).toBe(401)
    // And with the right secret the route does answer (the refusals above were about the credential).
    expect((await call('/_caje/internal/role', { headers: { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}` } })).status).toBe(200)

    await node.manifest.writer.flush()
    expect(await snapshot()).toEqual(baseline)
    // The expired session was removed on sight, not revived.
    expect(baseline.sessions).toBe(0)
  })
})

describe('sessions and CSRF through a real node', () => {
  it('the session cookie is HttpOnly, SameSite=Strict, scoped to /_caje on http', async () => {
    const { setCookie } = await signIn()
    expect(setCookie).toMatch(/^caje_session=/)
    expect(setCookie).toMatch(/; HttpOnly/i)
    expect(setCookie).toMatch(/; SameSite=Strict/i)
    expect(setCookie).toMatch(/; Path=\/_caje(;|$)/)
    expect(setCookie).not.toMatch(/Secure/i)
    expect(setCookie).not.toMatch(/Domain=/i)
  })

  it('on https (CAJE_PUBLIC_ORIGIN) it is __Host-, Secure, Path=/ and has no Domain', async () => {
    const https = await startNode(origin.url, { CAJE_ADMIN_PASSWORD: SECRETS.CAJE_ADMIN_PASSWORD, CAJE_PUBLIC_ORIGIN: 'https://cdn.example.test', CAJE_RP_ID: 'cdn.example.test' })
    try {
      const { body, ...headers } = form({ password: SECRETS.CAJE_ADMIN_PASSWORD })
      const res = await call('/_caje/auth/password', { method: 'POST', headers, body }, https)
      expect(res.status).toBe(303)
      const setCookie = res.headers.getSetCookie().find((c) => c.startsWith('__Host-caje_session='))
      expect(setCookie).toBeDefined()
      expect(setCookie).toMatch(/; Secure/i)
      expect(setCookie).toMatch(/; Path=\/(;|$)/)
      expect(setCookie).toMatch(/; HttpOnly/i)
      expect(setCookie).toMatch(/; SameSite=Strict/i)
      expect(setCookie).not.toMatch(/Domain=/i)
      // No plain-named session cookie is set beside it.
      expect(res.headers.getSetCookie().some((c) => c.startsWith('caje_session='))).toBe(false)
    } finally {
      await https.close()
    }
  })

  it('every POST needs the session’s CSRF token and a same-site origin; with both, it works', async () => {
    const { cookie, csrf } = await signIn()
    const other = await signIn() // another admin session's token is not this session's
    const before = await snapshot()
    for (const [path, fields] of adminPosts()) {
      const f = { ...fields }
      if (f.url === 'PAGE') f.url = `${node.url}/page`
      const attempts: Array<[string, Record<string, string>, Record<string, string>]> = [
        ['no token', f, {}],
        ['wrong token', { ...f, _csrf: randomBytes(24).toString('base64url') }, {}],
        ['another session’s token', { ...f, _csrf: other.csrf }, {}],
        ['right token, cross-site Origin', { ...f, _csrf: csrf }, { origin: 'https://evil.example' }],
        ['right token, Sec-Fetch-Site cross-site', { ...f, _csrf: csrf }, { 'sec-fetch-site': 'cross-site' }],
      ]
      for (const [label, fields2, extra] of attempts) {
        const { body, ...headers } = form(fields2)
        const res = await call(path, { method: 'POST', headers: { ...headers, cookie, ...extra }, body })
        // A same-site form with a stale token goes back to its page with a message; a cross-site one is refused.
        if (label.startsWith('right token')) expect(res.status, `${label}: POST ${path}`).toBe(403)
        else {
          expect(res.status, `${label}: POST ${path}`).toBe(303)
          expect(res.headers.get('location'), `${label}: POST ${path}`).toBe('/_caje/list')
        }
        const asJson = await call(path, { method: 'POST', headers: { cookie, 'content-type': 'application/json', accept: 'application/json', ...extra }, body: JSON.stringify(fields2) })
        expect(asJson.status, `${label}: POST ${path} (json)`).toBe(403)
      }
    }
    await node.manifest.writer.flush()
    const after = await snapshot()
    expect(after).toEqual(before)
    // The same session with its token does act (so the 403s were about CSRF).
    const { body, ...headers } = form({ name: 'ci', _csrf: csrf })
    const ok = await call('/_caje/tokens', { method: 'POST', headers: { ...headers, cookie }, body })
    expect([200, 303]).toContain(ok.status)
    expect((await snapshot()).tokens).toBe(before.tokens + 1)
  })
})

describe('CSRF on every POST route the router has', () => {
  it('the list comes from the router: it holds every admin route, including those once left out by hand', () => {
    const routes = postRoutes()
    // The router is where the list comes from: the routes named in the security review are in it.
    for (const p of ['/_caje/purge', '/_caje/clear_db', '/_caje/passkeys/x/rename', '/_caje/invites/x/revoke', '/_caje/tokens/x/revoke', '/_caje/register/options', '/_caje/register/verify']) {
      expect(routes, p).toContain(p)
    }
    for (const p of SIGN_IN_POSTS) expect(routes, `${p} is still a route`).toContain(p)
  })

  it('a signed-in session with a wrong X-CSRF-Token header (or _csrf field) is refused on each, and nothing changes', async () => {
    const { cookie, csrf } = await signIn()
    const before = await snapshot()
    const wrong = randomBytes(24).toString('base64url')
    expect(wrong).not.toBe(csrf)
    for (const [path, fields] of adminPosts()) {
      const f = { ...fields }
      if (f.url === 'PAGE') f.url = `${node.url}/page`
      const asJson = await call(path, { method: 'POST', headers: { cookie, 'content-type': 'application/json', accept: 'application/json', 'x-csrf-token': wrong }, body: JSON.stringify(f) })
      expect(asJson.status, `POST ${path} with a wrong X-CSRF-Token`).toBe(403)
      // The header decides even when the body carries the right token.
      const headerWins = await call(path, { method: 'POST', headers: { cookie, 'content-type': 'application/json', accept: 'application/json', 'x-csrf-token': wrong }, body: JSON.stringify({ ...f, _csrf: csrf }) })
      expect(headerWins.status, `POST ${path} with a wrong X-CSRF-Token and the right _csrf`).toBe(403)
      // A browser form with a token that is not its session's goes back to its page with
      // "this page was out of date" instead of an error body; either way nothing is done.
      const { body, ...headers } = form({ ...f, _csrf: wrong })
      const asForm = await call(path, { method: 'POST', headers: { ...headers, cookie }, body })
      expect(asForm.status, `POST ${path} with a wrong _csrf field`).toBe(303)
      expect(asForm.headers.get('location'), `POST ${path} with a wrong _csrf field`).toBe('/_caje/list')
      expect(decodeURIComponent(asForm.headers.getSetCookie().join('; ')), `POST ${path} with a wrong _csrf field`).toContain('This page was out of date')
    }
    await node.manifest.writer.flush()
    expect(await snapshot()).toEqual(before)
    // The session and its token are good: a right token on a harmless route acts.
    const ok = await call('/_caje/tokens', { method: 'POST', headers: { cookie, 'content-type': 'application/json', accept: 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify({ name: 'csrf-check' }) })
    expect([200, 201]).toContain(ok.status)
  })

  it('the sign-in steps refuse a cross-site post, even with the right password', async () => {
    for (const path of SIGN_IN_POSTS) {
      const { body, ...headers } = form({ password: SECRETS.CAJE_ADMIN_PASSWORD })
      for (const extra of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }]) {
        const res = await call(path, { method: 'POST', headers: { ...headers, ...extra }, body })
        expect(res.status, `POST ${path} ${JSON.stringify(extra)}`).toBe(403)
        expect(res.headers.getSetCookie().some((c) => c.includes('caje_session='))).toBe(false)
      }
    }
  })

  it('the internal routes take no session at all: a signed-in admin’s cookie and token get 401', async () => {
    const { cookie, csrf } = await signIn()
    const internal = postRoutes().filter((p) => p.startsWith('/_caje/internal/'))
    expect(internal.length).toBeGreaterThan(0)
    for (const path of internal) {
      const res = await call(path, { method: 'POST', headers: { cookie, 'content-type': 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify({ ops: [{ type: 'clear' }] }) })
      expect(res.status, `POST ${path}`).toBe(401)
    }
  })
})

describe('removing an admin through a real node', () => {
  /** The admin tests' cookie-keeping client, speaking HTTP to the node instead of calling its app. */
  const httpClient = (on: TestNode) => new Client({ request: (p: string, init: RequestInit) => fetch(on.url + p, { ...init, redirect: 'manual' }) } as unknown as Hono)

  async function registerPasskey(client: Client, body: Record<string, string> = {}): Promise<number> {
    const res = await client.request('/_caje/register/options', { json: body })
    if (res.status !== 200) return res.status
    const o = (await res.json()) as { challengeId: string; options: Parameters<typeof createCredential>[0] }
    const { response } = createCredential(o.options, ORIGIN)
    return (await client.request('/_caje/register/verify', { json: { ...body, challengeId: o.challengeId, response, name: 'key' } })).status
  }
  const invite = async (c: Client) => ((await (await c.request('/_caje/invites', { json: {} })).json()) as { url: string }).url.split('/').pop()!

  it('leaves nothing they kept working: sessions, API tokens and unused invite links', async () => {
    const n = await startNode(origin.url, { CAJE_ADMIN_PASSWORD: SECRETS.CAJE_ADMIN_PASSWORD, CAJE_PUBLIC_ORIGIN: ORIGIN })
    try {
      const ada = httpClient(n)
      await ada.signInWithPassword(SECRETS.CAJE_ADMIN_PASSWORD)
      expect(await registerPasskey(ada)).toBe(200)
      const bob = httpClient(n)
      expect(await registerPasskey(bob, { invite: await invite(ada), adminName: 'Bob' })).toBe(200)
      await bob.page('/_caje/list')
      const token = ((await (await bob.request('/_caje/tokens', { json: { name: 'deploy' } })).json()) as { secret: string }).secret
      const kept = await invite(bob)
      const asBob = { authorization: `Bearer ${token}`, accept: 'application/json' }
      const purge = () => fetch(`${n.url}/_caje/purge`, { method: 'POST', headers: { ...asBob, 'content-type': 'application/json' }, body: JSON.stringify({ all: true }) })
      expect((await purge()).status).toBe(200)
      expect((await fetch(`${n.url}/_caje/list`, { headers: asBob })).status).toBe(200)

      const bobId = (await adminRepo.listAdmins(n.manifest.readDb())).find((a) => a.name === 'Bob')!.id
      await ada.page('/_caje/passkeys')
      expect((await ada.request(`/_caje/admins/${bobId}/remove`, { json: {} })).status).toBe(200)

      expect((await purge()).status).toBe(401)
      expect((await fetch(`${n.url}/_caje/list`, { headers: asBob })).status).toBe(401)
      expect((await bob.request('/_caje/list', { headers: { accept: 'application/json' } })).status).toBe(401)
      expect((await httpClient(n).page(`/_caje/invite/${kept}`)).res.status).toBe(410)
      expect(await registerPasskey(httpClient(n), { invite: kept, adminName: 'Bob again' })).toBe(400)
      expect((await adminRepo.listAdmins(n.manifest.readDb())).map((a) => a.name)).toEqual(['Ada'])
      expect((await ada.request('/_caje/list', { headers: { accept: 'application/json' } })).status).toBe(200)
    } finally {
      await n.close()
    }
  })
})

describe('the page to return to after sign-in', () => {
  const ESCAPES = ['/_caje/..//evil.example', '/_caje/%2e%2e//evil.example', '/_caje/x/../..//evil.example/_caje/list', '/_caje/../other']

  it('is only ever a path under /_caje/, as the browser resolves it', async () => {
    const { cookie } = await signIn()
    for (const next of ESCAPES) {
      const res = await call(`/_caje/auth?next=${encodeURIComponent(next)}`, { headers: { cookie } })
      expect(res.status, next).toBe(303)
      expect(res.headers.get('location'), next).toBe('/_caje/list')
    }
    // Dot segments that stay under /_caje/ are resolved, and the query kept.
    const inside = await call(`/_caje/auth?next=${encodeURIComponent('/_caje/assets/../passkeys?x=1')}`, { headers: { cookie } })
    expect(inside.headers.get('location')).toBe('/_caje/passkeys?x=1')
  })

  it('is not carried into the sign-in form when it would leave /_caje/', async () => {
    for (const next of ESCAPES) {
      const page = await call(`/_caje/auth?next=${encodeURIComponent(next)}`)
      expect(page.status, next).toBe(200)
      expect(page.body, next).not.toContain('evil.example')
      expect(page.body, next).not.toContain('/other')
    }
  })
})

describe('sign-in rate limit through a real node', () => {
  it('refuses further attempts, even with the right password, once a client has used its budget', async () => {
    const limited = await startNode(origin.url, { CAJE_ADMIN_PASSWORD: SECRETS.CAJE_ADMIN_PASSWORD })
    try {
      const attempt = async (password: string) => {
        const { body, ...headers } = form({ password })
        return call('/_caje/auth/password', { method: 'POST', headers: { ...headers, accept: 'application/json' }, body }, limited)
      }
      const statuses: number[] = []
      for (let i = 0; i < 25; i++) statuses.push((await attempt(`wrong-${i}`)).status)
      expect(statuses.slice(0, 20).every((s) => s === 401)).toBe(true)
      expect(statuses.slice(20).every((s) => s === 429)).toBe(true)
      const right = await attempt(SECRETS.CAJE_ADMIN_PASSWORD)
      expect(right.status).toBe(429)
      expect(Number(right.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(right.headers.getSetCookie().some((c) => c.includes('caje_session='))).toBe(false)
    } finally {
      await limited.close()
    }
  })
})

describe('admin responses', () => {
  it('send a strict Content-Security-Policy with frame-ancestors none, X-Frame-Options and no-store on pages, redirects and errors', async () => {
    const { cookie } = await signIn()
    const responses = [
      await call('/_caje/auth'),
      await call('/_caje/list', { headers: { cookie } }),
      await call('/_caje/passkeys', { headers: { cookie } }),
      await call('/_caje/list'),
      await call('/_caje/no-such-page', { headers: { cookie } }),
      await call('/_caje/purge', { method: 'POST', headers: { accept: 'application/json' } }),
    ]
    for (const res of responses) {
      const csp = res.headers.get('content-security-policy') ?? ''
      expect(csp).toMatch(/frame-ancestors 'none'/)
      expect(csp).toMatch(/default-src 'none'|default-src 'self'/)
      expect(csp).toMatch(/object-src 'none'|default-src 'none'/)
      expect(csp).toMatch(/base-uri 'none'|base-uri 'self'/)
      expect(csp).toMatch(/form-action 'self'/)
      expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|unsafe-hashes|\*|https?:/)
      // Scripts, styles and connections only from caje itself (data: is tolerable for images only).
      const directives = new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k!, v.join(' ')]))
      for (const d of ['script-src', 'style-src', 'connect-src']) expect(directives.get(d) ?? directives.get('default-src'), d).toBe("'self'")
      expect(res.headers.get('x-frame-options')).toBe('DENY')
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    }
    // The proxy never stores an admin page.
    expect(await node.store.variants(`http://${new URL(node.url).host}/_caje/auth`)).toEqual([])
  })
})

describe('secrets', () => {
  it('never appear in logs, pages, headers or error bodies', async () => {
    // Provoke the paths most likely to echo what they were given.
    const { cookie } = await signIn()
    const { body, ...headers } = form({ password: `${SECRETS.CAJE_ADMIN_PASSWORD}x` })
    await call('/_caje/auth/password', { method: 'POST', headers: { ...headers, cookie: 'caje_session=bogus' }, body })
    await call(`/_caje/list?q=${encodeURIComponent('x')}`, { headers: { cookie } })
    await call('/_caje/status', { headers: { authorization: `Bearer ${SECRETS.CAJE_API_TOKEN}`, accept: 'application/json' } })
    await call('/_caje/metrics', { headers: { authorization: `Bearer ${SECRETS.CAJE_METRICS_TOKEN}` } })
    await call('/_caje/metrics', { headers: { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}` } })
    await call('/_caje/health')
    await call('/_caje/internal/manifest', { method: 'POST', headers: { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}`, 'content-type': 'application/json' }, body: '{"ops":[{"type":"nonsense"}]}' })
    await call('/_caje/internal/object?key=nope', { headers: { authorization: `Bearer ${SECRETS.CAJE_CLUSTER_SECRET}` } })
    await call('/_caje/purge', { method: 'POST', headers: { authorization: `Bearer ${SECRETS.CAJE_API_TOKEN}`, 'content-type': 'application/json', accept: 'application/json' }, body: '{not json' })
    await call('/page', { headers: { authorization: `Bearer ${SECRETS.CAJE_API_TOKEN}` } })
    await node.manifest.writer.flush()

    expect(logs.length).toBeGreaterThan(10)
    const logText = logs.map((l) => JSON.stringify(l)).join('\n')
    const pages = seen.join('\n---\n')
    const startup = node.notices.join('\n')
    for (const [name, value] of Object.entries(SECRETS)) {
      expect(logText.includes(value), `${name} in the logs`).toBe(false)
      expect(pages.includes(value), `${name} in a response`).toBe(false)
      expect(startup.includes(value), `${name} in the start-up notices`).toBe(false)
    }
    // Nothing the origin saw carries caje's secrets or its session cookie either.
    const toOrigin = JSON.stringify(origin.requests)
    for (const [name, value] of Object.entries(SECRETS)) {
      if (name === 'CAJE_API_TOKEN') continue // the client sent it to /page itself; forwarding a client's own header is not a leak
      expect(toOrigin.includes(value), `${name} sent to the origin`).toBe(false)
    }
    expect(toOrigin).not.toMatch(/caje_session=/)
  })
})
