// The admin as a new user meets it, at desktop (1280×800) and phone (390×844)
// width, in Debian's Chromium against the two real nodes of server.ts: every
// page fits the screen, forms refused for an ended session or a stale page
// get pages (not JSON), the purge form, one-time secrets, the JSON API's
// machine fields, the sign-in page at the wrong address, and the nodes panel.
// Screenshots land in test-results/<name>-<width>.png.

import fs from 'node:fs'
import path from 'node:path'
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PEER_MISSED, startServer, type E2eServer } from './server.ts'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const SHOTS = path.resolve('test-results')

describe.each([
  { width: 1280, height: 800 },
  { width: 390, height: 844 },
])('admin at $width×$height', { timeout: 120_000 }, ({ width, height }) => {
  let server: E2eServer
  let browser: Browser
  let context: BrowserContext
  let page: Page
  let cdp: CDPSession
  const problems: string[] = []

  const shot = (name: string, target: Page = page, fullPage = false) => target.screenshot({ path: path.join(SHOTS, `${name}-${width}.png`), fullPage })
  const flash = async (on: Page = page) => (await on.locator('[data-component="flash"] [data-slot="text"]').first().textContent())?.trim() ?? ''
  const watch = (p: Page) => {
    p.on('console', (m) => {
      // A refused form answers 401 with the sign-in page on purpose; Chromium logs the status.
      if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`)
    })
    p.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
    p.on('response', (r) => {
      if (r.status() >= 500) problems.push(`HTTP ${r.status()} ${r.url()}`)
    })
  }
  /** The widest the page is laid out: nothing may stick out past the viewport. */
  const pageWidth = (p: Page = page) => p.evaluate(() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth))
  const manifestRow = (p: Page, url: string) =>
    p.locator('table[data-table="manifest"] tbody tr').filter({ has: p.locator(`td[data-slot="url"] span[title="${url}"]`) })

  beforeAll(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`sh scripts/install-chromium.sh\`, or set CHROMIUM_PATH`)
    fs.mkdirSync(SHOTS, { recursive: true })
    server = await startServer()
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-sync'] })
    context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 })
    page = await context.newPage()
    watch(page)
    cdp = await context.newCDPSession(page)
    await cdp.send('WebAuthn.enable', { enableUI: false })
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    })
    // Enrol with the password, then register a passkey (the password stops working).
    await page.goto(`${server.origin}/_caje/auth`)
    await shot('sign-in-setup')
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await page.getByLabel('Your name').fill('Ada')
    await page.getByLabel('Admin password').fill(server.adminPassword)
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.waitForURL('**/_caje/passkeys')
    await page.getByLabel('Name for the new passkey').fill('Laptop')
    await page.getByRole('button', { name: 'Add a passkey' }).click()
    await page.waitForFunction(() => document.querySelector('[data-component="flash"]')?.textContent?.includes('registered'))
  }, 90_000)

  afterAll(async () => {
    await browser?.close()
    await server?.close()
  })

  it('/_caje/, the address the README gives, opens the cache list', async () => {
    await page.goto(`${server.origin}/_caje/`)
    expect(new URL(page.url()).pathname).toBe('/_caje/list')
  })

  it('fits every page to the screen: the header wraps, actions and forms wrap, tables scroll inside their card', async () => {
    for (const [name, p] of [
      ['list', '/_caje/list'],
      ['passkeys', '/_caje/passkeys'],
      ['confirm-clear-fs', '/_caje/confirm/clear_fs'],
      ['confirm-purge-all', '/_caje/confirm/purge?kind=all'],
      ['purges', '/_caje/purges'],
      ['traffic', '/_caje/traffic'],
    ] as const) {
      await page.goto(`${server.origin}${p}`)
      expect(await pageWidth(), `${p} is laid out wider than the screen`).toBeLessThanOrEqual(width)
      // Sign out is on screen, not cut off.
      const signOut = await page.getByRole('button', { name: 'Sign out', exact: true }).boundingBox()
      expect(signOut!.x + signOut!.width, `${p}: Sign out`).toBeLessThanOrEqual(width)
      await shot(name)
    }
    await page.goto(`${server.origin}/_caje/list`)
    for (const button of [page.getByRole('button', { name: 'Purge', exact: true }), page.getByRole('button', { name: 'Populate this node' })]) {
      const box = (await button.boundingBox())!
      expect(box.x + box.width).toBeLessThanOrEqual(width)
    }
    // A table wider than its card scrolls inside it; its card stays within the screen.
    for (const table of ['disk', 'manifest', 'nodes']) {
      const card = (await page.locator(`#${table}`).boundingBox())!
      expect(card.x + card.width, `#${table}`).toBeLessThanOrEqual(width)
    }
    // URLs keep a readable width instead of wrapping every few characters (one line on a phone, where the table scrolls).
    const url = page.locator('table[data-table="manifest"] td[data-slot="url"]').first()
    expect((await url.boundingBox())!.width).toBeGreaterThanOrEqual(250)
    if (width < 700) expect(await url.locator('span').evaluate((e) => e.getClientRects().length)).toBe(1)
    await page.locator('#manifest').screenshot({ path: path.join(SHOTS, `list-manifest-${width}.png`) })
  })

  it('shows one freshness display: a badge for fresh and for stale, no warning colour', async () => {
    await page.goto(`${server.origin}/_caje/list`)
    const states = await page.locator('[data-component="freshness"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-state')))
    expect(states.length).toBeGreaterThan(0)
    expect(new Set(states)).toEqual(new Set(['fresh']))
    expect(await page.locator('[data-component="freshness"] [data-component="badge"]').count()).toBe(states.length)
  })

  it('populates one row from the peer, says where it came from, refreshes the tables, and purges a row with the true state at once', async () => {
    const url = server.node1.keyOf('/assets/vendor-2.js')
    const filter = '/assets/vendor-2.js'
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(filter)}`)
    expect(await page.locator('#disk [data-component="empty"]').count()).toBe(1)
    await manifestRow(page, url).getByRole('button', { name: `Populate ${url}` }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    // Without a reload: the page either loaded after the run ended, or refreshes its tables when it does.
    await expect
      .poll(() => page.locator('table[data-table="disk"] td[data-slot="source"]').allTextContents(), { timeout: 30_000 })
      .toEqual(['peer e2e-node-2'])
    expect(await page.locator('[data-slot="populate-state"] [data-slot="summary"]').textContent()).toMatch(/· 1 fetched \(1 from peers, 0 from the origin\)/)
    await page.locator('#disk').screenshot({ path: path.join(SHOTS, `row-populated-${width}.png`) })
    // Purge it from its disk row: both tables are empty on the page the purge lands on.
    await page.locator('table[data-table="disk"]').getByRole('button', { name: `Purge ${url}`, exact: true }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    expect(await page.locator('[data-component="empty"]').allTextContents()).toEqual(['Nothing matches this filter.', 'Nothing matches this filter.'])
  })

  it('disables the value field for "Everything"', async () => {
    await page.goto(`${server.origin}/_caje/list`)
    const value = page.getByLabel('URL, prefix or tag')
    expect(await value.isEnabled()).toBe(true)
    await page.locator('select[name="kind"]').selectOption('all')
    expect(await value.isDisabled()).toBe(true)
    expect(await value.getAttribute('placeholder')).toBe('everything on every node')
    await page.locator('select[name="kind"]').selectOption('prefix')
    expect(await value.isEnabled()).toBe(true)
  })

  it('shows every character of a new API token', async () => {
    await page.goto(`${server.origin}/_caje/passkeys`)
    await page.getByLabel('Token name').fill('deploy')
    await page.getByRole('button', { name: 'Create token' }).click()
    const secret = page.locator('[data-slot="secret-value"]')
    await secret.waitFor()
    // The stylesheet must have applied before its line box is measured (until then it reads "normal").
    await page.waitForLoadState('load')
    const token = (await secret.textContent())!.trim()
    expect(token).toMatch(/^caje_[A-Za-z0-9_-]{20,}$/)
    // Nothing clipped: no hidden overflow sideways, and the line box holds underscores' descent.
    const fit = await secret.evaluate((e) => ({ scroll: e.scrollWidth, client: e.clientWidth, line: parseFloat(getComputedStyle(e).lineHeight), font: parseFloat(getComputedStyle(e).fontSize) }))
    expect(fit.scroll).toBeLessThanOrEqual(fit.client)
    expect(fit.line).toBeGreaterThanOrEqual(fit.font * 1.5)
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await page.locator('[data-component="flash"]').first().screenshot({ path: path.join(SHOTS, `api-token-${width}.png`) })
    // The token works.
    const res = await fetch(`${server.origin}/_caje/status`, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } })
    expect(res.status).toBe(200)
  })

  it('answers scripts with machine fields, not the page’s sentences', async () => {
    const api = (p: string, body: unknown) =>
      fetch(`${server.origin}${p}`, { method: 'POST', headers: { authorization: `Bearer ${server.apiToken}`, accept: 'application/json', 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const purged = await api('/_caje/purge', { url: `${server.origin}/api/products/9` })
    expect(await purged.json()).toEqual({ ok: true, purge: { kind: 'url', value: `${server.origin}/api/products/9`, soft: false }, removed: 1 })
    const soft = await api('/_caje/purge', { url: `${server.origin}/api/products/8`, soft: true })
    expect(await soft.json()).toEqual({ ok: true, purge: { kind: 'url', value: `${server.origin}/api/products/8`, soft: true }, removed: 0, marked: 1 })
    const bad = await api('/_caje/purge', { url: 'not a url' })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ ok: false, code: 'purge_bad_url' })
  })

  it('gives a form posted after the session ended the sign-in page, and returns to the page after signing in', async () => {
    const url = server.node1.keyOf('/assets/app-3.js')
    const filter = '/assets/app-3.js'
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(filter)}`)
    // Signed out in another tab.
    const other = await context.newPage()
    watch(other)
    await other.goto(`${server.origin}/_caje/list`)
    await other.getByRole('button', { name: 'Sign out', exact: true }).click()
    await other.waitForURL('**/_caje/auth')
    await other.close()
    await manifestRow(page, url).getByRole('button', { name: `Purge ${url}`, exact: true }).click()
    await page.locator('[data-component="passkey-sign-in"]').waitFor()
    expect(await flash()).toBe('Your session ended, so that was not done. Sign in, then try again.')
    expect(await page.locator('body').textContent()).not.toContain('"ok":false')
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await shot('session-ended')
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    // Nothing was purged.
    expect(await manifestRow(page, url).count()).toBe(1)
  })

  it('sends a form from an out-of-date page back to that page with a message', async () => {
    const url = server.node1.keyOf('/assets/app-4.js')
    const filter = '/assets/app-4.js'
    const stale = await context.newPage()
    watch(stale)
    await stale.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(filter)}`)
    // Signed out and in again in the first tab: a new session, with a new form token.
    await page.goto(`${server.origin}/_caje/list`)
    await page.getByRole('button', { name: 'Sign out', exact: true }).click()
    await page.waitForURL('**/_caje/auth')
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
    await page.waitForURL('**/_caje/list')
    await manifestRow(stale, url).getByRole('button', { name: `Purge ${url}`, exact: true }).click()
    await stale.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    expect(await flash(stale)).toBe('This page was out of date, so that was not done. Try again.')
    expect(await manifestRow(stale, url).count()).toBe(1)
    await shot('page-out-of-date', stale)
    // Now the page is current: the same click works.
    await manifestRow(stale, url).getByRole('button', { name: `Purge ${url}`, exact: true }).click()
    await stale.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    expect(await flash(stale)).toBe(`Purged ${url}: 1 entry removed on this node; other nodes follow within seconds.`)
    expect(await manifestRow(stale, url).count()).toBe(0)
    await stale.close()
  })

  it('says on the sign-in page that passkeys need the CAJE_PUBLIC_ORIGIN address, and links there', async () => {
    const other = await context.newPage()
    const port = new URL(server.origin).port
    await other.goto(`http://127.0.0.1:${port}/_caje/auth`)
    const warning = other.locator('[data-slot="wrong-origin"]')
    expect(await warning.textContent()).toContain(`Passkeys work only at the address in CAJE_PUBLIC_ORIGIN, and this page was opened at 127.0.0.1:${port}.`)
    expect(await warning.getByRole('link').getAttribute('href')).toBe(`${server.origin}/_caje/auth`)
    expect(await pageWidth(other)).toBeLessThanOrEqual(width)
    await shot('sign-in-wrong-address', other)
    await other.close()
    await page.goto(`${server.origin}/_caje/auth`)
    expect(await page.locator('[data-slot="wrong-origin"]').count()).toBe(0)
  })

  it('shows each node’s last heartbeat, marks a stopped one offline, and forgets it with its holdings', async () => {
    const { writer } = server.node1.manifest
    const gone = Date.now() - 10 * 60_000
    const [meta] = await server.node1.store.variants(server.node1.keyOf('/css/site.css'))
    writer.submit({ type: 'node-heartbeat', node: { id: 'e2e-old-node', region: 'fra', internalUrl: 'http://127.0.0.1:9', startedAt: gone - 60_000 }, at: gone })
    writer.submit({ type: 'stored', nodeId: 'e2e-old-node', entry: meta! })
    await writer.flush()
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent('/css/site.css')}`)
    const nodes = page.locator('table[data-table="nodes"] tbody tr')
    expect(await nodes.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-node')))).toEqual(['e2e-node-1', 'e2e-node-2', 'e2e-old-node'])
    expect(await nodes.nth(1).textContent()).toContain('online')
    const old = page.locator('tr[data-node="e2e-old-node"]')
    expect(await old.textContent()).toMatch(/10m ago.*offline/)
    // Its Held-by badge says so too.
    const badge = manifestRow(page, server.node1.keyOf('/css/site.css')).locator('[data-kind="offline"]')
    expect(await badge.textContent()).toBe('e2e-old-node')
    expect(await badge.getAttribute('title')).toBe('Offline: last heartbeat 10m ago')
    // Online nodes cannot be forgotten from here.
    expect(await nodes.nth(0).getByRole('button').count()).toBe(0)
    expect(await nodes.nth(1).getByRole('button').count()).toBe(0)
    await page.locator('#nodes').screenshot({ path: path.join(SHOTS, `nodes-${width}.png`) })
    await old.getByRole('button', { name: 'Forget e2e-old-node' }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list')
    expect(await flash()).toBe('Forgot node e2e-old-node: 1 holding dropped from the manifest.')
    expect(await page.locator('tr[data-node="e2e-old-node"]').count()).toBe(0)
    expect(await manifestRow(page, server.node1.keyOf('/css/site.css')).locator('[data-slot="nodes"] [data-component="badge"]').allTextContents()).toEqual(['e2e-node-1'])
  })

  it('draws the traffic as inline SVG: requests, hit ratio and bytes, for all nodes or one, over an hour or a day', async () => {
    await page.goto(`${server.origin}/_caje/traffic`)
    const charts = page.locator('[data-component="chart"] svg')
    expect(await charts.count()).toBe(3)
    // Node 1's warm-up shows at once (its current minute is read live).
    expect(Number((await page.locator('[data-slot="requests"]').textContent())!.replace(/,/g, ''))).toBeGreaterThanOrEqual(server.warmup.hits + server.warmup.misses)
    for (const chart of await charts.all()) {
      const box = (await chart.boundingBox())!
      expect(box.x + box.width).toBeLessThanOrEqual(width)
      expect(box.height).toBeGreaterThan(100)
    }
    expect(await page.locator('polyline[data-series="requests"]').count()).toBeGreaterThan(0)
    // The private cart, asked for three times in the warm-up, went to the origin each time, and says why.
    const cart = page.locator('table[data-table="top-misses"] tbody tr').filter({ hasText: '/api/cart' })
    expect(await cart.locator('td').nth(1).textContent()).toBe('3')
    expect(await cart.locator('[data-slot="reasons"]').textContent()).toMatch(/^(no-store|private) × 3$/)
    // All nodes: node 2's misses are there too, from the manifest (the assets both nodes fetched count twice).
    const topRow = (table: string, pathname: string) => page.locator(`table[data-table="${table}"] tbody tr`).filter({ hasText: new URL(server.node1.keyOf(pathname)).host + pathname })
    expect(await page.locator('#top-misses h2').textContent()).toBe('Top paths by misses, all nodes, last hour')
    const peerMiss = topRow('top-misses', PEER_MISSED)
    expect(await peerMiss.locator('td').nth(1).textContent()).toBe('4')
    expect(await peerMiss.locator('[data-slot="reasons"]').textContent()).toMatch(/^(no-store|private) × 4$/)
    expect(await topRow('top-misses', '/assets/app-10.js').locator('td').nth(1).textContent()).toBe('2')
    await shot('traffic', page, true)
    await page.getByRole('link', { name: 'Last day' }).click()
    await page.waitForURL((u) => u.searchParams.get('period') === 'day')
    expect(await topRow('top-misses', PEER_MISSED).count()).toBe(1)
    await page.getByRole('link', { name: 'e2e-node-1', exact: true }).click()
    await page.waitForURL((u) => u.searchParams.get('node') === 'e2e-node-1' && u.searchParams.get('period') === 'day')
    expect(await page.locator('#traffic h2').textContent()).toBe('Traffic, node e2e-node-1')
    // This node alone: its own cart, not node 2's misses.
    expect(await page.locator('#top-misses h2').textContent()).toBe('Top paths by misses, node e2e-node-1, last day')
    expect(await topRow('top-misses', '/api/cart').locator('td').nth(1).textContent()).toBe('3')
    expect(await topRow('top-misses', PEER_MISSED).count()).toBe(0)
    await shot('traffic-this-node', page, true)
    await page.getByRole('link', { name: 'e2e-node-2', exact: true }).click()
    await page.waitForURL((u) => u.searchParams.get('node') === 'e2e-node-2')
    expect(await topRow('top-misses', PEER_MISSED).locator('td').nth(1).textContent()).toBe('4')
    expect(await topRow('top-misses', '/api/cart').count()).toBe(0)
    expect(await pageWidth()).toBeLessThanOrEqual(width)
  })

  it('soft-purges a row and a prefix: entries stay, marked stale, the confirmation says soft, and the history shows when each node applied it', async () => {
    // A page both nodes hold, soft-purged from its row.
    const url = server.node1.keyOf('/assets/app-5.js')
    const filter = '/assets/app-5.js'
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(filter)}`)
    await page.locator('#disk').screenshot({ path: path.join(SHOTS, `row-soft-purge-before-${width}.png`) })
    await manifestRow(page, url).getByRole('button', { name: `Soft purge ${url}`, exact: true }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === filter)
    expect(await flash()).toBe(`Soft-purged ${url}: 1 entry marked stale on this node (each is checked with the origin on its next request); other nodes follow within seconds.`)
    // Still held, on this node's disk and in the manifest, now stale.
    expect(await page.locator('table[data-table="disk"] [data-component="freshness"]').getAttribute('data-state')).toBe('stale')
    expect(await manifestRow(page, url).locator('[data-component="freshness"]').getAttribute('data-state')).toBe('stale')
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await shot('row-soft-purged')
    // The next request through the proxy asks the origin first, and says why.
    const proxied = await fetch(`${server.origin}/assets/app-5.js`)
    await proxied.arrayBuffer()
    expect(proxied.status).toBe(200)
    expect(proxied.headers.get('cache-status')).toMatch(/^caje; fwd=stale; fwd-status=(200|304);.*detail=soft-purge$/)

    // A prefix from the form, with "Soft" ticked: the confirmation says soft and what it covers.
    const prefix = `${server.origin}/api/products/`
    await page.goto(`${server.origin}/_caje/list`)
    await page.locator('select[name="kind"]').selectOption('prefix')
    await page.getByLabel('URL, prefix or tag').fill(prefix)
    await page.getByLabel('Soft: mark stale').check()
    await page.locator('[data-component="actions"] [data-component="card"]').first().screenshot({ path: path.join(SHOTS, `purge-form-soft-${width}.png`) })
    await page.getByRole('button', { name: 'Purge', exact: true }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/confirm/purge' && u.searchParams.get('soft') === 'yes')
    expect(await page.locator('h1').textContent()).toBe(`Soft purge prefix ${prefix}?`)
    expect(await page.locator('dd[data-slot="mode"]').textContent()).toBe('soft: marked stale, kept')
    expect(Number(await page.locator('dd[data-slot="entries"]').textContent())).toBeGreaterThan(0)
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await shot('confirm-soft-purge')
    await page.getByRole('button', { name: 'Yes, soft purge' }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list')
    expect(await flash()).toMatch(new RegExp(`^Soft-purged prefix ${prefix.replace(/[/.]/g, '\\$&')}: \\d+ entries marked stale on this node`))

    // The history: both soft purges, each applied on both nodes, with when.
    await page.goto(`${server.origin}/_caje/purges`)
    await expect
      .poll(
        async () => {
          await page.reload()
          return page.locator('tr[data-purge] td[data-slot="applied"] [data-component="badge"]').first().textContent()
        },
        { timeout: 10_000 },
      )
      .toBe('applied on 2 of 2 nodes')
    const newest = page.locator('tr[data-purge]').first()
    expect(await newest.locator('[data-slot="mode"]').textContent()).toBe('soft')
    expect(await newest.locator('td[data-slot="url"]').textContent()).toBe(`prefix ${prefix}`)
    const perNode = newest.locator('[data-slot="per-node"] li')
    expect(await perNode.evaluateAll((li) => li.map((l) => [l.getAttribute('data-node'), l.getAttribute('data-state')]))).toEqual([
      ['e2e-node-1', 'applied'],
      ['e2e-node-2', 'applied'],
    ])
    for (const time of await newest.locator('[data-slot="per-node"] time').all()) expect(await time.textContent()).toMatch(/^\d\d:\d\d:\d\d \(\d+\.\d\u00a0s after\)$/)
    expect((await page.locator('tr[data-purge] [data-slot="mode"]').allTextContents()).slice(0, 2)).toEqual(['soft', 'soft'])
    expect(await pageWidth()).toBeLessThanOrEqual(width)
    await shot('purges-soft')
  })

  it('raised no browser errors and no server errors', () => {
    expect(problems).toEqual([])
    expect(server.serverErrors).toEqual([])
  })
})
