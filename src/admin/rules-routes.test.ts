// The explain page and the reload button, signed in as an admin (session + CSRF), on a real node.
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { explain } from '../rules/explain.ts'
import { tempDirSync } from '../test-support/temp-dirs.ts'
import type { RulesAdmin } from './rules-routes.ts'
import { SITE, flashOf, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness | undefined
afterEach(async () => {
  await h?.close()
  h = undefined
})

/** The node's own rules behind the admin app the harness builds. */
const rulesAdmin: RulesAdmin = {
  explain: (url) => explain({ rules: () => h!.node.rules.current(), store: h!.node.store, readDb: () => h!.node.manifest.readDb(), resolveOrigin: () => undefined }, url),
  reload: () => h!.node.rules.reload(),
  status: () => h!.node.rules.status(),
}

describe('explain and reload in the admin', () => {
  it('renders the explanation for a signed-in admin; the reload button needs the CSRF token and reports a bad file', async () => {
    const dir = tempDirSync('caje-rules-admin-')
    const file = path.join(dir, 'caje.yml')
    fs.writeFileSync(file, 'rules:\n  - name: blog\n    match: { path_glob: "/blog/:slug" }\n    tags: ["post-:slug"]\n')
    h = await setup({ entries: 1, env: { CAJE_CONFIG: file }, deps: { rules: rulesAdmin } })
    const c = h.client()
    await c.signInWithPassword()

    const page = await c.request(`/_caje/explain?url=${encodeURIComponent(`${SITE}/blog/post-1?x=1`)}`, { headers: { accept: 'text/html' } })
    expect(page.status).toBe(200)
    const html = await page.text()
    expect(html).toContain('<dd data-slot="matched">blog</dd>')
    expect(html).toContain('post-post-1')
    // The page is in the admin navigation, marked as the current one.
    expect(html).toContain('<a href="/_caje/explain" aria-current="page">Explain</a>')

    // Without the CSRF token the reload is refused (the form goes back with a message) and nothing changes.
    fs.writeFileSync(file, 'rules:\n  - name: other\n    bypass: true\n')
    const forged = await c.request('/_caje/rules/reload', { form: {}, csrf: false })
    expect(forged.status).not.toBe(200)
    expect(flashOf(forged)?.kind ?? 'refused').not.toBe('ok')
    expect(h.logs.some((l) => l.event === 'admin.csrf_refused' && l.path === '/_caje/rules/reload')).toBe(true)
    expect(h.node.rules.current().match({ scheme: 'http', host: new URL(SITE).host, method: 'GET', path: '/blog/a', headers: {} }).rule).toBe('blog')

    fs.writeFileSync(file, 'rules:\n  - name: blog\n    bypass: sometimes\n')
    const refused = await c.request('/_caje/rules/reload', { form: {} })
    expect(refused.status).toBe(303)
    expect(flashOf(refused)).toMatchObject({ kind: 'error', text: expect.stringContaining('rules[0].bypass: is "sometimes"; write true or false') })
    expect(h.node.rules.current().match({ scheme: 'http', host: new URL(SITE).host, method: 'GET', path: '/blog/a', headers: {} }).rule).toBe('blog')

    fs.writeFileSync(file, 'rules:\n  - name: all\n    bypass: true\n')
    const reloaded = await c.request('/_caje/rules/reload', { form: {} })
    expect(flashOf(reloaded)).toMatchObject({ kind: 'ok', text: 'Rules reloaded: 1 rules in force.' })
  })
})
