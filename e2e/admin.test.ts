// The admin UI in Debian's Chromium with a virtual WebAuthn authenticator,
// against two real caje nodes and a real origin (see server.ts): enrol with the
// password, register a passkey, sign out, sign in with the passkey, then list,
// filter, purge, populate from the peer, clear, and manage passkeys.
// Needs /usr/bin/chromium (scripts/install-chromium.sh; `npm test` installs it).

import fs from 'node:fs'
import path from 'node:path'
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatRatio } from '../views/format.ts'
import { waitFor } from '../src/test-support/servers.ts'
import { PEER_ONLY, SITE_PAGES, startServer, type E2eServer } from './server.ts'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const SHOTS = path.resolve('test-results')

let server: E2eServer
let browser: Browser
let context: BrowserContext
let page: Page
let cdp: CDPSession
const problems: string[] = []

async function addAuthenticator(): Promise<string> {
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  })
  return authenticatorId
}

async function flash(): Promise<string> {
  return (await page.locator('[data-component="flash"] [data-slot="text"]').first().textContent())?.trim() ?? ''
}

/** Submit the list page's filter form. */
async function filterBy(text: string) {
  await page.getByLabel('Filter by URL').fill(text)
  await page.getByRole('button', { name: 'Filter', exact: true }).click()
  await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === text)
}

