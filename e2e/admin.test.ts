// The admin UI in Debian's Chromium with a virtual WebAuthn authenticator:
// enrol with the password, register a passkey, sign out, sign in with the
// passkey, then use the cache actions and manage passkeys.
// Needs /usr/bin/chromium (scripts/install-chromium.sh).

import fs from 'node:fs'
import path from 'node:path'
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServer, type E2eServer } from './server.ts'

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

async function shot(name: string, opts: { fullPage?: boolean } = {}) {
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: opts.fullPage ?? false })
}

describe.skipIf(!fs.existsSync(CHROMIUM))('admin UI in Chromium', { timeout: 120_000 }, () => {
  beforeAll(async () => {
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
    context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 })
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

  it('signs in with the passkey and sees the entries', async () => {
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe('Signed in.')
    await expect.poll(() => page.locator('table[data-table="disk"] tbody tr').count()).toBe(50)
    expect(await page.locator('table[data-table="manifest"] tbody tr').count()).toBe(50)
    expect(await page.locator('[data-component="status"]').textContent()).toContain('e2e-node-1')
    expect(await page.locator('[data-component="status"]').textContent()).toContain('87.3\u00a0%')
    await shot('list.png')
    await page.locator('#manifest').screenshot({ path: path.join(SHOTS, 'list-manifest.png') })
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: firstAuthenticator })
    expect(credentials[0]!.signCount).toBeGreaterThan(0)
  })

  it('filters and pages', async () => {
    await page.getByLabel('Filter by URL').fill('/api/products/')
    await page.getByRole('button', { name: 'Filter', exact: true }).click()
    await page.waitForURL('**/_caje/list?filter=*')
    const rows = page.locator('table[data-table="manifest"] tbody tr')
    expect(await rows.count()).toBe(48)
    for (const text of await rows.locator('td[data-slot="url"]').allTextContents()) expect(text).toContain('/api/products/')
    await page.getByRole('link', { name: 'Clear filter' }).click()
    await page.locator('#disk').getByRole('link', { name: 'Next' }).first().click()
    await page.waitForURL('**/_caje/list?disk=50*')
    expect(await page.locator('#disk [data-slot="range"]').first().textContent()).toBe('51–100 of 200')
  })

  it('purges a URL', async () => {
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(server.sampleUrl)}`)
    expect(await page.locator('table[data-table="disk"] tbody tr').count()).toBeGreaterThan(0)
    await page.locator('select[name="kind"]').selectOption('url')
    await page.getByLabel('URL, prefix or tag').fill(server.sampleUrl)
    await page.getByRole('button', { name: 'Purge', exact: true }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toMatch(new RegExp(`^Purged ${server.sampleUrl.replace(/[.?/]/g, '\\$&')}: 1 entry removed`))
    await page.goto(`${server.origin}/_caje/list?filter=${encodeURIComponent(server.sampleUrl)}`)
    expect(await page.locator('#disk [data-component="empty"]').textContent()).toBe('Nothing matches this filter.')
  })

  it('populates this node and shows progress until done', async () => {
    await page.goto(`${server.origin}/_caje/list`)
    await page.getByRole('button', { name: 'Populate this node' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toBe('Populate started. Progress shows below.')
    await expect
      .poll(() => page.locator('[data-slot="populate-state"] [data-slot="summary"]').textContent(), { timeout: 30_000 })
      .toMatch(/^Last run · \d+ fetched, \d+ skipped, 0 failed/)
    expect(await page.getByRole('button', { name: 'Populate this node' }).isEnabled()).toBe(true)
    await page.reload()
    expect(await page.locator('#disk [data-slot="range"]').first().textContent()).toMatch(/of (2[0-3]\d)$/)
    await shot('list-after-populate.png')
  })

  it('clears the disk cache after a confirmation', async () => {
    await page.getByRole('link', { name: 'Clear FS…' }).click()
    await page.waitForURL('**/_caje/confirm/clear_fs')
    expect(await page.locator('h1').textContent()).toBe('Clear this node’s disk cache?')
    await shot('confirm-clear-fs.png')
    await page.getByRole('button', { name: 'Yes, clear the disk cache' }).click()
    await page.waitForURL('**/_caje/list')
    expect(await flash()).toMatch(/^Cleared this node’s disk cache: \d+ entries removed\.$/)
    expect(await page.locator('#disk [data-component="empty"]').textContent()).toBe('No entries on this node’s disk.')
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

  it('raised no browser errors (CSP, scripts, server)', () => {
    expect(problems).toEqual([])
  })
})
