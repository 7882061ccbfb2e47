import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import os from 'node:os'
import { ConfigError, INDEX_BYTES_PER_ENTRY, autoMaxEntries, flagsToEnv, loadConfig, machineMemoryBytes, parseBytes, parseSites } from './config.ts'
import { STEERING_REQUEST_HEADERS } from './proxy/forward.ts'

describe('loadConfig', () => {
  it('has working defaults: no origin means the demo origin', () => {
    const c = loadConfig({})
    expect(c.port).toBe(8080)
    expect(c.origin).toBeUndefined()
    expect(c.memoryCacheBytes).toBe(64 * 1024 * 1024)
    expect(c.rpId).toBe('localhost')
    expect(c.purgePollMs).toBe(1000)
    expect(loadConfig({ CAJE_PURGE_POLL_MS: '0' }).purgePollMs).toBe(0)
  })

  it('listens dual stack by default; CAJE_INTERNAL_LISTEN and CAJE_LITEFS_API are checked', () => {
    expect(loadConfig({})).toMatchObject({ listenHost: '::', listenHostDefaulted: true, internalListen: undefined })
    expect(loadConfig({ CAJE_LISTEN_HOST: '[::1]' })).toMatchObject({ listenHost: '::1', listenHostDefaulted: false })
    expect(loadConfig({ CAJE_INTERNAL_LISTEN: '[::]:8081' }).internalListen).toEqual({ host: '::', port: 8081 })
    expect(loadConfig({ CAJE_INTERNAL_LISTEN: ':8081' }).internalListen).toEqual({ host: '::', port: 8081 })
    expect(loadConfig({ CAJE_INTERNAL_LISTEN: '127.0.0.1:9' }).internalListen).toEqual({ host: '127.0.0.1', port: 9 })
    expect(() => loadConfig({ CAJE_INTERNAL_LISTEN: '8081' })).toThrow(/CAJE_INTERNAL_LISTEN: "8081" is not host:port; write e\.g\. \[::\]:8081/)
    expect(() => loadConfig({ PORT: '8080', CAJE_INTERNAL_LISTEN: '[::]:8080' })).toThrow(/CAJE_INTERNAL_LISTEN: uses port 8080, which is PORT/)
    // Peers reach the internal routes on the internal listener's port.
    expect(loadConfig({ FLY_APP_NAME: 'app', FLY_MACHINE_ID: 'm1', CAJE_INTERNAL_LISTEN: '[::]:8081' }).internalUrl).toBe('http://m1.vm.app.internal:8081')
    const litefs = { CAJE_LITEFS_DIR: '/litefs', CAJE_CLUSTER_SECRET: 'x'.repeat(32) }
    expect(loadConfig(litefs).litefsApi).toBe('http://localhost:20202')
    expect(loadConfig({ ...litefs, CAJE_LITEFS_API: 'http://127.0.0.1:20203/' }).litefsApi).toBe('http://127.0.0.1:20203')
    expect(() => loadConfig({ ...litefs, CAJE_LITEFS_API: 'localhost:20202' })).toThrow(/CAJE_LITEFS_API/)
    expect(() => loadConfig({ CAJE_LITEFS_API: 'http://localhost:20202' })).toThrow(/CAJE_LITEFS_API: is set but CAJE_LITEFS_DIR is not/)
  })

  it('writes every stored body to disk unless told to wait for a second request', () => {
    expect(loadConfig({}).diskAdmission).toBe('first-request')
    expect(loadConfig({ CAJE_DISK_ADMISSION: 'second-request' }).diskAdmission).toBe('second-request')
    expect(loadConfig({ CAJE_DISK_ADMISSION: ' Second-Request ' }).diskAdmission).toBe('second-request')
    expect(loadConfig({}, ['--disk-admission=second-request']).diskAdmission).toBe('second-request')
  })

  it('bounds the entries on disk by a quarter of the memory unless told a number', () => {
    // A 512 MB machine (fly.toml's): 131,072 entries, 128 MiB of index at 1 KiB an entry.
    expect(autoMaxEntries(512 * 1024 * 1024)).toBe(131_072)
    expect(autoMaxEntries(1024 * 1024)).toBe(1000)
    expect(INDEX_BYTES_PER_ENTRY).toBe(1024)
    const memory = machineMemoryBytes()
    expect(memory).toBeGreaterThan(0)
    expect(memory).toBeLessThanOrEqual(os.totalmem())
    expect(loadConfig({})).toMatchObject({ cacheMaxEntries: autoMaxEntries(memory), cacheMaxEntriesMemoryBytes: memory })
    expect(loadConfig({ CAJE_CACHE_MAX_ENTRIES: ' Auto ' })).toMatchObject({ cacheMaxEntries: autoMaxEntries(memory), cacheMaxEntriesMemoryBytes: memory })
    const explicit = loadConfig({ CAJE_CACHE_MAX_ENTRIES: '500000' })
    expect(explicit.cacheMaxEntries).toBe(500_000)
    expect(explicit.cacheMaxEntriesMemoryBytes).toBeUndefined()
    expect(loadConfig({ CAJE_CACHE_MAX_ENTRIES: '2_000_000' }).cacheMaxEntries).toBe(2_000_000)
    expect(loadConfig({}, ['--cache-max-entries=300']).cacheMaxEntries).toBe(300)
  })

  it('takes CAJE_RP_ID as the public host or a parent domain of it, on a label boundary', () => {
    const origin = { CAJE_PUBLIC_ORIGIN: 'https://cdn.example.com' }
    expect(loadConfig(origin).rpId).toBe('cdn.example.com')
    expect(loadConfig({ ...origin, CAJE_RP_ID: 'example.com' }).rpId).toBe('example.com')
    expect(loadConfig({ ...origin, CAJE_RP_ID: 'cdn.example.com' }).rpId).toBe('cdn.example.com')
    for (const rpId of ['ample.com', 'xample.com', 'other.com']) {
      expect(() => loadConfig({ ...origin, CAJE_RP_ID: rpId })).toThrow(`CAJE_RP_ID: "${rpId}" must be the host of CAJE_PUBLIC_ORIGIN (cdn.example.com) or a parent domain of it`)
    }
  })

  it('reads flags over environment variables', () => {
    const c = loadConfig({ PORT: '9000', CAJE_ORIGIN: 'http://a:1' }, ['--port', '9100', '--memory-cache-bytes=2MB', '--origin=http://b:2'])
    expect(c.port).toBe(9100)
    expect(c.memoryCacheBytes).toBe(2 * 1024 * 1024)
    expect(c.origin?.href).toBe('http://b:2/')
    expect(flagsToEnv(['--trust-forwarded'])).toEqual({ CAJE_TRUST_FORWARDED: 'true' })
  })

  it('refuses a flag that names no setting, rather than starting without it', () => {
    expect(() => loadConfig({}, ['--orign=http://b:2'])).toThrow("--orign: is not a caje setting; the flags are the variables of the README's configuration table (CAJE_CACHE_DIR as --cache-dir, PORT as --port)")
    expect(() => loadConfig({}, ['--help'])).toThrow(/^--help: is not a caje setting/)
    // The same name in the environment is not caje's to judge (other programs' variables live there too).
    expect(loadConfig({ CAJE_ORIGN: 'http://b:2' }).origin).toBeUndefined()
  })

  it.each([
    [{ PORT: 'eighty' }, /^PORT: "eighty" is not a whole number/],
    [{ PORT: '70000' }, /^PORT: 70000 is out of range/],
    [{ CAJE_ORIGIN: 'ftp://x' }, /^CAJE_ORIGIN: "ftp:\/\/x" must use http:\/\/ or https:\/\//],
    [{ CAJE_ORIGIN: 'not a url' }, /^CAJE_ORIGIN: "not a url" is not a URL/],
    [{ CAJE_MEMORY_CACHE_BYTES: 'lots' }, /^CAJE_MEMORY_CACHE_BYTES: "lots" is not a size/],
    [{ CAJE_CACHE_MAX_BYTES: '1MB', CAJE_MAX_OBJECT_BYTES: '2MB' }, /^CAJE_CACHE_MAX_BYTES: .* smaller than CAJE_MAX_OBJECT_BYTES/],
    [{ CAJE_ACCESS_LOG: 'maybe' }, /^CAJE_ACCESS_LOG: "maybe" is not a boolean/],
    [{ CAJE_CACHE_MAX_ENTRIES: '0' }, /^CAJE_CACHE_MAX_ENTRIES: "0" is not a number of entries; set it to a whole number of at least 1 .* or to auto/],
    [{ CAJE_CACHE_MAX_ENTRIES: 'lots' }, /^CAJE_CACHE_MAX_ENTRIES: "lots" is not a number of entries/],
    [{ CAJE_CACHE_MAX_ENTRIES: '1e6' }, /^CAJE_CACHE_MAX_ENTRIES: "1e6" is not a number of entries/],
    [{ CAJE_DISK_ADMISSION: 'third-request' }, /^CAJE_DISK_ADMISSION: "third-request" is not a disk admission rule; use first-request .* or second-request/],
    [{ CAJE_PURGE_POLL_MS: '-1' }, /^CAJE_PURGE_POLL_MS: -1 is out of range; set it to a number between 0 and 3600000/],
    [{ CAJE_LITEFS_DIR: '/litefs' }, /^CAJE_CLUSTER_SECRET: must be set when CAJE_LITEFS_DIR is set/],
    [{ CAJE_ADMIN_PASSWORD: 'short' }, /^CAJE_ADMIN_PASSWORD: is too short/],
    [{ CAJE_SITES: 'nonsense' }, /^CAJE_SITES: "nonsense" is not host=origin/],
    [{ CAJE_CLUSTER_SECRET: 'correct horse battery staple' }, /^CAJE_CLUSTER_SECRET: contains whitespace/],
    [{ CAJE_METRICS_TOKEN: 'scrape me\tplease' }, /^CAJE_METRICS_TOKEN: contains whitespace/],
  ])('rejects %o with a message naming the variable', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError)
    expect(() => loadConfig(env)).toThrow(message)
  })

  it('parses sizes and site maps', () => {
    expect(parseBytes('X', '1.5KiB')).toBe(1536)
    expect(parseBytes('X', '0')).toBe(0)
    const sites = parseSites('WWW.Example.com=http://127.0.0.1:3000, b.example:443=https://b')
    expect(sites.get('www.example.com')?.href).toBe('http://127.0.0.1:3000/')
    expect(sites.get('b.example')?.href).toBe('https://b/')
    expect(parseSites('{"a.example":"http://x:1"}').get('a.example')?.port).toBe('1')
  })
})

