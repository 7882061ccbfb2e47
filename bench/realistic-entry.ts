// The metadata a fill stores for one response, for the store's benchmarks.

import type { NewEntry } from '../src/cache/types.ts'
import { decideStore } from '../src/proxy/policy.ts'

const HOSTS = ['www.example.com', 'static.example.com', 'api.example.net']
const TYPES = ['text/html; charset=utf-8', 'application/javascript', 'text/css', 'image/png', 'application/json']

/** The key and variant of entry `i`: every fourth has a Vary'd variant. */
export function entryKeyOf(i: number): { key: string; variant: string } {
  const host = HOSTS[i % HOSTS.length]!
  return { key: `https://${host}/assets/${(i % 97).toString(36)}/file-${i}.js?v=${i % 13}`, variant: i % 4 === 0 ? 'gzip-variant-digest-0123456789abcdef' : '' }
}

/** The metadata a fill of response `i` stores (proxy/fill.ts builds the same shape). */
export function realisticEntry(i: number, now: number): NewEntry {
  const host = HOSTS[i % HOSTS.length]!
  const { key, variant } = entryKeyOf(i)
  const url = `https://${host}/assets/${(i % 97).toString(36)}/file-${i}.js?v=${i % 13}`
  const contentType = TYPES[i % TYPES.length]!
  const varied = variant !== ''
  const headers: Record<string, string> = {
    date: new Date(now).toUTCString(),
    'content-type': contentType,
    'content-length': '32',
    'cache-control': 'public, max-age=3600, stale-while-revalidate=60',
    etag: `"${(i * 2654435761 >>> 0).toString(16)}-${i.toString(36)}"`,
    'last-modified': new Date(now - 86_400_000).toUTCString(),
    server: 'nginx',
    ...(varied ? { vary: 'Accept-Encoding', 'content-encoding': 'gzip' } : {}),
    ...(i % 10 === 0 ? { 'surrogate-key': `post-${i % 1000} section-${i % 7}` } : {}),
  }
  const decision = decideStore(
    { method: 'GET', url, headers: {}, requestTime: now - 5 },
    { status: 200, headers, hasSetCookie: false, responseTime: now },
    { cacheSetCookie: false, heuristicFreshness: false },
  )
  if (!decision.store) throw new Error(`not storable: ${decision.reason}`)
  return {
    key,
    variant,
    url,
    host,
    status: 200,
    headers,
    varyHeaders: varied ? { 'accept-encoding': 'gzip' } : {},
    policy: decision.policy,
    storedAt: now,
    staleAt: decision.staleAt,
    deleteAt: decision.deleteAt,
    tags: i % 10 === 0 ? [`post-${i % 1000}`, `section-${i % 7}`] : [],
    contentType,
    origin: `https://origin-${i % HOSTS.length}.internal/`,
  }
}
