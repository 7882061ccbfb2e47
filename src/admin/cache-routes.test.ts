import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../test-support/servers.ts'
import { queryPlans } from '../test-support/query-plans.ts'
import { sqliteHandleOf } from '../manifest/database.ts'
import { parsePurge } from './cache-routes.ts'
import { CONTENT_SECURITY_POLICY } from './http.ts'
import * as repo from './repo.ts'
import { listManifest, toEntryRecord, type MinuteStats, type PathMisses } from '../manifest/repositories.ts'
import { createAdminApp } from './app.ts'
import { API_TOKEN, Client, ORIGIN, PEER, SITE, fetchAsSite, flashOf, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness
afterEach(async () => {
  await h?.close()
})

const bearer = (token = API_TOKEN) => ({ authorization: `Bearer ${token}` })

/** What the admin's actions change: this node's disk, the manifest, the purge log, populate. */
async function state() {
  return { disk: h.diskCount(), manifest: await h.manifestCount(), purges: await h.purgeCount(), populate: h.node.actions.populateStatus() ?? null }
}

/** Record a heartbeat of node `id` sent at `at` (epoch ms), as that node's writer would. */
async function heartbeat(id: string, at: number) {
  h.node.manifest.writer.submit({ type: 'node-heartbeat', node: { id, region: 'fra', internalUrl: `http://${id}.internal:8081`, startedAt: at - 3_600_000 }, at })
  await h.node.manifest.writer.flush()
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
    // Scripts (JSON) get 403; a browser form is sent back to its page instead (see below).
    expect((await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1` }, csrf: false, headers: { accept: 'application/json' } })).status).toBe(403)
    expect((await c.request('/_caje/purge', { form: { kind: 'all', confirm: 'yes', _csrf: 'x'.repeat(32) }, headers: { accept: 'application/json' } })).status).toBe(403)
    expect((await c.request('/_caje/clear_fs', { json: {}, headers: { 'x-csrf-token': 'nope' } })).status).toBe(403)
    expect((await c.request('/_caje/clear_db', { form: { confirm: 'yes' }, headers: { origin: 'https://evil.example' } })).status).toBe(403)
    expect((await c.request('/_caje/populate', { form: {}, headers: { 'sec-fetch-site': 'same-site' } })).status).toBe(403)
    expect((await c.request('/_caje/logout', { form: {}, csrf: false, headers: { accept: 'application/json' } })).status).toBe(403)
    expect(await state()).toEqual(before)
    // The same requests with the token and our origin go through.
    const ok = await c.request('/_caje/populate', { form: {}, headers: { origin: 'http://localhost:8080', 'sec-fetch-site': 'same-origin' } })
    expect(ok.status).toBe(303)
    expect(await populateDone()).toMatchObject({ done: 1, failed: 0 })
    expect(h.diskCount()).toBe(6)
  })

  it('sends a browser form with a stale token back to its page with a message, and does nothing', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const before = await state()
    const referer = 'http://localhost:8080/_caje/list?filter=blog'
    const res = await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1`, _csrf: 'x'.repeat(32) }, headers: { referer } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/list?filter=blog')
    expect(flashOf(res)).toMatchObject({ kind: 'error', text: 'This page was out of date, so that was not done. Try again.' })
    // A Referer from elsewhere never chooses where to go.
    const elsewhere = await c.request('/_caje/purge', { form: { kind: 'all', confirm: 'yes', _csrf: 'x'.repeat(32) }, headers: { referer: 'https://evil.example/_caje/passkeys' } })
    expect(elsewhere.headers.get('location')).toBe('/_caje/list')
    // A cross-site post gets an error page, not JSON.
    const cross = await c.request('/_caje/clear_db', { form: { confirm: 'yes' }, headers: { origin: 'https://evil.example' } })
    expect(cross.status).toBe(403)
    expect(cross.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await cross.text()).toContain('Error 403')
    expect(await state()).toEqual(before)
  })

  it('shows the sign-in page, with the page to return to, for a form posted after the session ended', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const before = await state()
    const stale = c.csrfToken!
    await c.request('/_caje/logout', { form: {} })
    const res = await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1`, _csrf: stale }, headers: { referer: 'http://localhost:8080/_caje/list?filter=blog' } })
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await res.text()
    expect(html).toContain('Your session ended, so that was not done. Sign in, then try again.')
    expect(html).toContain('name="next" value="/_caje/list?filter=blog"')
    expect(await state()).toEqual(before)
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

/** The href of a manifest pager link ("First", "Previous", "Next", "Last"), undefined when it is disabled. */
function manifestLink(html: string, label: string): string | undefined {
  const nav = /<nav data-component="pager" aria-label="manifest pages">.*?<\/nav>/s.exec(html)?.[0] ?? ''
  return new RegExp(`<a href="([^"]+)"[^>]*>${label}</a>`).exec(nav)?.[1]?.replace(/&amp;/g, '&')
}

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

  it('says which entries are in memory only, on disk, or both', async () => {
    h = await setup({ env: { CAJE_DISK_ADMISSION: 'second-request' } })
    // Asked for once: memory only. Asked for twice: written to disk from memory, and still there.
    expect(await fetchAsSite(h.node, '/blog/post-1')).toBe(200)
    for (let i = 0; i < 2; i++) expect(await fetchAsSite(h.node, '/blog/post-2')).toBe(200)
    await h.node.store.drain()
    const c = h.client()
    await c.signInWithPassword()
    const { html } = await c.page('/_caje/list')
    const rowOf = (path: string) => html.split('<tr').find((row) => row.includes(`${SITE}${path}<`)) ?? ''
    expect(rowOf('/blog/post-1')).toMatch(/data-kind="memory-only"[^>]*>memory only</)
    expect(rowOf('/blog/post-2')).toMatch(/data-kind="memory">memory \+ disk</)
    const json = (await (await h.client().request('/_caje/list', { headers: bearer() })).json()) as { disk: { entries: Array<{ url: string; inMemory: boolean; onDisk: boolean }> } }
    const byUrl = new Map(json.disk.entries.map((e) => [e.url, e]))
    expect(byUrl.get(`${SITE}/blog/post-1`)).toMatchObject({ inMemory: true, onDisk: false })
    expect(byUrl.get(`${SITE}/blog/post-2`)).toMatchObject({ inMemory: true, onDisk: true })
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

  it('reads one page, never the whole manifest, with 100,000 entries in it', async () => {
    h = await setup({ entries: 60, peerRows: 99_940 })
    const c = h.client()
    await c.signInWithPassword()
    const first = await c.page('/_caje/list?disk=40')
    const last = manifestLink(first.html, 'Last')!
    const { res, html } = await c.page(last)
    expect(res.status).toBe(200)
    expect(html).toMatch(/41–50 of 50/)
    expect(html).toMatch(/99,951–100,000 of 100,000/)
    // One page of each, never the whole manifest: 10 + 50 rows and the three tables' header rows.
    expect((html.match(/<tr>/g) ?? []).length).toBeLessThanOrEqual(63)
    // Read as one page, never the whole manifest: the queries behind that page (the same listing
    // on this node's own handle) find the page's rows by walking the stored_at index, which stops
    // at the page's end; none scans the table itself (which would read, and sort, every row).
    const cursor = new URL(last, ORIGIN).searchParams.get('manifest_cursor')!
    const plans = await queryPlans(sqliteHandleOf(h.deps.db)!, () => listManifest(h.deps.db, { filter: '', limit: 50, cursor }))
    expect(plans.length).toBeGreaterThan(0)
    const scans = plans.flatMap((plan) => plan.split('; ')).filter((step) => /^SCAN (e|entries)\b/.test(step))
    expect(scans).toEqual(['SCAN e USING COVERING INDEX entries_stored_at'])
    // Every link out of a deep page finds its page by cursor: back one page, and paging the disk
    // table keeps the manifest where it is.
    const prev = await c.page(manifestLink(html, 'Previous')!)
    expect(prev.html).toMatch(/99,901–99,950 of 100,000/)
    expect(manifestLink(prev.html, 'Previous')).toMatch(/manifest=99850&manifest_cursor=/)
    const diskFirst = /aria-label="disk pages">.*?<a href="([^"]+)" data-component="button-link">First<\/a>/s.exec(prev.html)?.[1]?.replace(/&amp;/g, '&')
    const kept = await c.page(diskFirst!)
    expect(kept.html).toMatch(/1–50 of 50/)
    expect(kept.html).toMatch(/99,901–99,950 of 100,000/)
    // A deep page by offset would walk every entry before it: refused, saying what to do instead.
    const deep = await c.request('/_caje/list?manifest=99950', { headers: bearer() })
    expect(deep.status).toBe(400)
    expect(await deep.text()).toMatch(/by cursor/)
  })

  it('pages a filter matching more entries than it counts by cursor, and says "10,000+"', async () => {
    h = await setup({ peerRows: 10_100 })
    const c = h.client()
    await c.signInWithPassword()
    const first = await c.page('/_caje/list?filter=%2Fbulk%2F')
    expect(first.html).toContain('<nav data-component="pager" aria-label="manifest pages"><span data-slot="range">1–50 of 10,000+</span>')
    // No last page to offer: the count stopped at the cap.
    expect(first.html).toMatch(/aria-label="manifest pages">.*?<span data-component="button-link" aria-disabled="true">Last<\/span>/s)
    const next = /aria-label="manifest pages">.*?<a href="([^"]+)" rel="next"/s.exec(first.html)?.[1]?.replace(/&amp;/g, '&')
    expect(next).toMatch(/^\/_caje\/list\?filter=%2Fbulk%2F&manifest=50&manifest_cursor=[^&#]+#manifest$/)
    const second = await c.page(next!)
    expect(second.html).toContain('<span data-slot="range">51–100 of 10,000+</span>')
    // The newest first: the second page starts where the first ended.
    const urls = (html: string) => [...html.matchAll(/<span title="(http:\/\/www\.example\.com\/bulk\/\d+)">/g)].map((m) => m[1])
    expect(urls(first.html)[0]).toBe(`${SITE}/bulk/10099`)
    expect(urls(second.html)[0]).toBe(`${SITE}/bulk/10049`)
    // A cursor this node did not make is refused with what to do instead.
    const bad = await c.request('/_caje/list?manifest_cursor=nonsense', { headers: bearer() })
    expect(bad.status).toBe(400)
    expect(await bad.text()).toMatch(/nextCursor/)
    // A cursor of the order by key, as earlier versions made them (a saved link): 400, start again.
    const old = Buffer.from(JSON.stringify([Date.now(), `${SITE}/bulk/10049`, ''])).toString('base64url')
    const stale = await c.request(`/_caje/list?manifest_cursor=${old}`, { headers: bearer() })
    expect(stale.status).toBe(400)
    expect(await stale.text()).toMatch(/first page again/)
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
    const byPrefix = await c.request('/_caje/purge', { form: { kind: 'prefix', value: `${SITE}/api/`, confirm: 'yes' } })
    // /api/products/4, 9, ..., 29: six pages, /api/products/24 on the peer only.
    expect(flashOf(byPrefix)?.text).toMatch(/^Purged prefix http:\/\/www\.example\.com\/api\/: 5 entries removed/)
    const byTag = await c.request('/_caje/purge', { form: { kind: 'tag', value: 'images', confirm: 'yes' } })
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

  it('shows what a prefix, tag or everything purge covers and asks to confirm; then lists it in the history', async () => {
    h = await setup({ entries: 30 })
    // The peer is alive (it counts among the nodes to apply a purge) but applies nothing here.
    await heartbeat(PEER, Date.now())
    const c = h.client()
    await c.signInWithPassword()
    const prefix = `${SITE}/api/`
    const ask = await c.request('/_caje/purge', { form: { kind: 'prefix', value: prefix } })
    expect(ask.headers.get('location')).toBe(`/_caje/confirm/purge?kind=prefix&value=${encodeURIComponent(prefix)}`)
    expect(await h.purgeCount()).toBe(0)
    const covered = (await h.manifestEntries()).filter((m) => m.url.startsWith(prefix))
    // /api/products/4, 9, ..., 29: on this node but /api/products/24, which only the peer holds.
    expect(covered).toHaveLength(6)
    const preview = await c.page(ask.headers.get('location')!)
    expect(preview.html).toContain(`Purge prefix ${prefix}?`)
    expect(preview.html).toContain(`<dd data-slot="entries">${covered.reduce((n, m) => n + m.variants, 0)}</dd>`)
    expect(preview.html).toContain('<dd data-slot="nodes">node-a, node-b</dd>')
    // Scripts ask the same question without the page.
    const json = await c.request(`/_caje/purge/preview?kind=prefix&value=${encodeURIComponent(prefix)}`, { headers: bearer() })
    expect(await json.json()).toMatchObject({ ok: true, purge: { kind: 'prefix', value: prefix }, entries: covered.length, nodes: ['node-a', 'node-b'] })
    const yes = await c.request('/_caje/purge', { form: { kind: 'prefix', value: prefix, confirm: 'yes' } })
    expect(flashOf(yes)?.text).toMatch(/^Purged prefix/)
    // This node records that it applied the purge on its next pass over the purge log; the peer never does here.
    const row = new RegExp(`<tr data-purge="1">.*${prefix.replace(/[/.]/g, '\\$&')}.*admin:.*applied on 1 of 2 nodes`, 's')
    await waitFor(async () => row.test((await c.page('/_caje/purges')).html), 'the history to show the purge applied on this node')
  })

  it('asks for confirmation before purging everything from the form', async () => {
    h = await setup({ entries: 6 })
    const c = h.client()
    await c.signInWithPassword()
    const res = await c.request('/_caje/purge', { form: { kind: 'all' } })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/_caje/confirm/purge?kind=all')
    expect(await state()).toEqual({ disk: 5, manifest: 6, purges: 0, populate: null })
    const { html } = await c.page('/_caje/confirm/purge?kind=all')
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
    // Scripts get machine fields, never the page's sentences.
    expect(await url.json()).toEqual({ ok: true, purge: { kind: 'url', value: `${SITE}/blog/post-1`, soft: false }, removed: 1 })
    const docs = await c.request('/_caje/purge', { json: { prefix: `${SITE}/docs/` }, headers: bearer() })
    expect(await docs.json()).toMatchObject({ ok: true, removed: 2 })
    const assets = await c.request('/_caje/purge', { json: { tag: 'assets' }, headers: bearer() })
    expect(await assets.json()).toMatchObject({ ok: true, removed: 2 })
    const all = await c.request('/_caje/purge', { json: { all: true }, headers: bearer() })
    expect(await all.json()).toMatchObject({ ok: true, removed: 4 })
    expect(await state()).toEqual({ disk: 0, manifest: 0, purges: 4, populate: null })
    expect(h.logs.find((l) => l.event === 'admin.purge')?.by).toBe('token:CAJE_API_TOKEN')
  })

  it('soft-purges with "soft": true: entries stay, marked stale, and the history and preview say soft', async () => {
    h = await setup({ entries: 10 })
    const c = h.client()
    const before = await state()
    const res = await c.request('/_caje/purge', { json: { prefix: `${SITE}/docs/`, soft: true }, headers: bearer() })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ ok: true, purge: { kind: 'prefix', value: `${SITE}/docs/`, soft: true }, removed: 0, marked: 2 })
    // Nothing removed anywhere: the disk and the manifest keep their entries, the purge log has one more.
    expect(await state()).toEqual({ ...before, purges: 1 })
    const docs = (await h.node.store.list({ filter: '/docs/', limit: 100 })).entries
    expect(docs).toHaveLength(2)
    expect(docs.every((e) => e.softPurgedAt !== undefined && e.staleAt <= Date.now())).toBe(true)
    expect((await h.manifestEntries()).filter((m) => m.url.includes('/docs/')).every((m) => m.staleAt <= Date.now())).toBe(true)
    // The preview asks the same question of a soft purge, and says so.
    const preview = await c.request(`/_caje/purge/preview?kind=tag&value=assets&soft=yes`, { headers: bearer() })
    expect(await preview.json()).toMatchObject({ ok: true, purge: { kind: 'tag', value: 'assets', soft: true } })
    // The history: soft, and when this node applied it.
    await waitFor(async () => {
      const { purges } = (await (await c.request('/_caje/purges', { headers: bearer() })).json()) as { purges: Array<{ request: { soft: boolean }; appliedAt: Record<string, number> }> }
      return purges.length === 1 && purges[0]!.request.soft && typeof purges[0]!.appliedAt['node-a'] === 'number'
    }, 'the history to show when this node applied the soft purge')
    expect((await c.request('/_caje/purge', { json: { all: true, soft: 'maybe' }, headers: bearer() })).status).toBe(400)
  })

  it('soft-purges from the form: a row button, and the confirmation of a wider purge keeps the choice', async () => {
    h = await setup({ entries: 10 })
    const c = h.client()
    await c.signInWithPassword()
    const before = await state()
    const row = await c.request('/_caje/purge', { form: { kind: 'url', value: `${SITE}/blog/post-1`, soft: 'yes' } })
    expect(flashOf(row)?.text).toMatch(/^Soft-purged .*1 entry marked stale on this node/)
    const ask = await c.request('/_caje/purge', { form: { kind: 'tag', value: 'assets', soft: 'yes' } })
    expect(ask.headers.get('location')).toBe('/_caje/confirm/purge?kind=tag&value=assets&soft=yes')
    const preview = await c.page(ask.headers.get('location')!)
    expect(preview.html).toContain('Soft purge tag assets?')
    expect(preview.html).toContain('<dd data-slot="mode">soft: marked stale, kept</dd>')
    expect(preview.html).toContain('<input type="hidden" name="soft" value="yes"/>')
    const yes = await c.request('/_caje/purge', { form: { kind: 'tag', value: 'assets', soft: 'yes', confirm: 'yes' } })
    expect(flashOf(yes)?.text).toMatch(/^Soft-purged tag assets: 2 entries marked stale/)
    const history = await c.page('/_caje/purges')
    expect(history.html.match(/data-kind="soft" data-slot="mode"/g)).toHaveLength(2)
    expect(await state()).toEqual({ ...before, purges: 2 })
  })

  it('refuses bad input', async () => {
    h = await setup()
    const c = h.client()
    for (const body of [{}, { url: '' }, { url: 'not a url' }, { url: 'ftp://x/y' }, { prefix: '' }, { tag: '  ' }, { all: false }]) {
      const res = await c.request('/_caje/purge', { json: body, headers: bearer() })
      expect(res.status, JSON.stringify(body)).toBe(400)
      const answer = (await res.json()) as { ok: boolean; code: string; error: string }
      expect(answer.ok).toBe(false)
      expect(answer.code, JSON.stringify(body)).toBe(body.url === 'not a url' || body.url === 'ftp://x/y' ? 'purge_bad_url' : 'purge_needs_value')
      expect(answer.error).toMatch(/\.$/)
    }
    expect(await h.purgeCount()).toBe(0)
  })

  it('refuses a prefix that is not the start of an absolute URL, and a body that is not JSON, saying which', async () => {
    h = await setup()
    const c = h.client()
    for (const prefix of ['/blog/', 'example.com/blog/', 'ftp://example.com/']) {
      const res = await c.request('/_caje/purge', { json: { prefix }, headers: bearer() })
      expect(res.status, prefix).toBe(400)
      expect(await res.json()).toMatchObject({ ok: false, code: 'purge_bad_url', error: 'A prefix purge needs the start of an absolute URL, e.g. https://example.com/blog/.' })
    }
    expect(await h.purgeCount()).toBe(0)
    const ok = await c.request('/_caje/purge', { json: { prefix: 'https://example.com/blog/' }, headers: bearer() })
    expect(ok.status).toBe(200)
    expect(await h.purgeCount()).toBe(1)
    const broken = await h.app.request('/_caje/purge', { method: 'POST', body: "{'url': 'https://example.com/'}", headers: { 'content-type': 'application/json', accept: 'application/json', ...bearer() } })
    expect(broken.status).toBe(400)
    expect(((await broken.json()) as { error: string }).error).toMatch(/^the request body is not valid JSON \(.+\); send one JSON object with the fields this request takes$/)
    // No body at all is an empty object: a missing field, said as such.
    const empty = await h.app.request('/_caje/purge', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...bearer() } })
    expect(empty.status).toBe(400)
    expect(await empty.json()).toMatchObject({ code: 'purge_needs_value' })
    expect(await h.purgeCount()).toBe(1)
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
    const body = (await again.json()) as Record<string, unknown>
    expect(body).toMatchObject({ ok: true, started: false, populate: { running: true } })
    expect(body).not.toHaveProperty('message')
    expect(h.node.actions.populateStatus()?.running).toBe(true)
    release()
    // No cluster secret here, so no peer to copy from: the peer's two pages come from the origin.
    expect(await populateDone()).toMatchObject({ done: 2, fromPeers: 0, fromOrigin: 2, failed: 0 })
    expect(h.diskCount()).toBe(12)
    expect(await h.node.store.variants(`${SITE}/blog/post-6`)).toHaveLength(1)
    const status = (await (await c.request('/_caje/populate', { headers: { accept: 'application/json' } })).json()) as {
      populate: { running: boolean; done: number }
      summary: string
    }
    expect(status.populate.running).toBe(false)
    expect(status.summary).toMatch(/^Last run · 2 fetched/)
    const { html } = await c.page('/_caje/list')
    expect(html).toMatch(/Last run · 2 fetched \(0 from peers, 2 from the origin\), \d+ skipped, 0 failed/)
  })

  it('says when a run stopped because the node’s disk is full', async () => {
    h = await setup({ env: { CAJE_CACHE_MAX_ENTRIES: '2' } })
    for (const p of ['/blog/post-1', '/blog/post-2']) expect(await fetchAsSite(h.node, p)).toBe(200)
    await waitFor(() => h.diskCount() === 2, 'two pages stored')
    const c = h.client()
    await c.signInWithPassword()
    await c.request('/_caje/populate', { form: {} })
    expect(await populateDone()).toMatchObject({ done: 0, diskFull: true })
    expect(h.diskCount()).toBe(2)
    const status = (await (await c.request('/_caje/populate', { headers: { accept: 'application/json' } })).json()) as { summary: string }
    expect(status.summary).toMatch(/^Last run · 0 fetched .* · stopped: this node’s disk is full \(CAJE_CACHE_MAX_BYTES or CAJE_CACHE_MAX_ENTRIES\)/)
    const { html } = await c.page('/_caje/list')
    expect(html).toContain('stopped: this node’s disk is full')
  })

  it('never answers a run as ended beside a disk table read before its last copy, though the manifest is read on its own thread', async () => {
    h = await setup({ entries: 6 })
    const peerOnly = `${SITE}/blog/post-6`
    expect(await h.node.store.variants(peerOnly)).toHaveLength(0)
    // The list's manifest reads go to the node's read thread, where a slow query can keep the
    // page waiting after it read this node's disk. The run shares that thread (its own reads of
    // the manifest), so the wait is made in the list's read alone.
    let releaseReads!: () => void
    const readsHeld = new Promise<void>((resolve) => (releaseReads = resolve))
    // The run is going (the origin holds its answer) when the page is asked for.
    const releaseOrigin = h.holdOrigin()
    expect((await h.client().request('/_caje/populate', { json: {}, headers: bearer() })).status).toBe(202)
    let diskRead!: () => void
    const diskWasRead = new Promise<void>((resolve) => (diskRead = resolve))
    const actions = {
      ...h.node.actions,
      listDisk: (q: Parameters<typeof h.node.actions.listDisk>[0]) => (diskRead(), h.node.actions.listDisk(q)),
      listManifest: async (q: Parameters<typeof h.node.actions.listManifest>[0]) => (await readsHeld, h.node.actions.listManifest(q)),
    }
    const client = new Client(new Hono().route('/_caje', createAdminApp({ ...h.deps, actions })))
    const answer = client.request('/_caje/list?limit=50', { headers: bearer() })
    await diskWasRead
    // The run ends while the page waits for the manifest.
    releaseOrigin()
    expect(await populateDone()).toMatchObject({ done: 1, fromOrigin: 1, failed: 0 })
    releaseReads()
    const body = (await (await answer).json()) as { populate: { running: boolean } | null; disk: { entries: Array<{ url: string }> } }
    // The answer read the run's state before its tables: it still follows the run, and the page refreshes its tables when it ends.
    const listed = body.disk.entries.some((e) => e.url === peerOnly)
    expect({ running: body.populate?.running, listed }).toEqual({ running: true, listed: false })
  })

  it('shows each node’s last heartbeat, marks a silent one offline everywhere, and forgets it', async () => {
    h = await setup({ entries: 12 })
    // Heartbeats carry the time they were sent: the admin's clock is the real one here.
    h.clock.now = Date.now()
    const [first] = await h.node.store.variants(`${SITE}/blog/post-1`)
    // node-b beat just now; node-old, which holds one entry, two minutes ago.
    await heartbeat(PEER, h.clock.now)
    await heartbeat('node-old', h.clock.now - 120_000)
    h.node.manifest.writer.submit({ type: 'stored', nodeId: 'node-old', entry: toEntryRecord(first!) })
    await h.node.manifest.writer.flush()
    const c = h.client()
    await c.signInWithPassword()
    const { html } = await c.page('/_caje/list')
    expect(html).toMatch(/<tr data-node="node-old">.*?2m ago.*?offline.*?Forget/s)
    expect(html).toMatch(/<tr data-node="node-b">.*?online/s)
    expect(html).not.toMatch(/<tr data-node="node-b">(?:(?!<\/tr>).)*Forget/s)
    expect(html).toContain('title="Offline: last heartbeat 2m ago">node-old</span>')
    const res = await c.request('/_caje/nodes/node-old/forget', { form: {} })
    expect(res.status).toBe(303)
    expect(flashOf(res)?.text).toBe('Forgot node node-old: 1 holding dropped from the manifest.')
    const after = (await c.page('/_caje/list')).html
    expect(after).not.toContain('data-node="node-old"')
    expect(after).not.toContain('>node-old</span>')
    expect((await h.manifestEntries()).filter((e) => e.nodes.includes('node-old'))).toEqual([])
    // The entry stays: this node still holds it.
    expect(await h.manifestCount('/blog/post-1')).toBeGreaterThan(0)
    const refused = await c.request('/_caje/nodes/node-b/forget', { form: {} })
    expect(flashOf(refused)).toMatchObject({ kind: 'error', text: 'That node is still sending heartbeats: stop it first, then forget it once it shows offline.' })
    expect((await h.manifestEntries()).some((e) => e.nodes.includes(PEER))).toBe(true)
  })

  it('fetches one entry from its row, and each row can be purged where it is listed', async () => {
    h = await setup({ entries: 12 })
    const c = h.client()
    await c.signInWithPassword()
    const manifest = await h.manifestEntries()
    const missing = manifest.filter((m) => !m.nodes.includes('node-a') && m.staleAt > Date.now())
    expect(missing.length).toBe(2)
    const { html } = await c.page('/_caje/list')
    // A row Populate button for each fresh entry this node lacks, and none for what it holds.
    expect(html.match(/<input type="hidden" name="key"/g)?.length).toBe(missing.length)
    expect(html).toContain(`<input type="hidden" name="key" value="${missing[0]!.key}"/>`)
    // A row Purge button per disk row and per manifest row.
    expect(html.match(/<input type="hidden" name="kind" value="url"\/>/g)?.length).toBe(h.diskCount() + manifest.length)

    const res = await c.request('/_caje/populate', { form: { key: missing[0]!.key }, headers: { referer: 'http://localhost:8080/_caje/list?filter=x' } })
    expect(res.headers.get('location')).toBe('/_caje/list?filter=x')
    // Without a cluster secret there is no peer to ask: the origin gives it.
    expect(await populateDone()).toMatchObject({ key: missing[0]!.key, done: 1, fromPeers: 0, fromOrigin: 1 })
    expect(await h.node.store.variants(missing[0]!.key)).toHaveLength(1)
    expect(await h.node.store.variants(missing[1]!.key)).toEqual([])
    const after = (await c.page('/_caje/list')).html
    expect(after).toContain('origin (populate)')
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
    const db = await c.request('/_caje/clear_db', { form: { confirm: 'yes' }, headers: { referer: 'http://localhost:8080/_caje/confirm/clear_db' } })
    expect(flashOf(db)?.text).toBe('Cleared the shared manifest: 12 rows removed.')
    // Done with the confirmation page: back to the list.
    expect(db.headers.get('location')).toBe('/_caje/list')
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

describe('traffic', () => {
  it('draws requests, hit ratio and bytes as inline SVG for all nodes or one, over an hour or a day', async () => {
    h = await setup()
    // Minutes are stamped with the real time: the admin's clock is the real one here.
    h.clock.now = Date.now()
    // The peer's last day, recorded as its writer does once a minute: a steady 80 % hit ratio.
    const minuteNow = Math.floor(h.clock.now / 60_000) * 60_000
    const HOST = new URL(SITE).host
    const minutes: MinuteStats[] = Array.from({ length: 1440 }, (_, i) => ({ minute: minuteNow - (1440 - i) * 60_000, requests: 100, hits: 80, misses: 20, bytesCache: 80_000, bytesOrigin: 20_000 }))
    // Its top paths: five minutes ago the cart this node misses too, and a feed; five hours ago a report.
    minutes[1435]!.paths = [
      { path: `${HOST}/private/cart`, misses: 2, originBytes: 20, reasons: { private: 2 } },
      { path: `${HOST}/feed.xml`, misses: 18, originBytes: 19_000, reasons: { 'no-store': 18 } },
    ]
    minutes[1140]!.paths = [{ path: `${HOST}/report.pdf`, misses: 20, originBytes: 20_000, reasons: { 'too-large': 20 } }]
    h.node.manifest.writer.submit({ type: 'minutes', nodeId: PEER, minutes })
    await h.node.manifest.writer.flush()
    // This node's own traffic: a page for one user three times (never stored), a page once.
    for (let i = 0; i < 3; i++) expect(await fetchAsSite(h.node, '/private/cart')).toBe(200)
    expect(await fetchAsSite(h.node, '/blog/post-1')).toBe(200)
    const c = h.client()
    await c.signInWithPassword()
    const hour = await c.page('/_caje/traffic')
    expect(hour.res.status).toBe(200)
    expect(hour.html.match(/<svg viewBox="0 0 480 180" role="img"/g)).toHaveLength(3)
    expect(hour.html).toContain('Traffic, all nodes')
    // Sixty one-minute points per line.
    const points = /<polyline points="([^"]+)" data-series="requests"/.exec(hour.html)![1]!.split(' ')
    expect(points.length).toBeGreaterThanOrEqual(59)
    const day = await c.page('/_caje/traffic?period=day&node=node-b')
    expect(day.html).toContain('Traffic, node node-b')
    const dayPoints = /<polyline points="([^"]+)" data-series="requests"/.exec(day.html)![1]!.split(' ')
    expect(dayPoints.length).toBeGreaterThanOrEqual(143)
    expect(day.html).toMatch(/<dd data-slot="saved">\d+\.\d\u00a0%<\/dd>/)
    // Every node's top paths to the origin, with why: this node's current minute from memory, the peer's from the manifest.
    type Top = { node: string | null; topByMisses: PathMisses[]; topByBytes: PathMisses[] }
    const top = async (query: string) => (await (await c.request(`/_caje/traffic${query}`, { headers: { accept: 'application/json' } })).json()) as Top
    const all = await top('')
    expect(all.node).toBeNull()
    expect(all.topByMisses).toEqual([
      { path: `${HOST}/feed.xml`, misses: 18, originBytes: 19_000, reasons: { 'no-store': 18 } },
      { path: `${HOST}/private/cart`, misses: 5, originBytes: expect.any(Number), reasons: { private: 5 } },
      { path: `${HOST}/blog/post-1`, misses: 1, originBytes: expect.any(Number), reasons: { 'not yet cached': 1 } },
    ])
    expect(all.topByBytes.map((p) => p.path)).toEqual([`${HOST}/feed.xml`, expect.any(String), expect.any(String)])
    expect(hour.html).toContain('Top paths by misses, all nodes, last hour')
    expect(hour.html).toMatch(/<table data-component="table" data-table="top-misses">.*?<tbody><tr><td data-slot="url"><span>www\.example\.com\/feed\.xml.*?no-store × 18/s)
    expect(hour.html).toMatch(/<table data-component="table" data-table="top-misses">.*www\.example\.com\/private\/cart.*private × 5/s)
    // One node: only its own paths.
    const self = h.node.config.nodeId
    expect((await top(`?node=${self}`)).topByMisses.map((p) => [p.path, p.misses])).toEqual([
      [`${HOST}/private/cart`, 3],
      [`${HOST}/blog/post-1`, 1],
    ])
    const mine = await c.page(`/_caje/traffic?node=${self}`)
    expect(mine.html).toContain(`Top paths by misses, node ${self}, last hour`)
    expect(mine.html).toMatch(/<table data-component="table" data-table="top-misses">.*?<tbody><tr><td data-slot="url"><span>www\.example\.com\/private\/cart.*?private × 3/s)
    expect(mine.html).not.toContain('feed.xml')
    expect((await top(`?node=${PEER}`)).topByMisses.map((p) => [p.path, p.misses])).toEqual([
      [`${HOST}/feed.xml`, 18],
      [`${HOST}/private/cart`, 2],
    ])
    // The day reaches the report five hours back; the hour does not.
    expect(all.topByMisses.map((p) => p.path)).not.toContain(`${HOST}/report.pdf`)
    expect((await top(`?period=day&node=${PEER}`)).topByMisses.map((p) => p.path)).toEqual([`${HOST}/report.pdf`, `${HOST}/feed.xml`, `${HOST}/private/cart`])
    expect(day.html).toContain('Top paths by misses, node node-b, last day')
    // An unknown node falls back to all nodes.
    expect((await c.page('/_caje/traffic?node=nope')).html).toContain('Traffic, all nodes')
  })
})

