// Every setting comes from an environment variable or the matching --flag
// (CAJE_CACHE_DIR ⇔ --cache-dir, PORT ⇔ --port). A bad value stops start-up
// with a ConfigError that names the variable and says how to fix it.

import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { DEFAULT_LITEFS_API } from './manifest/primary.ts'
import { STEERING_REQUEST_HEADERS } from './proxy/forward.ts'
import { loadRulesFile, RulesFileError } from './rules/load.ts'
import type { RulesFile } from './rules/types.ts'
import type { DiskAdmission } from './cache/disk-store.ts'

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`)
    this.name = 'ConfigError'
  }
}

export interface Config {
  port: number
  /** Address to listen on; `::` (IPv6 and IPv4, dual stack) unless CAJE_LISTEN_HOST says otherwise. */
  listenHost: string
  /** CAJE_LISTEN_HOST was not set: on a host without IPv6, `::` falls back to `0.0.0.0`. */
  listenHostDefaulted: boolean
  /** CAJE_INTERNAL_LISTEN: a second listener serving only /_caje/internal/* (the public port then refuses them). */
  internalListen: { host: string; port: number } | undefined
  /** Origin for every host; undefined means "run the built-in demo origin". */
  origin: URL | undefined
  /** Host (lower case, with port if non-default) → origin. Checked before `origin`. */
  sites: Map<string, URL>
  cacheDir: string
  databasePath: string
  memoryCacheBytes: number
  cacheMaxBytes: number
  /** Most entries on disk (CAJE_CACHE_MAX_ENTRIES): each one costs the in-memory index memory. */
  cacheMaxEntries: number
  /** The memory cacheMaxEntries was worked out from (CAJE_CACHE_MAX_ENTRIES=auto, the default); undefined when it was set. */
  cacheMaxEntriesMemoryBytes: number | undefined
  maxObjectBytes: number
  /** Most variants (Vary) kept under one URL; the least recently used goes first. */
  maxVariants: number
  /** Most body bytes waiting to be written to disk; a response that does not fit is served without being stored. */
  writeQueueBytes: number
  /** When a body small enough for the memory tier is written to disk (cache/disk-store.ts DiskAdmission). */
  diskAdmission: DiskAdmission
  nodeId: string
  region: string
  /** FLY_APP_NAME or FLY_MACHINE_ID is set: Fly's proxy is in front and sets Fly-Client-IP. */
  runningOnFly: boolean
  litefsDir: string | undefined
  /** LiteFS's HTTP API, which says whether this node is primary (CAJE_LITEFS_API). */
  litefsApi: string
  clusterSecret: string | undefined
  primaryUrlTemplate: string
  internalUrl: string
  populateInterval: number
  populateConcurrency: number
  /** Share (0..1) of the hot set a node that started empty holds before /_caje/ready answers 200; 0 turns warm-up off. */
  readyWarmShare: number
  /** Entries in the hot set: the most asked-for fresh entries in the manifest. */
  readyHotSet: number
  /** Seconds after which a warming node is ready anyway (no peer, origin down). */
  readyTimeoutSeconds: number
  /** Seconds between this node's batches of per-key hit counts to the manifest. */
  hitFlushSeconds: number
  /** How often this node reads the purge log, ms; 0: only when a peer nudges it (and at start). */
  purgePollMs: number
  adminPassword: string | undefined
  allowPasswordLogin: boolean
  apiToken: string | undefined
  rpId: string
  rpName: string
  publicOrigin: string
  metricsToken: string | undefined
  /** Connect / response-headers / body-idle timeouts towards the origin, ms. */
  originConnectTimeoutMs: number
  originHeadersTimeoutMs: number
  originBodyTimeoutMs: number
  /** Store responses carrying Set-Cookie (Set-Cookie itself is never stored or replayed). */
  cacheSetCookie: boolean
  /** RFC 9111 §4.2.2 heuristic freshness; false: only responses with explicit freshness are stored. */
  heuristicFreshness: boolean
  /** Trust X-Forwarded-Host / -Proto from the client (only behind a proxy you run). */
  trustForwardedHeaders: boolean
  /** Request fields never forwarded to the origin (lower case): STEERING_REQUEST_HEADERS plus CAJE_STRIP_REQUEST_HEADERS. */
  stripRequestHeaders: ReadonlySet<string>
  /** Send the client's Host to the origin (default: the origin URL's host, as nginx does). */
  preserveHost: boolean
  /** Client-side: idle keep-alive and request-header timeouts, ms. */
  requestTimeoutMs: number
  headersTimeoutMs: number
  shutdownTimeoutMs: number
  accessLog: boolean
  /** CAJE_CONFIG: the rules file's path (absolute) and its checked contents. */
  rulesPath: string | undefined
  rules: RulesFile | undefined
}

type Source = Record<string, string | undefined>

const KIB = 1024
const MIB = 1024 * KIB
const GIB = 1024 * MIB

/** A secret sent as `Authorization: Bearer <secret>`: one token, so no whitespace (RFC 6750 §2.1). */
function bearerSecret(name: string, value: string | undefined): string | undefined {
  if (value !== undefined && /\s/.test(value)) throw new ConfigError(name, 'contains whitespace; it is sent as a bearer token, so use letters, digits and -._~+/= only (e.g. `openssl rand -hex 32`)')
  return value
}

/** Turn `--cache-dir=x` / `--cache-dir x` / `--port 9000` into CAJE_CACHE_DIR / PORT entries. */
export function flagsToEnv(argv: readonly string[]): Source {
  const out: Source = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith('--')) throw new ConfigError(arg, `unexpected argument; flags look like --cache-dir=/path, one for each variable of the README's configuration table (CAJE_CACHE_DIR as --cache-dir)`)
    let name = arg.slice(2)
    let value: string | undefined
    const eq = name.indexOf('=')
    if (eq >= 0) {
      value = name.slice(eq + 1)
      name = name.slice(0, eq)
    } else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) {
      value = argv[++i]
    } else {
      value = 'true'
    }
    const upper = name.replace(/-/g, '_').toUpperCase()
    const variable = upper === 'PORT' ? 'PORT' : `CAJE_${upper}`
    out[variable] = value
  }
  return out
}

