// The deployment files agree with caje and with each other: fly.toml's [env]
// is a valid configuration, peers can reach each other (dual stack, internal
// listener), LiteFS's data and the body cache live in separate directories,
// machines are never auto-stopped, and the image is built on a supported Node.

import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.ts'

const ROOT = path.resolve(import.meta.dirname, '..')
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), 'utf8')

/** `key = "value"` / `key = value` lines of one TOML table (enough for fly.toml's flat tables). */
function tomlTable(text: string, table: string): Record<string, string> {
  const out: Record<string, string> = {}
  let inside = false
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('[')) {
      inside = line === `[${table}]`
      continue
    }
    const m = inside ? /^([A-Za-z0-9_]+)\s*=\s*("(.*)"|\S+)/.exec(line) : null
    if (m) out[m[1]!] = m[3] ?? m[2]!
  }
  return out
}

/** `key: "value"` under a top-level YAML section of litefs.yml. */
function yamlValue(text: string, section: string, key: string): string | undefined {
  const block = new RegExp(`^${section}:\\n((?:[ \\t]+.*\\n|\\s*\\n|[ \\t]*#.*\\n)*)`, 'm').exec(text)?.[1] ?? ''
  return new RegExp(`^\\s+${key}:\\s*"?([^"\\n]*)"?`, 'm').exec(block)?.[1]
}

describe('deployment files', () => {
  const fly = read('fly.toml')
  const litefs = read('litefs.yml')
  const env = tomlTable(fly, 'env')
  const service = tomlTable(fly, 'http_service')
  const mounts = tomlTable(fly, 'mounts')

  it("fly.toml's [env] is a valid caje configuration on a Fly machine", () => {
    const config = loadConfig({ ...env, FLY_APP_NAME: 'caje-example', FLY_MACHINE_ID: 'm1', FLY_REGION: 'ams', CAJE_CLUSTER_SECRET: 'x'.repeat(32) })
    expect(config.listenHost).toBe('::')
    expect(config.internalListen).toEqual({ host: '::', port: 8081 })
    expect(config.internalUrl).toBe('http://m1.vm.caje-example.internal:8081')
    expect(config.primaryUrlTemplate).toBe('http://{host}.vm.caje-example.internal:{port}')
    expect(config.litefsApi).toBe(`http://localhost${yamlValue(litefs, 'http', 'addr')}`)
    // The internal port is not a service: only the private network reaches it.
    expect(fly).not.toMatch(/internal_port\s*=\s*8081/)
    expect(Number(service.internal_port)).toBe(config.port)
  })

  it("routes users by readiness (/_caje/ready) and watches liveness (/_caje/health) apart", () => {
    // The proxy routes by service checks; top-level checks only report.
    expect(tomlTable(fly, '[http_service.checks]').path).toBe('/_caje/ready')
    const alive = tomlTable(fly, 'checks.alive')
    expect(alive.path).toBe('/_caje/health')
    expect(Number(alive.port)).toBe(Number(service.internal_port))
    // A warm-up gives up before `fly deploy` stops waiting for checks (5 minutes by default).
    const config = loadConfig({ ...env, FLY_APP_NAME: 'caje-example', FLY_MACHINE_ID: 'm1', CAJE_CLUSTER_SECRET: 'x'.repeat(32) })
    expect(config.readyTimeoutSeconds).toBeLessThan(300)
  })

  it('never auto-stops or auto-starts machines (Fly: not with LiteFS)', () => {
    expect(service.auto_stop_machines).toBe('off')
    expect(service.auto_start_machines).toBe('false')
    expect(service.min_machines_running).toBeUndefined()
  })

  it("keeps LiteFS's data and the body cache in separate directories of the one volume", () => {
    const dataDir = yamlValue(litefs, 'data', 'dir')!
    const cacheDir = env.CAJE_CACHE_DIR!
    for (const dir of [dataDir, cacheDir]) expect(dir.startsWith(`${mounts.destination}/`), dir).toBe(true)
    expect(path.relative(dataDir, cacheDir).startsWith('..')).toBe(true)
    expect(path.relative(cacheDir, dataDir).startsWith('..')).toBe(true)
    expect(env.CAJE_DATABASE_PATH!.startsWith(`${yamlValue(litefs, 'fuse', 'dir')}/`)).toBe(true)
  })

  it("leaves LiteFS room on the volume the deploy instructions create: the cache budget, its 10 % of index and temporary files and 1 GB of headroom fit", () => {
    // A full volume stops LiteFS from writing its transaction files, and with them the manifest.
    const sizes = [...`${fly}\n${read('README.md')}`.matchAll(/fly volumes create \S+ .*--size (\d+)/g)].map((m) => Number(m[1]))
    expect(sizes.length).toBeGreaterThan(0)
    const config = loadConfig({ ...env, FLY_APP_NAME: 'caje-example', FLY_MACHINE_ID: 'm1', CAJE_CLUSTER_SECRET: 'x'.repeat(32) })
    // Fly sizes volumes in GB; counted as 10^9 bytes, the smaller reading.
    for (const gb of sizes) expect(config.cacheMaxBytes * 1.1 + 1e9, `a ${gb} GB volume`).toBeLessThanOrEqual(gb * 1e9)
  })

  it('stops LiteFS on a startup error (exit-on-error) and builds on Node 22', () => {
    expect(litefs).toMatch(/^exit-on-error: true$/m)
    const froms = [...read('Dockerfile').matchAll(/^FROM (node:\S+)/gm)].map((m) => m[1])
    expect(froms).toEqual(['node:22-slim', 'node:22-slim'])
    const ignored = read('.dockerignore').split('\n')
    for (const entry of ['node_modules', 'dist', '.git', '.caje']) expect(ignored).toContain(entry)
  })
})