describe('start-up with a bad value', () => {
  it('stops with exit code 2 and names the variable and the fix', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      env: { ...process.env, PORT: '0', CAJE_MEMORY_CACHE_BYTES: 'plenty' },
      encoding: 'utf8',
      timeout: 20_000,
    })
    expect(run.status).toBe(2)
    expect(run.stderr).toContain('caje: configuration error: CAJE_MEMORY_CACHE_BYTES: "plenty" is not a size; use bytes or a unit')
  })
})

describe('CAJE_STRIP_REQUEST_HEADERS', () => {
  it('adds names, lower-cased, to the steering headers caje always strips', () => {
    const { stripRequestHeaders } = loadConfig({ CAJE_STRIP_REQUEST_HEADERS: ' X-Tenant ,x-debug-host,,' })
    expect(stripRequestHeaders.has('x-tenant')).toBe(true)
    expect(stripRequestHeaders.has('x-debug-host')).toBe(true)
    for (const name of STEERING_REQUEST_HEADERS) expect(stripRequestHeaders.has(name)).toBe(true)
    expect(loadConfig({}).stripRequestHeaders).toEqual(new Set(STEERING_REQUEST_HEADERS))
  })

  it.each([
    ['X Tenant', /^CAJE_STRIP_REQUEST_HEADERS: "X Tenant" is not a header field name; list names separated by commas/],
    ['x-a;x-b', /^CAJE_STRIP_REQUEST_HEADERS: "x-a;x-b" is not a header field name/],
    ['x-a,Host', /^CAJE_STRIP_REQUEST_HEADERS: "Host" cannot be stripped: caje always sends the origin a Host/],
  ])('refuses %j with a message naming the variable and the fix', (value, message) => {
    expect(() => loadConfig({ CAJE_STRIP_REQUEST_HEADERS: value })).toThrow(ConfigError)
    expect(() => loadConfig({ CAJE_STRIP_REQUEST_HEADERS: value })).toThrow(message)
  })
})