/** Parse `1048576`, `64kb`, `512MB`, `2GiB` into bytes. */
export function parseBytes(variable: string, raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(raw)
  if (!m) throw new ConfigError(variable, `"${raw}" is not a size; use bytes or a unit, e.g. 1048576, 256MB, 2GiB`)
  const n = Number(m[1])
  const unit = (m[2] ?? 'b').toLowerCase()[0]
  const mult = unit === 'k' ? KIB : unit === 'm' ? MIB : unit === 'g' ? GIB : unit === 't' ? GIB * 1024 : 1
  return Math.floor(n * mult)
}

function int(variable: string, raw: string, min: number, max: number): number {
  if (!/^\s*-?\d+\s*$/.test(raw)) throw new ConfigError(variable, `"${raw}" is not a whole number; set it to a number between ${min} and ${max}`)
  const n = Number(raw)
  if (n < min || n > max) throw new ConfigError(variable, `${n} is out of range; set it to a number between ${min} and ${max}`)
  return n
}

/**
 * Memory the in-memory index of the disk tier is planned at per entry: 449 bytes of V8 heap
 * and about 200 outside it at a million entries (`npm run bench:index-memory`), plus the heap's
 * room to grow between collections.
 */
export const INDEX_BYTES_PER_ENTRY = 1024

/** The share of the machine's memory CAJE_CACHE_MAX_ENTRIES=auto lets the index take. */
export const AUTO_INDEX_SHARE = 0.25

/**
 * The memory this process may use: its cgroup's limit (a container's) when it has one,
 * else the machine's. Node reports no limit as a number far above the machine's memory.
 */
export function machineMemoryBytes(): number {
  const constrained = process.constrainedMemory?.() ?? 0
  const total = os.totalmem()
  return constrained > 0 && constrained < total ? constrained : total
}

/** CAJE_CACHE_MAX_ENTRIES=auto: the entries whose index fits AUTO_INDEX_SHARE of `memoryBytes` (at least 1,000). */
export function autoMaxEntries(memoryBytes: number): number {
  return Math.max(1000, Math.floor((memoryBytes * AUTO_INDEX_SHARE) / INDEX_BYTES_PER_ENTRY))
}

function entryCount(variable: string, raw: string): number {
  const n = /^\d+(?:[_,]\d{3})*$/.test(raw) ? Number(raw.replace(/[_,]/g, '')) : NaN
  if (!(Number.isSafeInteger(n) && n >= 1)) throw new ConfigError(variable, `"${raw}" is not a number of entries; set it to a whole number of at least 1 (e.g. 500000) or to auto (a quarter of the machine's memory at ${INDEX_BYTES_PER_ENTRY} bytes an entry)`)
  return n
}

