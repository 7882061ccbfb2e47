import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../test-support/servers.ts'
import { parsePurge } from './cache-routes.ts'
import { CONTENT_SECURITY_POLICY } from './http.ts'
import * as repo from './repo.ts'
import { API_TOKEN, SITE, flashOf, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness
afterEach(async () => {
  await h?.close()
})

const bearer = (token = API_TOKEN) => ({ authorization: `Bearer ${token}` })

/** What the admin's actions change: this node's disk, the manifest, the purge log, populate. */
async function state() {
  return { disk: h.diskCount(), manifest: await h.manifestCount(), purges: await h.purgeCount(), populate: h.node.actions.populateStatus() ?? null }
}

/** Wait for the populate run to finish and return its status. */
async function populateDone() {
  let status = h.node.actions.populateStatus()
  await waitFor(() => (status = h.node.actions.populateStatus()) !== undefined && !status.running, 'populate to finish', 20_000)
  return status!
}

describe('unauthenticated requests', () => {
  it('redirect page GETs to the sign-in page', async () => {
    h = await setup()
    for (const p of ['/_caje/list', '/_caje/passkeys', '/_caje/confirm/clear_db', '/_caje/list?filter=a%20b']) {
      const res = await h.client().request(p)
      expect(res.status, p).toBe(303)
      expect(res.headers.get('location')).toBe(`/_caje/auth?next=${encodeURIComponent(p.slice(0))}`)
    }
    expect((await h.client().request('/_caje')).headers.get('location')).toBe('/_caje/list')
  })

  it('answer API GETs and every POST with 401 and do nothing', async () => {
    h = await setup({ entries: 6 })
    const before = await state()
    expect(before).toEqual({ disk: 5, manifest: 6, purges: 0, populate: null })
    expect((await h.client().request('/_caje/list', { headers: { accept: 'application/json' } })).status).toBe(401)
    const posts: Array<[string, Record<string, string>]> = [
      ['/_caje/purge', { kind: 'all', confirm: 'yes' }],
      ['/_caje/clear_fs', { confirm: 'yes' }],
      ['/_caje/clear_db', { confirm: 'yes' }],
      ['/_caje/populate', {}],
      ['/_caje/invites', {}],
      ['/_caje/tokens', { name: 'x' }],
      ['/_caje/logout', {}],
      ['/_caje/logout/all', {}],
      ['/_caje/register/options', {}],
      ['/_caje/passkeys/abc/remove', {}],
    ]
    for (const [p, form] of posts) {
      const res = await h.client().request(p, { form })
      expect(res.status, p).toBe(401)
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/)
    }
    expect(await state()).toEqual(before)
    expect(await repo.listApiTokens(h.deps.db)).toEqual([])
  })
})

describe('security headers', () => {
  it('are on every kind of admin response', async () => {
    h = await setup()
    const c = h.client()
    const responses = [
      await c.request('/_caje/auth'),
      await c.request('/_caje/list'),
      await c.request('/_caje/purge', { json: {} }),
      await c.request('/_caje/assets/admin.css'),
      await c.request('/_caje/nope'),
    ]
    await c.signInWithPassword()
    responses.push(await c.request('/_caje/list'), await c.request('/_caje/list', { headers: { accept: 'application/json' } }))
    for (const res of responses) {
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(res.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY)
      expect(res.headers.get('x-frame-options')).toBe('DENY')
      expect(res.headers.get('referrer-policy')).toBe('same-origin')
    }
    expect(CONTENT_SECURITY_POLICY).toMatch(/default-src 'self'/)
    expect(CONTENT_SECURITY_POLICY).toMatch(/frame-ancestors 'none'/)
  })
})

describe('assets', () => {
  it('serves the stylesheet, page scripts and the @simplewebauthn/browser ESM build', async () => {
    h = await setup()
    const c = h.client()
    const css = await c.request('/_caje/assets/admin.css')
    expect(css.status).toBe(200)
    expect(css.headers.get('content-type')).toMatch(/text\/css/)
    const index = await c.request('/_caje/assets/webauthn/index.js')
    expect(index.status).toBe(200)
    expect(index.headers.get('content-type')).toMatch(/javascript/)
    expect(await index.text()).toContain('startAuthentication')
    expect((await c.request('/_caje/assets/webauthn/methods/startRegistration.js')).status).toBe(200)
    expect((await c.request('/_caje/assets/sign-in.js')).status).toBe(200)
    expect((await c.request('/_caje/assets/../src/config.ts')).status).toBe(404)
    expect((await c.request('/_caje/assets/webauthn/index.d.ts')).status).toBe(404)
  })
})

