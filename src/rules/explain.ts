// "What will caje do with this URL, and why": the site, the rules that match,
// the cache key, what a 200 would be kept for, and the variants held on this
// node and in the manifest. Answered by /_caje/explain (page and JSON).

import type { Kysely } from 'kysely'
import type { CacheStore } from '../cache/types.ts'
import { canonicalTarget } from '../canonical-url.ts'
import { normaliseHost } from '../config.ts'
import type { Database } from '../manifest/database.ts'
import type { RuleSet } from './match.ts'

export interface ExplainedVariant {
  variant: string
  status: number
  storedAt: number
  staleAt: number
  deleteAt: number
  tags: string[]
  /** Node ids holding it (manifest rows only). */
  nodes?: string[]
}

export interface Explanation {
  url: string
  host: string
  site: string | undefined
  origin: string | undefined
  /** Rules whose request conditions hold, in order. */
  matched: string[]
  /** The rule that decides before the response, if any. */
  rule: string | undefined
  bypass: boolean
  key: string
  keyChanged: boolean
  /** What a 200 answer would get from the rules (the origin's headers decide the rest). */
  onOk: { rule: string | undefined; edgeTtl: { seconds: number; mode: string } | undefined; browserTtl: number | undefined; staleWhileRevalidate: number | undefined; staleIfError: number | undefined; tags: readonly string[] }
  thisNode: ExplainedVariant[]
  manifest: ExplainedVariant[]
  /** The last Cache-Status this node sent for the key, and when (epoch ms). */
  lastCacheStatus: { cacheStatus: string; at: number } | null
}

export class ExplainInputError extends Error {}

export interface ExplainDeps {
  rules: () => RuleSet
  store: Pick<CacheStore, 'variants'>
  readDb: () => Kysely<Database>
  resolveOrigin: (host: string) => URL | undefined
  lastStatus?: (key: string) => { cacheStatus: string; at: number } | undefined
}

export async function explain(deps: ExplainDeps, raw: string): Promise<Explanation> {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    throw new ExplainInputError(`"${raw}" is not an absolute URL; write it as the client asks for it, e.g. https://www.example.com/blog/post?utm_source=x`)
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ExplainInputError('only http and https URLs go through caje')
  const host = normaliseHost(u.host)
  const scheme = u.protocol === 'https:' ? 'https' : 'http'
  const path = canonicalTarget(u.pathname + u.search)
  const rules = deps.rules()
  const m = rules.match({ scheme, host, method: 'GET', path, headers: {} })
  const ok = m.response(200, undefined)
  const thisNode = (await deps.store.variants(m.key)).map((v) => ({ variant: v.variant, status: v.status, storedAt: v.storedAt, staleAt: v.staleAt, deleteAt: v.deleteAt, tags: [...v.tags] }))
  const rows = await deps
    .readDb()
    .selectFrom('entries')
    .leftJoin('entry_nodes', 'entry_nodes.entry_id', 'entries.id')
    .select(['entries.variant', 'entries.status', 'entries.stored_at', 'entries.stale_at', 'entries.delete_at', 'entries.tags', 'entry_nodes.node_id'])
    .where('entries.key', '=', m.key)
    .execute()
  const manifest = new Map<string, ExplainedVariant>()
  for (const r of rows) {
    let v = manifest.get(r.variant)
    if (!v) manifest.set(r.variant, (v = { variant: r.variant, status: r.status, storedAt: r.stored_at, staleAt: r.stale_at, deleteAt: r.delete_at, tags: JSON.parse(r.tags) as string[], nodes: [] }))
    if (r.node_id) v.nodes!.push(r.node_id)
  }
  return {
    url: u.href,
    host,
    site: rules.siteName(host),
    origin: deps.resolveOrigin(host)?.href,
    matched: [...m.matched],
    rule: m.rule,
    bypass: m.bypass,
    key: m.key,
    keyChanged: m.keyChanged,
    onOk: { rule: ok.rule, edgeTtl: ok.store?.ttl, browserTtl: ok.browserTtl, staleWhileRevalidate: ok.store?.staleWhileRevalidate, staleIfError: ok.store?.staleIfError, tags: ok.tags },
    thisNode,
    manifest: [...manifest.values()],
    lastCacheStatus: deps.lastStatus?.(m.key) ?? null,
  }
}
