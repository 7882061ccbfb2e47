// Static files of the admin UI: public/ (CSS, page scripts, icon) and the ESM
// build of @simplewebauthn/browser straight from node_modules (no bundler, no
// CDN, so the CSP can stay 'self'). Read once at start, served from memory.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Hono } from 'hono'
import type { AdminEnv } from './context.ts'

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
}

/**
 * The repository's public/ folder, found by walking up from this module: it is
 * src/admin/ when run from source and dist/ when run from the build.
 */
export const PUBLIC_DIR = findPublicDir(path.dirname(fileURLToPath(import.meta.url)))

function findPublicDir(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'public')
    if (fs.existsSync(path.join(candidate, 'admin.css'))) return candidate + path.sep
    if (path.dirname(dir) === dir) throw new Error(`caje: the admin's public/ folder (with admin.css) was not found above ${from}; run caje from its repository or image`)
  }
}

/** The `esm/` folder of @simplewebauthn/browser (same major version as the server library). */
export function webauthnBrowserDir(): string {
  const require = createRequire(import.meta.url)
  const main = require.resolve('@simplewebauthn/browser') // …/script/index.js
  return path.join(path.dirname(path.dirname(main)), 'esm')
}

function readTree(root: string, prefix: string, out: Map<string, { body: Buffer; type: string }>) {
  for (const entry of fs.readdirSync(root, { withFileTypes: true })) {
    const full = path.join(root, entry.name)
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name
    if (entry.isDirectory()) readTree(full, rel, out)
    else {
      const type = TYPES[path.extname(entry.name)]
      if (type) out.set(rel, { body: fs.readFileSync(full), type })
    }
  }
}

export function loadAssets(): Map<string, { body: Buffer; type: string }> {
  const files = new Map<string, { body: Buffer; type: string }>()
  readTree(PUBLIC_DIR, '', files)
  readTree(webauthnBrowserDir(), 'webauthn', files)
  return files
}

export function registerAssetRoutes(app: Hono<AdminEnv>): void {
  const files = loadAssets()
  app.get('/assets/*', (c) => {
    const name = c.req.path.slice(c.req.path.indexOf('/assets/') + '/assets/'.length)
    const file = files.get(name)
    if (!file) return c.text('Not found', 404)
    return c.body(new Uint8Array(file.body), 200, { 'Content-Type': file.type })
  })
}