describe('CSRF', () => {
  it('refuses a form post without the token, with a wrong one, or from another site', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const before = await state()
    expect((await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1` }, csrf: false })).status).toBe(403)
    expect((await c.request('/_caje/purge', { form: { kind: 'all', confirm: 'yes', _csrf: 'x'.repeat(32) } })).status).toBe(403)
    expect((await c.request('/_caje/clear_fs', { json: {}, headers: { 'x-csrf-token': 'nope' } })).status).toBe(403)
    expect((await c.request('/_caje/clear_db', { form: { confirm: 'yes' }, headers: { origin: 'https://evil.example' } })).status).toBe(403)
    expect((await c.request('/_caje/populate', { form: {}, headers: { 'sec-fetch-site': 'same-site' } })).status).toBe(403)
    expect((await c.request('/_caje/logout', { form: {}, csrf: false })).status).toBe(403)
    expect(await state()).toEqual(before)
    // The same requests with the token and our origin go through.
    const ok = await c.request('/_caje/populate', { form: {}, headers: { origin: 'http://localhost:8080', 'sec-fetch-site': 'same-origin' } })
    expect(ok.status).toBe(303)
    expect(await populateDone()).toMatchObject({ done: 1, failed: 0 })
    expect(h.diskCount()).toBe(6)
  })

  it('accepts the token in the X-CSRF-Token header', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const res = await c.request('/_caje/purge', { json: { url: `${SITE}/blog/post-1` } })
    expect(res.status).toBe(200)
    expect(await h.purgeCount()).toBe(1)
  })
})

describe('list', () => {
  it('shows the disk entries and the manifest with status, filter and pagination', async () => {
    h = await setup({ entries: 130 })
    const c = h.client()
    await c.signInWithPassword()
    const { res, html } = await c.page('/_caje/list')
    expect(res.status).toBe(200)
    expect(html).toContain('node-a')
    expect(html).toContain('ams')
    expect(html).toContain('0.0\u00a0%') // every sample page was a miss
    expect(html).toContain('primary')
    expect(html).toContain(`${SITE}/`)
    expect((await c.page('/_caje/list?filter=post-121')).html).toContain(`${SITE}/blog/post-121<`)
    expect(html).toMatch(/1–50 of 109/) // disk: 5 of every 6 sample entries
    expect(html).toMatch(/1–50 of 130/)
    expect(html).toContain('disk=50#disk')
    const page2 = await c.page('/_caje/list?disk=100&manifest=50')
    expect(page2.html).toMatch(/101–109 of 109/)
    expect(page2.html).toMatch(/51–100 of 130/)
    const filtered = await c.page('/_caje/list?filter=products')
    expect(filtered.html).toMatch(/of 26</)
    expect(filtered.html).not.toContain('/blog/post-1<')
    const none = await c.page('/_caje/list?filter=zzz')
    expect(none.html).toContain('Nothing matches this filter.')
  })

  it('answers JSON for scripts', async () => {
    h = await setup({ entries: 20 })
    const res = await h.client().request('/_caje/list?limit=5&offset=5&filter=example', { headers: bearer() })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { status: { nodeId: string }; disk: { total: number; offset: number; entries: unknown[] }; manifest: { total: number } }
    expect(body.status.nodeId).toBe('node-a')
    expect(body.disk.offset).toBe(5)
    expect(body.disk.entries).toHaveLength(5)
    expect(body.manifest.total).toBe(20)
  })

  it('stays fast with 100,000 entries in the manifest', async () => {
    h = await setup({ entries: 60, peerRows: 99_940 })
    const c = h.client()
    await c.signInWithPassword()
    const t0 = performance.now()
    const { res, html } = await c.page('/_caje/list?disk=40&manifest=99950')
    const ms = performance.now() - t0
    expect(res.status).toBe(200)
    expect(html).toMatch(/41–50 of 50/)
    expect(html).toMatch(/99,951–100,000 of 100,000/)
    // One page of each, never the whole manifest.
    expect((html.match(/<tr>/g) ?? []).length).toBeLessThanOrEqual(62)
    // A page costs milliseconds; the bound only catches reading or rendering all 100,000 rows,
    // with a margin no loaded machine uses up (bench/ measures speed).
    expect(ms).toBeLessThan(5_000)
  })

  it('clamps silly paging values', async () => {
    h = await setup()
    const res = await h.client().request('/_caje/list?limit=100000&disk=-5&manifest=abc', { headers: bearer() })
    const body = (await res.json()) as { limit: number; disk: { offset: number }; manifest: { offset: number } }
    expect(body.limit).toBe(500)
    expect(body.disk.offset).toBe(0)
    expect(body.manifest.offset).toBe(0)
  })
})

describe('purge', () => {
  it('by URL, prefix and tag from the form, redirecting back with what happened', async () => {
    h = await setup({ entries: 30 })
    const c = h.client()
    await c.signInWithPassword()
    const byUrl = await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1` } })
    expect(byUrl.status).toBe(303)
    expect(byUrl.headers.get('location')).toBe('/_caje/list')
    expect(flashOf(byUrl)).toMatchObject({ kind: 'ok', text: expect.stringMatching(/1 entry removed/) })
    const byPrefix = await c.request('/_caje/purge', { form: { kind: 'prefix', value: `${SITE}/api/` } })
    // /api/products/4, 9, ..., 29: six pages, /api/products/24 on the peer only.
    expect(flashOf(byPrefix)?.text).toMatch(/^Purged prefix http:\/\/www\.example\.com\/api\/: 5 entries removed/)
    const byTag = await c.request('/_caje/purge', { form: { kind: 'tag', value: 'images' } })
    expect(flashOf(byTag)?.text).toMatch(/Purged tag images: 5 entries removed/)
    // Gone from this node's disk and from the manifest (the peer's pages too); the rest stays.
    expect(await h.node.store.variants(`${SITE}/blog/post-1`)).toEqual([])
    expect((await h.manifestEntries('/blog/')).map((e) => e.url)).not.toContain(`${SITE}/blog/post-1`)
    for (const gone of ['/api/', '/images/']) expect(await h.manifestCount(gone), gone).toBe(0)
    expect(h.diskCount()).toBe(25 - 1 - 5 - 5)
    expect(await h.manifestCount()).toBe(30 - 1 - 6 - 6)
    expect(await h.purgeCount()).toBe(3)
    // The message shows on the next page, once.
    const { html } = await c.page('/_caje/list')
    expect(html).toContain('Purged tag images')
    expect((await c.page('/_caje/list')).html).not.toContain('Purged tag images')
  })

  it('asks for confirmation before purging everything from the form', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const res = await c.request('/_caje/purge', { form: { kind: 'all' } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/confirm/purge_all')
    expect(await state()).toEqual({ disk: 5, manifest: 6, purges: 0, populate: null })
    const { html } = await c.page('/_caje/confirm/purge_all')
    expect(html).toContain('Purge everything?')
    const done = await c.request('/_caje/purge', { form: { kind: 'all', confirm: 'yes' } })
    expect(flashOf(done)?.text).toMatch(/Purged everything: 5 entries removed/)
    expect(await state()).toEqual({ disk: 0, manifest: 0, purges: 1, populate: null })
  })

  it('takes the JSON shapes with a bearer token and no CSRF token', async () => {
    h = await setup({ entries: 10 })
    const c = h.client()
    const url = await c.request('/_caje/purge', { json: { url: `${SITE}/blog/post-1` }, headers: bearer() })
    expect(url.status).toBe(200)
    expect(await url.json()).toMatchObject({ ok: true, removed: 1 })
    const docs = await c.request('/_caje/purge', { json: { prefix: `${SITE}/docs/` }, headers: bearer() })
    expect(await docs.json()).toMatchObject({ ok: true, removed: 2 })
    const assets = await c.request('/_caje/purge', { json: { tag: 'assets' }, headers: bearer() })
    expect(await assets.json()).toMatchObject({ ok: true, removed: 2 })
    const all = await c.request('/_caje/purge', { json: { all: true }, headers: bearer() })
    expect(await all.json()).toMatchObject({ ok: true, removed: 4 })
    expect(await state()).toEqual({ disk: 0, manifest: 0, purges: 4, populate: null })
    expect(h.logs.find((l) => l.event === 'admin.purge')?.by).toBe('token:CAJE_API_TOKEN')
  })

  it('refuses bad input', async () => {
    h = await setup()
    const c = h.client()
    for (const body of [{}, { url: '' }, { url: 'not a url' }, { url: 'ftp://x/y' }, { prefix: '' }, { tag: '  ' }, { all: false }]) {
      const res = await c.request('/_caje/purge', { json: body, headers: bearer() })
      expect(res.status, JSON.stringify(body)).toBe(400)
    }
    expect(await h.purgeCount()).toBe(0)
  })

  it('reports a failing action without its details', async () => {
    h = await setup()
    // The node's purge fails as a full disk would make it.
    h.node.actions.purge = async () => {
      throw new Error('SQLITE_FULL: secret path /var/lib/x')
    }
    const res = await h.client().request('/_caje/purge', { json: { all: true }, headers: bearer() })
    expect(res.status).toBe(500)
    const text = await res.text()
    expect(text).not.toContain('SQLITE_FULL')
    expect(h.logs.find((l) => l.event === 'admin.action_failed')?.error).toMatch(/SQLITE_FULL/)
  })
})