describe('parsePurge', () => {
  it('reads both the form and the JSON shapes', () => {
    expect(parsePurge({ kind: 'prefix', value: ' https://a/ ' })).toMatchObject({ ok: true, request: { kind: 'prefix', value: 'https://a/' } })
    expect(parsePurge({ kind: 'all' })).toMatchObject({ ok: true, request: { kind: 'all' } })
    expect(parsePurge({ all: true })).toMatchObject({ ok: true, request: { kind: 'all' } })
    expect(parsePurge({ url: 'https://a.example/x?y=1' })).toMatchObject({ ok: true, request: { kind: 'url', value: 'https://a.example/x?y=1' } })
    expect(parsePurge({ kind: 'bogus', value: 'x' })).toMatchObject({ ok: false })
  })

  it('spells a URL or URL prefix as the proxy keys it: host normalised, dot segments and escapes of unreserved characters resolved', () => {
    expect(parsePurge({ url: 'http://Site.Test:80/docs/%2e%2e/legal/%6Fld?q=%7e' })).toMatchObject({ ok: true, request: { kind: 'url', value: 'http://site.test/legal/old?q=~' } })
    expect(parsePurge({ url: 'https://site.test.' })).toMatchObject({ ok: true, request: { kind: 'url', value: 'https://site.test/' } })
    expect(parsePurge({ prefix: 'HTTPS://Site.Test/%7euser/' })).toMatchObject({ ok: true, request: { kind: 'prefix', value: 'https://site.test/~user/' } })
  })
})