/** A share between 0 and 1, written as 0.9 or 90%. */
function share(variable: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*$/.exec(raw)
  const n = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN
  if (!(n >= 0 && n <= 1)) throw new ConfigError(variable, `"${raw}" is not a share; set it to a number between 0 and 1 (e.g. 0.9) or a percentage (90%)`)
  return n
}

function diskAdmission(variable: string, raw: string): DiskAdmission {
  const v = raw.trim().toLowerCase()
  if (v === 'first-request' || v === 'second-request') return v
  throw new ConfigError(variable, `"${raw}" is not a disk admission rule; use first-request (every stored body is written to disk) or second-request (a body the memory tier holds is written to disk when its URL is asked for again)`)
}

function bool(variable: string, raw: string): boolean {
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false
  throw new ConfigError(variable, `"${raw}" is not a boolean; use true or false`)
}

function httpUrl(variable: string, raw: string): URL {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(variable, `"${raw}" is not a URL; use an absolute http(s) URL such as http://127.0.0.1:3000`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(variable, `"${raw}" must use http:// or https://`)
  }
  if (url.username || url.password) throw new ConfigError(variable, `do not put credentials in the origin URL; the origin must accept the proxied requests as they are`)
  if (url.search || url.hash) throw new ConfigError(variable, `"${raw}" must not have a query or fragment; give the base URL only`)
  return url
}

/** An IP literal or host name to bind: `::`, `0.0.0.0`, `127.0.0.1`, `[::1]`, `localhost`. */
function listenAddress(variable: string, raw: string): string {
  const host = raw.trim().replace(/^\[(.*)\]$/, '$1')
  if (net.isIP(host) || /^[a-z0-9.-]+$/i.test(host)) return host
  throw new ConfigError(variable, `"${raw}" is not an address to listen on; use :: (IPv6 and IPv4), 0.0.0.0 (IPv4 only) or an interface address`)
}

/** `[::]:8081`, `0.0.0.0:8081`, `127.0.0.1:8081` or `:8081` (all interfaces, dual stack) → host and port. */
export function parseListen(variable: string, raw: string): { host: string; port: number } {
  const m = /^\s*(\[[^\]]*\]|[^:\s]*):(\d+)\s*$/.exec(raw)
  if (!m) throw new ConfigError(variable, `"${raw}" is not host:port; write e.g. [::]:8081 (all interfaces) or 127.0.0.1:8081`)
  const port = int(variable, m[2]!, 0, 65535)
  return { host: m[1] === '' ? '::' : listenAddress(variable, m[1]!), port }
}

/** Lower-cased host with the port kept only when it is not the scheme's default. */
export function normaliseHost(raw: string): string {
  const host = raw.trim().toLowerCase()
  // The trailing dot of a fully qualified name belongs to the name, before any port:
  // `a.test.:80` and `a.test.:8080` are a.test too, or they would be separate cache keys (and unknown sites).
  const port = /:\d+$/.exec(host)?.[0] ?? ''
  const name = host.slice(0, host.length - port.length).replace(/\.$/, '')
  return port === ':80' || port === ':443' ? name : name + port
}

/** Fields caje must send the origin, so stripping them is refused. */
const UNSTRIPPABLE = new Set(['host'])

/**
 * `CAJE_STRIP_REQUEST_HEADERS`: comma-separated field names (RFC 9110 §5.1 tokens) never
 * forwarded to the origin, added to STEERING_REQUEST_HEADERS (which cannot be removed).
 */
export function parseStripHeaders(raw: string): ReadonlySet<string> {
  const names = new Set(STEERING_REQUEST_HEADERS)
  for (const part of raw.split(',')) {
    const name = part.trim()
    if (!name) continue
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new ConfigError('CAJE_STRIP_REQUEST_HEADERS', `"${name}" is not a header field name; list names separated by commas, e.g. X-Debug-Host,X-Tenant`)
    }
    const lower = name.toLowerCase()
    if (UNSTRIPPABLE.has(lower)) throw new ConfigError('CAJE_STRIP_REQUEST_HEADERS', `"${name}" cannot be stripped: caje always sends the origin a Host; remove it from the list`)
    names.add(lower)
  }
  return names
}