describe('populate', () => {
  it('starts a run, reports progress, and refuses a second run while one is going', async () => {
    h = await setup({ entries: 12 })
    const c = h.client()
    await c.signInWithPassword()
    expect(h.diskCount()).toBe(10)
    // The origin holds its answers: the run cannot finish before the second request.
    const release = h.holdOrigin()
    const res = await c.request('/_caje/populate', { form: {} })
    expect(flashOf(res)?.text).toBe('Populate started. Progress shows below.')
    const again = await c.request('/_caje/populate', { json: {} })
    expect(await again.json()).toMatchObject({ started: false, message: 'Populate is already running.' })
    expect(h.node.actions.populateStatus()?.running).toBe(true)
    release()
    expect(await populateDone()).toMatchObject({ done: 2, failed: 0 })
    // The peer's two pages are on this node's disk now, fetched from the origin.
    expect(h.diskCount()).toBe(12)
    expect(await h.node.store.variants(`${SITE}/blog/post-6`)).toHaveLength(1)
    const status = (await (await c.request('/_caje/populate', { headers: { accept: 'application/json' } })).json()) as {
      populate: { running: boolean; done: number }
      summary: string
    }
    expect(status.populate.running).toBe(false)
    expect(status.summary).toMatch(/^Last run · 2 fetched/)
    const { html } = await c.page('/_caje/list')
    expect(html).toMatch(/Last run · 2 fetched, \d+ skipped, 0 failed/)
  })

  it('answers 202 to a script that starts a run', async () => {
    h = await setup()
    const res = await h.client().request('/_caje/populate', { json: {}, headers: bearer() })
    expect(res.status).toBe(202)
    expect(await populateDone()).toMatchObject({ done: 0, failed: 0 })
  })
})