/** The "Held by" badges of the manifest row for exactly `url` on the current page (after filtering by `filter`, when given). */
async function nodesOf(url: string, filter?: string): Promise<string[]> {
  if (filter !== undefined) await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(filter)}`)
  const row = page.locator('table[data-table="manifest"] tbody tr').filter({ has: page.locator(`td[data-slot="url"] span[title="${url}"]`) })
  expect(await row.count(), `manifest rows for ${url}`).toBe(1)
  return row.locator('[data-slot="nodes"] [data-component="badge"]').allTextContents()
}

async function shot(name: string, opts: { fullPage?: boolean } = {}) {
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: opts.fullPage ?? false })
}

describe('admin UI in Chromium against two caje nodes', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`sh scripts/install-chromium.sh\` (npm test does this), or point CHROMIUM_PATH at a Chromium binary`)
    }
    fs.mkdirSync(SHOTS, { recursive: true })
    server = await startServer()
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 })
    page = await context.newPage()
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`)
    })
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
    page.on('response', (r) => {
      if (r.status() >= 500) problems.push(`HTTP ${r.status()} ${r.url()}`)
    })
    cdp = await context.newCDPSession(page)
    await cdp.send('WebAuthn.enable', { enableUI: false })
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    await server?.close()
  })

  let firstAuthenticator = ''

  it('enrols the first admin with the password', async () => {
    firstAuthenticator = await addAuthenticator()
    await page.goto(`${server.origin}/_caje/list`)
    expect(new URL(page.url()).pathname).toBe('/_caje/auth')
    await expect.poll(() => page.locator('h1').textContent()).toBe('First-time setup')
    await shot('sign-in-setup.png')
    await page.getByLabel('Your name').fill('Ada')
    await page.getByLabel('Admin password').fill(server.adminPassword)
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.waitForURL('**/_caje/passkeys')
    expect(await flash()).toMatch(/Signed in with the password/)
  })

  it('registers a passkey', async () => {
    await page.getByLabel('Name for the new passkey').fill('Laptop')
    await page.getByRole('button', { name: 'Add a passkey' }).click()
    await page.waitForFunction(() => document.querySelector('[data-component="flash"]')?.textContent?.includes('registered'))
    expect(await flash()).toBe('Passkey “Laptop” registered.')
    await expect.poll(() => page.locator('table[data-table="passkeys"] tbody tr').count()).toBe(1)
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: firstAuthenticator })
    expect(credentials).toHaveLength(1)
    expect(credentials[0]!.isResidentCredential).toBe(true)
  })

  it('signs out, and the password no longer signs in', async () => {
    await page.getByRole('button', { name: 'Sign out', exact: true }).click()
    await page.waitForURL('**/_caje/auth')
    expect(await flash()).toBe('Signed out.')
    expect(await page.locator('input[name="password"]').count()).toBe(0)
    await page.goto(`${server.origin}/_caje/auth`)
    await shot('sign-in.png')
  })

  it('signs in with the passkey and sees the real entries', async () => {
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe('Signed in.')
    const { node1Disk, manifest } = server.counts
    await expect.poll(() => page.locator('table[data-table="disk"] tbody tr').count()).toBe(50)
    expect(await page.locator('table[data-table="manifest"] tbody tr').count()).toBe(50)
    expect(await page.locator('#disk [data-slot="range"]').first().textContent()).toBe(`1–50 of ${node1Disk}`)
    expect(await page.locator('#manifest [data-slot="range"]').first().textContent()).toBe(`1–50 of ${manifest}`)
    // Rows are the proxy's own keys under the public host, with the origin's types and sizes.
    for (const text of await page.locator('table[data-table="disk"] td[data-slot="url"] span').allTextContents()) {
      expect(text.startsWith(`${server.origin}/`)).toBe(true)
    }
    // The media type, with the full Content-Type on hover.
    expect(await page.locator('table[data-table="disk"] td[data-slot="type"]').allTextContents()).toContain('text/javascript')
    expect(await page.locator('table[data-table="disk"] td[data-slot="type"][title="text/javascript; charset=utf-8"]').count()).toBeGreaterThan(0)
    const status = (await page.locator('[data-component="status"]').textContent()) ?? ''
    const { hits, misses } = server.warmup
    expect(status).toContain('e2e-node-1')
    expect(status).toContain('ams')
    // Two nodes on one shared file, no LiteFS: neither is a primary.
    expect(status).toContain('shared file')
    expect(status).not.toContain('primary')
    expect(status).toContain(formatRatio(hits / (hits + misses))!)
    expect(status).toContain(`Entries${node1Disk}`)
    await shot('list.png')
    await page.locator('#manifest').screenshot({ path: path.join(SHOTS, 'list-manifest.png') })
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: firstAuthenticator })
    expect(credentials[0]!.signCount).toBeGreaterThan(0)
  })

  it('shows which nodes hold each manifest entry, and the Vary variants on disk', async () => {
    await filterBy('/assets/app-1.js')
    expect(await nodesOf(`${server.origin}/assets/app-1.js`)).toEqual(['e2e-node-1', 'e2e-node-2'])
    await filterBy('/assets/vendor-3.js')
    expect(await page.locator('#disk [data-component="empty"]').textContent()).toBe('Nothing matches this filter.')
    expect(await nodesOf(`${server.origin}/assets/vendor-3.js`)).toEqual(['e2e-node-2'])
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(`${server.origin}/`)}&limit=500`)
    const home = page.locator('table[data-table="disk"] tbody tr').filter({ has: page.locator(`td[data-slot="url"] span:text-is("${server.origin}/")`) })
    expect(await home.count()).toBe(2)
    expect(await home.locator('[data-slot="variant"]').count()).toBe(2)
  })

  it('filters by a path prefix and pages', async () => {
    await page.goto(`${server.origin}/_caje/list`)
    await filterBy('/api/products/')
    const isProduct = (p: string) => p.startsWith('/api/products/')
    const disk = page.locator('table[data-table="disk"] tbody tr')
    const rows = page.locator('table[data-table="manifest"] tbody tr')
    expect(await disk.count()).toBe(SITE_PAGES.filter(isProduct).length)
    expect(await rows.count()).toBe(SITE_PAGES.filter(isProduct).length + PEER_ONLY.filter(isProduct).length)
    for (const text of await rows.locator('td[data-slot="url"]').allTextContents()) expect(text).toContain('/api/products/')
    for (const text of await disk.locator('td[data-slot="url"]').allTextContents()) expect(text).toContain('/api/products/')
    expect(await nodesOf(`${server.origin}/api/products/35`)).toEqual(['e2e-node-2'])
    await page.getByRole('link', { name: 'Clear filter' }).click()
    await page.locator('#disk').getByRole('link', { name: 'Next' }).first().click()
    await page.waitForURL('**/_caje/list?disk=50*')
    const total = server.counts.node1Disk
    expect(await page.locator('#disk [data-slot="range"]').first().textContent()).toBe(`51–${total} of ${total}`)
    expect(await page.locator('table[data-table="disk"] tbody tr').count()).toBe(total - 50)
  })

  it('purges a URL on every node’s list, and the proxy then misses it', async () => {
    const url = server.sampleUrl
    const pathname = new URL(url).pathname
    const before = server.upstream.count(pathname)
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(url)}`)
    expect(await page.locator('table[data-table="disk"] tbody tr').count()).toBe(1)
    expect(await nodesOf(url)).toEqual(['e2e-node-1', 'e2e-node-2'])
    await page.locator('select[name="kind"]').selectOption('url')
    await page.getByLabel('URL, prefix or tag').fill(url)
    await page.getByRole('button', { name: 'Purge', exact: true }).click()
    // Back on the page the form was on (still filtered), showing the true state at once:
    // the answer waited for the manifest write, so neither table lists the URL any more.
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === url)
    expect(await flash()).toBe(`Purged ${url}: 1 entry removed on this node; other nodes follow within seconds.`)
    expect(await page.locator('[data-component="empty"]').allTextContents()).toEqual(['Nothing matches this filter.', 'Nothing matches this filter.'])
    // Node 2 held it too and applies the purge on its own disk within seconds.
    await waitFor(async () => (await server.node2.store.variants(server.node2.keyOf(pathname))).length === 0, 'node 2 to apply the purge', 10_000)

    const res = await fetch(url)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-status')).toContain('fwd=uri-miss')
    await res.arrayBuffer()
    expect(server.upstream.count(pathname)).toBe(before + 1)
    await waitFor(async () => (await server.node1.store.variants(server.node1.keyOf(pathname))).length === 1, `node 1 to store ${pathname} again`)
  })

  it('purges by cache tag (Surrogate-Key) after showing what it covers, and lists it in the history', async () => {
    await page.goto(`${server.origin}/_caje/list`)
    await page.locator('select[name="kind"]').selectOption('tag')
    await page.getByLabel('URL, prefix or tag').fill('product-7')
    await page.getByRole('button', { name: 'Purge', exact: true }).click()
    await page.waitForURL('**/_caje/confirm/purge?kind=tag&value=product-7')
    expect(await page.locator('h1').textContent()).toBe('Purge tag product-7?')
    expect(await page.locator('[data-slot="entries"]').textContent()).toBe('1')
    expect(await page.locator('[data-slot="nodes"]').textContent()).toBe('e2e-node-1')
    await shot('confirm-purge-tag.png')
    await page.getByRole('button', { name: 'Yes, purge' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe('Purged tag product-7: 1 entry removed on this node; other nodes follow within seconds.')
    // The history shows it, and both live nodes apply it within seconds.
    await page.getByRole('link', { name: 'Purges' }).click()
    await page.waitForURL('**/_caje/purges')
    const row = page.locator('table[data-table="purges"] tbody tr').first()
    expect(await row.locator('td').first().textContent()).toBe('tag product-7')
    await expect
      .poll(async () => {
        await page.reload()
        return page.locator('table[data-table="purges"] tbody tr').first().locator('[data-slot="applied"] [data-component="badge"]').textContent()
      })
      .toBe('applied on 2 of 2 nodes')
    await shot('purges.png')
    const res = await fetch(`${server.origin}/api/products/7`)
    expect(res.headers.get('cache-status')).toContain('fwd=uri-miss')
    await res.arrayBuffer()
    // Purged and fetched again: node 1 stores it anew, so it holds as many entries as before the purges.
    await waitFor(async () => (await server.node1.store.variants(server.node1.keyOf('/api/products/7'))).length === 1, 'node 1 to store /api/products/7 again')
  })

  it('populates one entry from its row, from the peer, and says where it came from', async () => {
    const one = `${server.origin}/assets/vendor-1.js`
    const originBefore = server.upstream.count('/assets/vendor-1.js')
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent('/assets/vendor-')}`)
    const row = page.locator('table[data-table="manifest"] tbody tr').filter({ has: page.locator(`td[data-slot="url"] span[title="${server.node1.keyOf('/assets/vendor-1.js')}"]`) })
    await row.getByRole('button', { name: `Populate ${one}` }).click()
    await page.waitForURL((u) => u.pathname === '/_caje/list' && u.searchParams.get('filter') === '/assets/vendor-')
    expect(await flash()).toBe('Populate started. Progress shows below.')
    await expect
      .poll(() => page.locator('[data-slot="populate-state"] [data-slot="summary"]').textContent(), { timeout: 30_000 })
      .toMatch(/^Last run \(http:\/\/localhost:\d+\/assets\/vendor-1\.js\) · 1 fetched \(1 from peers, 0 from the origin\), 0 skipped, 0 failed/)
    // Without a reload (the page either loaded after the run, or refreshed its tables when it ended):
    // the disk table lists it, copied from the peer.
    const disk = page.locator('table[data-table="disk"] tbody tr')
    await expect.poll(() => disk.locator('td[data-slot="source"]').allTextContents()).toEqual(['peer e2e-node-2'])
    expect(server.upstream.count('/assets/vendor-1.js')).toBe(originBefore)
    await waitFor(async () => (await nodesOf(one, '/assets/vendor-1.js')).length === 2, 'the manifest to list node 1 as a holder')
  })

  it('populates node 1 from its peer and shows the result', async () => {
    const { node1Disk, peerOnly } = server.counts
    const originBefore = PEER_ONLY.map((p) => server.upstream.count(p))
    await page.goto(`${server.origin}/_caje/list`)
    await page.getByRole('button', { name: 'Populate this node' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe('Populate started. Progress shows below.')
    await expect
      .poll(() => page.locator('[data-slot="populate-state"] [data-slot="summary"]').textContent(), { timeout: 30_000 })
      .toMatch(new RegExp(`^Last run · ${peerOnly - 1} fetched \\(${peerOnly - 1} from peers, 0 from the origin\\), \\d+ skipped, 0 failed`))
    expect(await page.getByRole('button', { name: 'Populate this node' }).isEnabled()).toBe(true)
    // Node 2 had every one of them: nothing went to the origin.
    expect(PEER_ONLY.map((p) => server.upstream.count(p))).toEqual(originBefore)
    // The page refreshed its tables and header when the run finished, without a reload.
    await expect.poll(() => page.locator('#disk [data-slot="range"]').first().textContent()).toBe(`1–50 of ${node1Disk + peerOnly}`)
    expect(await page.locator('[data-component="status"]').textContent()).toContain(`Entries${node1Disk + peerOnly}`)
    await shot('list-after-populate.png')
    await filterBy('/assets/vendor-')
    expect(await page.locator('table[data-table="disk"] tbody tr').count()).toBe(PEER_ONLY.filter((p) => p.startsWith('/assets/vendor-')).length)
    await expect.poll(async () => {
      await page.reload()
      return nodesOf(`${server.origin}/assets/vendor-3.js`)
    }).toEqual(['e2e-node-1', 'e2e-node-2'])
  })

  it('clears the disk cache after a confirmation', async () => {
    const held = (await server.node1.store.list({ limit: 1 })).total
    await page.goto(`${server.origin}/_caje/list`)
    await page.getByRole('link', { name: 'Clear FS…' }).click()
    await page.waitForURL('**/_caje/confirm/clear_fs')
    expect(await page.locator('h1').textContent()).toBe('Clear this node’s disk cache?')
    await shot('confirm-clear-fs.png')
    await page.getByRole('button', { name: 'Yes, clear the disk cache' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe(`Cleared this node’s disk cache: ${held} entries removed.`)
    expect(await page.locator('#disk [data-component="empty"]').textContent()).toBe('No entries on this node’s disk.')
    // The manifest forgets node 1 as a holder; node 2's copies stay listed.
    await expect
      .poll(async () => {
        await page.reload()
        return page.locator('table[data-table="manifest"] [data-slot="nodes"] [data-kind="self"]').count()
      })
      .toBe(0)
    expect(await nodesOf(`${server.origin}/assets/app-1.js`, '/assets/app-1.js')).toEqual(['e2e-node-2'])
    const res = await fetch(`${server.origin}/assets/app-1.js`)
    expect(res.headers.get('cache-status')).toContain('fwd=uri-miss')
    await res.arrayBuffer()
  })

  it('adds and removes a second passkey, never the last one', async () => {
    // The first authenticator holds a credential for this admin and would be
    // excluded from a second registration: use another one, as with a phone.
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: firstAuthenticator })
    await addAuthenticator()
    await page.getByRole('link', { name: 'Passkeys & access' }).click()
    await page.waitForURL('**/_caje/passkeys')
    await page.getByLabel('Name for the new passkey').fill('Phone')
    await page.getByRole('button', { name: 'Add a passkey' }).click()
    await page.waitForFunction(() => document.querySelector('[data-component="flash"]')?.textContent?.includes('Phone'))
    const rows = page.locator('table[data-table="passkeys"] tbody tr')
    expect(await rows.count()).toBe(2)
    await shot('passkeys.png', { fullPage: true })
    await rows.filter({ has: page.locator('input[value="Phone"]') }).getByRole('button', { name: 'Remove' }).click()
    await page.waitForURL('**/_caje/passkeys')
    expect(await flash()).toBe('Passkey removed.')
    expect(await rows.count()).toBe(1)
    expect(await rows.first().getByRole('button', { name: 'Remove' }).isDisabled()).toBe(true)
  })

  it('raised no browser errors (CSP, scripts, 5xx) and no server errors', () => {
    expect(problems).toEqual([])
    expect(server.serverErrors).toEqual([])
  })
})