/** `CAJE_SITES`: `a.example=http://10.0.0.1:3000,b.example=https://b-origin` or a JSON object. */
export function parseSites(raw: string): Map<string, URL> {
  const sites = new Map<string, URL>()
  const text = raw.trim()
  if (!text) return sites
  let pairs: [string, string][]
  if (text.startsWith('{')) {
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw new ConfigError('CAJE_SITES', `is not valid JSON; use {"host":"http://origin"} or host=http://origin,host2=http://origin2`)
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError('CAJE_SITES', 'must be a JSON object of host → origin URL')
    pairs = Object.entries(parsed as Record<string, unknown>).map(([k, v]) => {
      if (typeof v !== 'string') throw new ConfigError('CAJE_SITES', `origin for "${k}" must be a string URL`)
      return [k, v]
    })
  } else {
    pairs = text.split(',').map((part) => {
      const eq = part.indexOf('=')
      if (eq <= 0) throw new ConfigError('CAJE_SITES', `"${part.trim()}" is not host=origin; write e.g. www.example.com=http://127.0.0.1:3000`)
      return [part.slice(0, eq), part.slice(eq + 1)]
    })
  }
  for (const [host, origin] of pairs) {
    if (!/^[a-z0-9.-]+(:\d+)?$/i.test(host.trim())) throw new ConfigError('CAJE_SITES', `"${host}" is not a host name`)
    sites.set(normaliseHost(host), httpUrl('CAJE_SITES', origin.trim()))
  }
  return sites
}