describe('clear', () => {
  it('clear FS and clear DB go through a confirmation page', async () => {
    h = await setup({ entries: 12 })
    const c = h.client()
    await c.signInWithPassword()
    const ask = await c.request('/_caje/clear_db', { form: {} })
    expect(ask.headers.get('location')).toBe('/_caje/confirm/clear_db')
    expect(await h.manifestCount()).toBe(12)
    expect((await c.page('/_caje/confirm/clear_db')).html).toContain('Clear the shared manifest?')
    const db = await c.request('/_caje/clear_db', { form: { confirm: 'yes' } })
    expect(flashOf(db)?.text).toBe('Cleared the shared manifest: 12 rows removed.')
    expect(await h.manifestCount()).toBe(0)
    expect(h.diskCount()).toBe(10)
    const fs = await c.request('/_caje/clear_fs', { form: { confirm: 'yes' } })
    expect(flashOf(fs)?.text).toBe('Cleared this node’s disk cache: 10 entries removed.')
    expect(h.diskCount()).toBe(0)
    expect(await h.node.store.list({ limit: 10 })).toMatchObject({ total: 0 })
    expect((await c.page('/_caje/confirm/bogus')).res.status).toBe(404)
  })

  it('scripts clear without the confirmation step', async () => {
    h = await setup({ entries: 6 })
    const res = await h.client().request('/_caje/clear_fs', { json: {}, headers: bearer() })
    expect(await res.json()).toMatchObject({ ok: true, removed: 5 })
    expect(h.diskCount()).toBe(0)
    const db = await h.client().request('/_caje/clear_db', { json: {}, headers: bearer() })
    expect(await db.json()).toMatchObject({ ok: true, removed: 6 })
    expect(await h.manifestCount()).toBe(0)
  })
})