/** Build the validated Config from environment variables, overridden by CLI flags. */
export function loadConfig(env: Source = process.env, argv: readonly string[] = []): Config {
  const flags = flagsToEnv(argv)
  const src: Source = { ...env, ...flags }
  /** Every setting read: a flag naming none of them is a mistake (checked at the end). */
  const read = new Set<string>()
  const get = (name: string): string | undefined => {
    read.add(name)
    const v = src[name]
    return v === undefined || v === '' ? undefined : v
  }
  const bytes = (name: string, fallback: number) => {
    const v = get(name)
    return v === undefined ? fallback : parseBytes(name, v)
  }
  const number = (name: string, fallback: number, min: number, max: number) => {
    const v = get(name)
    return v === undefined ? fallback : int(name, v, min, max)
  }
  const flag = (name: string, fallback: boolean) => {
    const v = get(name)
    return v === undefined ? fallback : bool(name, v)
  }

  const port = number('PORT', 8080, 0, 65535)
  const listenHostRaw = get('CAJE_LISTEN_HOST')
  const listenHost = listenHostRaw === undefined ? '::' : listenAddress('CAJE_LISTEN_HOST', listenHostRaw)
  const internalListenRaw = get('CAJE_INTERNAL_LISTEN')
  const internalListen = internalListenRaw === undefined ? undefined : parseListen('CAJE_INTERNAL_LISTEN', internalListenRaw)
  if (internalListen && internalListen.port !== 0 && internalListen.port === port) {
    throw new ConfigError('CAJE_INTERNAL_LISTEN', `uses port ${port}, which is PORT (the public listener); give the internal listener its own port, e.g. [::]:8081`)
  }
  const originRaw = get('CAJE_ORIGIN')
  const origin = originRaw ? httpUrl('CAJE_ORIGIN', originRaw) : undefined
  const sites = parseSites(get('CAJE_SITES') ?? '')

  const dataDir = get('CAJE_DATA_DIR') ?? path.resolve('.caje')
  const cacheDir = path.resolve(get('CAJE_CACHE_DIR') ?? path.join(dataDir, 'cache'))
  const databasePath = path.resolve(get('CAJE_DATABASE_PATH') ?? path.join(dataDir, 'manifest.db'))

  const memoryCacheBytes = bytes('CAJE_MEMORY_CACHE_BYTES', 64 * MIB)
  const cacheMaxBytes = bytes('CAJE_CACHE_MAX_BYTES', 1 * GIB)
  const maxObjectBytes = bytes('CAJE_MAX_OBJECT_BYTES', 100 * MIB)
  const maxEntriesRaw = (get('CAJE_CACHE_MAX_ENTRIES') ?? 'auto').trim()
  const cacheMaxEntriesMemoryBytes = maxEntriesRaw.toLowerCase() === 'auto' ? machineMemoryBytes() : undefined
  const cacheMaxEntries = cacheMaxEntriesMemoryBytes !== undefined ? autoMaxEntries(cacheMaxEntriesMemoryBytes) : entryCount('CAJE_CACHE_MAX_ENTRIES', maxEntriesRaw)
  if (maxObjectBytes <= 0) throw new ConfigError('CAJE_MAX_OBJECT_BYTES', 'must be larger than 0')
  if (cacheMaxBytes < maxObjectBytes) {
    throw new ConfigError('CAJE_CACHE_MAX_BYTES', `(${cacheMaxBytes} bytes) is smaller than CAJE_MAX_OBJECT_BYTES (${maxObjectBytes}); raise the disk budget or lower the object limit`)
  }

  const nodeId = get('CAJE_NODE_ID') ?? get('FLY_MACHINE_ID') ?? os.hostname()
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(nodeId)) throw new ConfigError('CAJE_NODE_ID', `"${nodeId}" may only contain letters, digits, '.', '_' and '-' (at most 64)`)
  const region = get('CAJE_REGION') ?? get('FLY_REGION') ?? 'local'

  const litefsDir = get('CAJE_LITEFS_DIR')
  const litefsApiRaw = get('CAJE_LITEFS_API')
  if (litefsApiRaw !== undefined && !litefsDir) {
    throw new ConfigError('CAJE_LITEFS_API', 'is set but CAJE_LITEFS_DIR is not; set CAJE_LITEFS_DIR to the LiteFS mount (e.g. /litefs) to run under LiteFS, or unset CAJE_LITEFS_API')
  }
  const litefsApi = httpUrl('CAJE_LITEFS_API', litefsApiRaw ?? DEFAULT_LITEFS_API).href.replace(/\/+$/, '')
  const clusterSecret = bearerSecret('CAJE_CLUSTER_SECRET', get('CAJE_CLUSTER_SECRET'))
  if (clusterSecret !== undefined && clusterSecret.length < 16) {
    throw new ConfigError('CAJE_CLUSTER_SECRET', 'is too short; use at least 16 random characters (e.g. `openssl rand -hex 32`)')
  }
  if (litefsDir && !clusterSecret) {
    throw new ConfigError('CAJE_CLUSTER_SECRET', 'must be set when CAJE_LITEFS_DIR is set: replicas authenticate to the primary with it')
  }
  const flyApp = get('FLY_APP_NAME')
  const primaryUrlTemplate = get('CAJE_PRIMARY_URL_TEMPLATE') ?? (flyApp ? `http://{host}.vm.${flyApp}.internal:{port}` : 'http://{host}:{port}')
  // Peers reach this node's internal routes on the internal listener when there is one.
  const internalPort = internalListen?.port ?? port
  const internalUrl =
    get('CAJE_INTERNAL_URL') ??
    (flyApp && get('FLY_MACHINE_ID') ? `http://${get('FLY_MACHINE_ID')}.vm.${flyApp}.internal:${internalPort}` : `http://127.0.0.1:${internalPort}`)
  httpUrl('CAJE_INTERNAL_URL', internalUrl)

  const adminPassword = get('CAJE_ADMIN_PASSWORD')
  if (adminPassword !== undefined && adminPassword.length < 12) {
    throw new ConfigError('CAJE_ADMIN_PASSWORD', 'is too short; use at least 12 characters (it only enrols the first passkey)')
  }
  const apiToken = bearerSecret('CAJE_API_TOKEN', get('CAJE_API_TOKEN'))
  if (apiToken !== undefined && apiToken.length < 24) throw new ConfigError('CAJE_API_TOKEN', 'is too short; use at least 24 random characters')
  const metricsToken = bearerSecret('CAJE_METRICS_TOKEN', get('CAJE_METRICS_TOKEN'))

  const publicOriginRaw = get('CAJE_PUBLIC_ORIGIN') ?? `http://localhost:${port}`
  const publicOriginUrl = httpUrl('CAJE_PUBLIC_ORIGIN', publicOriginRaw)
  const publicOrigin = publicOriginUrl.origin
  const rpId = get('CAJE_RP_ID') ?? publicOriginUrl.hostname
  // A parent domain on a label boundary: `ample.com` is no parent of `cdn.example.com`, and a
  // browser would refuse every passkey ceremony under it (WebAuthn §5.1.3, registrable suffix).
  if (publicOriginUrl.hostname !== rpId && !publicOriginUrl.hostname.endsWith(`.${rpId}`)) {
    throw new ConfigError('CAJE_RP_ID', `"${rpId}" must be the host of CAJE_PUBLIC_ORIGIN (${publicOriginUrl.hostname}) or a parent domain of it`)
  }

  const rulesPath = get('CAJE_CONFIG') === undefined ? undefined : path.resolve(get('CAJE_CONFIG')!)
  let rules: RulesFile | undefined
  if (rulesPath !== undefined) {
    try {
      rules = loadRulesFile(rulesPath)
    } catch (err) {
      if (err instanceof RulesFileError) throw new ConfigError('CAJE_CONFIG', err.message)
      throw err
    }
  }

  const config: Config = {
    rulesPath,
    rules,
    port,
    listenHost,
    listenHostDefaulted: listenHostRaw === undefined,
    internalListen,
    origin,
    sites,
    cacheDir,
    databasePath,
    memoryCacheBytes,
    cacheMaxBytes,
    cacheMaxEntries,
    cacheMaxEntriesMemoryBytes,
    maxObjectBytes,
    nodeId,
    region,
    runningOnFly: flyApp !== undefined || get('FLY_MACHINE_ID') !== undefined,
    litefsDir: litefsDir ? path.resolve(litefsDir) : undefined,
    litefsApi,
    clusterSecret,
    primaryUrlTemplate,
    internalUrl: internalUrl.replace(/\/$/, ''),
    populateInterval: number('CAJE_POPULATE_INTERVAL', 300, 0, 7 * 24 * 3600),
    populateConcurrency: number('CAJE_POPULATE_CONCURRENCY', 4, 1, 64),
    readyWarmShare: share('CAJE_READY_WARM_SHARE', get('CAJE_READY_WARM_SHARE'), 0.9),
    readyHotSet: number('CAJE_READY_HOT_SET', 1000, 1, 100_000),
    readyTimeoutSeconds: number('CAJE_READY_TIMEOUT', 300, 1, 24 * 3600),
    hitFlushSeconds: number('CAJE_HIT_FLUSH_SECONDS', 60, 1, 3600),
    maxVariants: number('CAJE_MAX_VARIANTS', 32, 1, 10_000),
    writeQueueBytes: bytes('CAJE_WRITE_QUEUE_BYTES', 64 * MIB),
    diskAdmission: diskAdmission('CAJE_DISK_ADMISSION', get('CAJE_DISK_ADMISSION') ?? 'first-request'),
    purgePollMs: number('CAJE_PURGE_POLL_MS', 1_000, 0, 3_600_000),
    adminPassword,
    allowPasswordLogin: flag('CAJE_ALLOW_PASSWORD_LOGIN', false),
    apiToken,
    rpId,
    rpName: get('CAJE_RP_NAME') ?? 'caje',
    publicOrigin,
    metricsToken,
    originConnectTimeoutMs: number('CAJE_ORIGIN_CONNECT_TIMEOUT_MS', 5_000, 1, 600_000),
    originHeadersTimeoutMs: number('CAJE_ORIGIN_TIMEOUT_MS', 30_000, 1, 3_600_000),
    originBodyTimeoutMs: number('CAJE_ORIGIN_BODY_TIMEOUT_MS', 30_000, 1, 3_600_000),
    cacheSetCookie: flag('CAJE_CACHE_SET_COOKIE', false),
    heuristicFreshness: flag('CAJE_HEURISTIC_FRESHNESS', false),
    trustForwardedHeaders: flag('CAJE_TRUST_FORWARDED', false),
    preserveHost: flag('CAJE_PRESERVE_HOST', false),
    stripRequestHeaders: parseStripHeaders(get('CAJE_STRIP_REQUEST_HEADERS') ?? ''),
    requestTimeoutMs: number('CAJE_REQUEST_TIMEOUT_MS', 300_000, 1_000, 3_600_000),
    headersTimeoutMs: number('CAJE_HEADERS_TIMEOUT_MS', 20_000, 1_000, 600_000),
    shutdownTimeoutMs: number('CAJE_SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    accessLog: flag('CAJE_ACCESS_LOG', true),
  }
  // A misspelt flag (`--orign`) would otherwise be an unread variable, and caje would start without it.
  for (const name of Object.keys(flags)) {
    if (!read.has(name)) throw new ConfigError(`--${name === 'PORT' ? 'port' : name.slice('CAJE_'.length).toLowerCase().replace(/_/g, '-')}`, `is not a caje setting; the flags are the variables of the README's configuration table (CAJE_CACHE_DIR as --cache-dir, PORT as --port)`)
  }
  return config
}