describe('API tokens', () => {
  it('are created in the UI, shown once, stored hashed, work as bearer tokens, and can be revoked', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const created = await c.request('/_caje/tokens', { form: { name: 'deploy' } })
    const token = flashOf(created)?.secret?.value
    expect(token).toMatch(/^caje_/)
    const rows = await repo.listApiTokens(h.deps.db)
    expect(rows).toHaveLength(1)
    expect(rows[0]!.token_hash).not.toContain(token!)
    const { html } = await c.page('/_caje/passkeys')
    expect(html).toContain(token!) // shown once, in the flash
    expect((await c.page('/_caje/passkeys')).html).not.toContain(token!)

    const api = h.client()
    expect((await api.request('/_caje/purge', { json: { tag: 'blog' }, headers: bearer(token) })).status).toBe(200)
    expect((await repo.listApiTokens(h.deps.db))[0]!.last_used_at).toBe(h.clock.now)
    expect(h.logs.find((l) => l.event === 'admin.purge')?.by).toBe(`token:${rows[0]!.id}`)

    expect((await c.request(`/_caje/tokens/${rows[0]!.id}/revoke`, { form: {} })).status).toBe(303)
    const revoked = await api.request('/_caje/purge', { json: { all: true }, headers: bearer(token) })
    expect(revoked.status).toBe(401)
    expect(await h.purgeCount()).toBe(1)
    expect(h.diskCount()).toBe(4) // only the blog page went, by the token's one purge
  })

  it('cannot manage passkeys, invites or tokens', async () => {
    h = await setup()
    const c = h.client()
    expect((await c.request('/_caje/tokens', { json: { name: 'x' }, headers: bearer() })).status).toBe(403)
    expect((await c.request('/_caje/invites', { json: {}, headers: bearer() })).status).toBe(403)
    expect((await c.request('/_caje/passkeys', { headers: bearer() })).status).toBe(403)
  })

  it('refuses an unknown bearer token even with a valid session cookie', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const res = await c.request('/_caje/list', { headers: bearer('caje_not-a-real-token') })
    expect(res.status).toBe(401)
  })
})

describe('admins', () => {
  it('cannot remove themselves', async () => {
    h = await setup()
    const c = h.client()
    await c.signInWithPassword()
    const [me] = await repo.listAdmins(h.deps.db)
    const res = await c.request(`/_caje/admins/${me!.id}/remove`, { json: {} })
    expect(res.status).toBe(409)
  })
})

describe('parsePurge', () => {
  it('reads both the form and the JSON shapes', () => {
    expect(parsePurge({ kind: 'prefix', value: ' https://a/ ' }, true)).toMatchObject({ ok: true, request: { kind: 'prefix', value: 'https://a/' } })
    expect(parsePurge({ kind: 'all' }, true)).toEqual({ ok: 'confirm' })
    expect(parsePurge({ kind: 'all' }, false)).toMatchObject({ ok: true, request: { kind: 'all' } })
    expect(parsePurge({ url: 'https://a.example/x?y=1' }, false)).toMatchObject({ ok: true, request: { kind: 'url', value: 'https://a.example/x?y=1' } })
    expect(parsePurge({ kind: 'bogus', value: 'x' }, true)).toMatchObject({ ok: false })
  })

  it('spells a URL or URL prefix as the proxy keys it: host normalised, dot segments and escapes of unreserved characters resolved', () => {
    expect(parsePurge({ url: 'http://Site.Test:80/docs/%2e%2e/legal/%6Fld?q=%7e' }, false)).toMatchObject({ ok: true, request: { kind: 'url', value: 'http://site.test/legal/old?q=~' } })
    expect(parsePurge({ url: 'https://site.test.' }, false)).toMatchObject({ ok: true, request: { kind: 'url', value: 'https://site.test/' } })
    expect(parsePurge({ prefix: 'HTTPS://Site.Test/%7euser/' }, false)).toMatchObject({ ok: true, request: { kind: 'prefix', value: 'https://site.test/~user/' } })
  })
})
