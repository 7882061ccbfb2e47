// An AdminActions over plain arrays, for the admin's own tests and the e2e
// spec where the real cache is not the subject (the main program wires the
// real stores). Behaves like the real thing in shape: filter, offset/limit,
// purge by URL/prefix/tag/all, an asynchronous populate with progress.

import type { AdminActions, DiskEntry, ListQuery, ListResult, ManifestEntry, NodeStatus, PopulateStatus, PathMisses, PurgeRecord, PurgeRequest, TrafficMinute } from './actions.ts'

export interface MemoryActionsOptions {
  nodeId: string
  region: string
  role?: 'primary' | 'replica' | 'direct'
  /** Traffic per node per minute; default: a plausible day for this node and node-b. */
  traffic?: TrafficMinute[]
  /** Last heartbeat per node id (epoch ms); nodes named in the manifest default to now. */
  heartbeats?: Record<string, number>
  disk?: DiskEntry[]
  manifest?: ManifestEntry[]
  /** Cache tags per URL, for purge by tag. */
  tags?: Record<string, string[]>
  hitRatio?: number | null
  now?: () => number
  /** Milliseconds populate takes per entry (0: finishes on the next tick). */
  populateDelayMs?: number
}

export interface MemoryActions extends AdminActions {
  readonly disk: DiskEntry[]
  readonly manifest: ManifestEntry[]
  /** Every call, in order, for assertions. */
  readonly calls: string[]
  /** Resolves when the running populate (if any) has finished. */
  populateIdle(): Promise<void>
  /** Record a node's heartbeat at `at` (epoch ms). */
  heartbeat(nodeId: string, at: number): void
}

function page<T>(items: T[], q: ListQuery, text: (t: T) => string): ListResult<T> {
  const f = q.filter.toLowerCase()
  const matching = f ? items.filter((i) => text(i).toLowerCase().includes(f)) : items
  return { total: matching.length, entries: matching.slice(q.offset, q.offset + q.limit) }
}

export function createMemoryActions(opts: MemoryActionsOptions): MemoryActions {
  const now = opts.now ?? Date.now
  const disk = [...(opts.disk ?? [])]
  const manifest = [...(opts.manifest ?? [])]
  const tags = opts.tags ?? {}
  const calls: string[] = []
  const heartbeats = { ...(opts.heartbeats ?? {}) }
  const purges: Array<Omit<PurgeRecord, 'appliedOn' | 'pendingOn'>> = []
  const traffic = opts.traffic ?? sampleTraffic({ nodes: [opts.nodeId, 'node-b'], now: now() })
  let populate: PopulateStatus | undefined
  let running: Promise<void> = Promise.resolve()

  const matches = (url: string, r: PurgeRequest): boolean => {
    switch (r.kind) {
      case 'all':
        return true
      case 'url':
        return url === r.value
      case 'prefix':
        return url.startsWith(r.value)
      case 'tag':
        return (tags[url] ?? []).includes(r.value)
    }
  }

  const removeWhere = <T>(arr: T[], pred: (t: T) => boolean): number => {
    let removed = 0
    for (let i = arr.length - 1; i >= 0; i--) {
      if (pred(arr[i]!)) {
        arr.splice(i, 1)
        removed++
      }
    }
    return removed
  }

  async function runPopulate(status: PopulateStatus) {
    for (const m of manifest.filter((e) => status.key === null || e.key === status.key)) {
      if (opts.populateDelayMs) await new Promise((r) => setTimeout(r, opts.populateDelayMs))
      else await Promise.resolve()
      if (disk.some((d) => d.key === m.key)) {
        status.skipped++
        continue
      }
      if (m.staleAt <= now()) {
        status.skipped++
        continue
      }
      disk.push({
        key: m.key,
        variant: '',
        url: m.url,
        status: m.status,
        size: m.size,
        contentType: 'text/html; charset=utf-8',
        storedAt: now(),
        staleAt: m.staleAt,
        inMemory: false,
        via: m.nodes.some((n) => n !== opts.nodeId) ? { kind: 'peer', node: m.nodes.find((n) => n !== opts.nodeId)! } : { kind: 'populate' },
      })
      if (m.nodes.some((n) => n !== opts.nodeId)) status.fromPeers++
      else status.fromOrigin++
      if (!m.nodes.includes(opts.nodeId)) m.nodes.push(opts.nodeId)
      status.done++
      status.bytes += m.size
    }
    status.running = false
    status.finishedAt = now()
  }

  return {
    disk,
    manifest,
    calls,
    async listDisk(q) {
      calls.push('listDisk')
      return page(disk, q, (e) => `${e.url} ${e.key}`)
    },
    async listManifest(q) {
      calls.push('listManifest')
      return page(manifest, q, (e) => `${e.url} ${e.key}`)
    },
    async listNodes() {
      calls.push('listNodes')
      const ids = new Set([opts.nodeId, ...manifest.flatMap((m) => m.nodes), ...Object.keys(heartbeats)])
      return [...ids]
        .map((id) => {
          const lastSeenAt = heartbeats[id] ?? now()
          return {
            id,
            region: id === opts.nodeId ? opts.region : 'fra',
            startedAt: lastSeenAt - 3_600_000,
            lastSeenAt,
            online: id === opts.nodeId || now() - lastSeenAt <= 60_000,
            self: id === opts.nodeId,
            holds: manifest.filter((m) => m.nodes.includes(id)).length,
          }
        })
        .sort((a, b) => Number(b.self) - Number(a.self) || a.id.localeCompare(b.id))
    },
    async forgetNode(id) {
      calls.push(`forgetNode:${id}`)
      if (id === opts.nodeId) return { forgotten: false, reason: 'self' }
      const known = manifest.some((m) => m.nodes.includes(id)) || id in heartbeats
      if (!known) return { forgotten: false, reason: 'unknown' }
      if (now() - (heartbeats[id] ?? now()) <= 60_000) return { forgotten: false, reason: 'online' }
      let dropped = 0
      for (const m of manifest) {
        const i = m.nodes.indexOf(id)
        if (i >= 0) {
          m.nodes.splice(i, 1)
          dropped++
        }
      }
      removeWhere(manifest, (m) => m.nodes.length === 0)
      delete heartbeats[id]
      return { forgotten: true, dropped }
    },
    async clearFs() {
      calls.push('clearFs')
      return disk.splice(0, disk.length).length
    },
    async clearDb() {
      calls.push('clearDb')
      return manifest.splice(0, manifest.length).length
    },
    async populate(options = {}) {
      calls.push(options.key === undefined ? 'populate' : `populate:${options.key}`)
      if (populate?.running) return { started: false }
      const status: PopulateStatus = { running: true, key: options.key ?? null, done: 0, fromPeers: 0, fromOrigin: 0, skipped: 0, failed: 0, bytes: 0, startedAt: now(), finishedAt: null }
      populate = status
      running = runPopulate(status)
      return { started: true }
    },
    populateStatus() {
      return populate ? { ...populate } : undefined
    },
    topMisses(_since, limit, by) {
      const rows: PathMisses[] = [
        { path: 'www.example.com/api/cart', misses: 420, originBytes: 1_300_000, reasons: { private: 420 } },
        { path: 'www.example.com/search?q=shoes', misses: 160, originBytes: 5_100_000, reasons: { 'no-store': 160 } },
        { path: 'www.example.com/video/intro.mp4', misses: 12, originBytes: 480_000_000, reasons: { 'too-large': 12 } },
        { path: 'www.example.com/', misses: 30, originBytes: 900_000, reasons: { 'set-cookie': 18, 'not yet cached': 12 } },
      ]
      return rows.sort((a, b) => (by === 'misses' ? b.misses - a.misses : b.originBytes - a.originBytes)).slice(0, limit)
    },
    async traffic(since) {
      return traffic.filter((m) => m.minute >= since)
    },
    async purgePreview(r) {
      const hit = manifest.filter((e) => matches(e.url, r))
      return { entries: hit.reduce((n, e) => n + e.variants, 0), bytes: hit.reduce((n, e) => n + e.size, 0), nodes: [...new Set(hit.flatMap((e) => e.nodes))].sort() }
    },
    async purgeHistory(limit) {
      // This node applies a purge at once; the others are shown as still to apply it.
      const others = [...new Set(manifest.flatMap((m) => m.nodes))].filter((n) => n !== opts.nodeId).sort()
      return purges
        .slice(-limit)
        .reverse()
        .map((p) => ({ ...p, appliedOn: [opts.nodeId], pendingOn: others }))
    },
    async purge(r, by) {
      purges.push({ id: purges.length + 1, request: r, createdAt: now(), createdBy: by ?? opts.nodeId, nodeId: opts.nodeId })
      calls.push(`purge:${r.kind}${r.kind === 'all' ? '' : `:${r.value}`}`)
      const removed = removeWhere(disk, (e) => matches(e.url, r))
      removeWhere(manifest, (e) => matches(e.url, r))
      return { removed }
    },
    status(): NodeStatus {
      return {
        nodeId: opts.nodeId,
        region: opts.region,
        role: opts.role ?? 'primary',
        hitRatio: opts.hitRatio ?? null,
        cacheBytes: disk.reduce((n, e) => n + e.size, 0),
        entries: disk.length,
      }
    },
    populateIdle() {
      return running
    },
    heartbeat(nodeId, at) {
      heartbeats[nodeId] = at
    },
  }
}

/** A day of plausible traffic per node, one row per minute, deterministic. */
export function sampleTraffic(opts: { nodes: string[]; now: number }): TrafficMinute[] {
  const out: TrafficMinute[] = []
  const last = Math.floor(opts.now / 60_000) * 60_000
  for (let i = 1440; i >= 1; i--) {
    const minute = last - i * 60_000
    opts.nodes.forEach((nodeId, n) => {
      const requests = 200 + ((i * 37 + n * 101) % 150) + Math.round(80 * Math.sin(i / 90))
      const hits = Math.round(requests * (0.75 + 0.15 * Math.sin((i + n * 30) / 120)))
      out.push({ nodeId, minute, requests, hits, misses: requests - hits, bytesCache: hits * 24_000, bytesOrigin: (requests - hits) * 30_000 })
    })
  }
  return out
}

/** A plausible cache for demos and screenshots: `n` pages on one site. */
export function sampleEntries(opts: { n: number; nodeId: string; peers?: string[]; now: number; site?: string }): {
  disk: DiskEntry[]
  manifest: ManifestEntry[]
  tags: Record<string, string[]>
} {
  const site = opts.site ?? 'https://www.example.com'
  const kinds = [
    { path: '/blog/post-', type: 'text/html; charset=utf-8', size: 18_000 },
    { path: '/assets/app-', type: 'application/javascript', size: 145_000, ext: '.js' },
    { path: '/images/photo-', type: 'image/webp', size: 92_000, ext: '.webp' },
    { path: '/api/products/', type: 'application/json', size: 3_200 },
    { path: '/docs/page-', type: 'text/html; charset=utf-8', size: 26_000 },
  ]
  const disk: DiskEntry[] = []
  const manifest: ManifestEntry[] = []
  const tags: Record<string, string[]> = {}
  for (let i = 0; i < opts.n; i++) {
    const k = kinds[i % kinds.length]!
    const url = `${site}${k.path}${i + 1}${k.ext ?? ''}`
    const key = `GET ${url}`
    const storedAt = opts.now - (i * 37_000) % 86_400_000
    const staleAt = storedAt + [300_000, 3_600_000, 86_400_000, 60_000][i % 4]!
    const size = k.size + ((i * 7919) % 5000)
    const status = i % 23 === 22 ? 404 : i % 17 === 16 ? 301 : 200
    const vary = k.type.startsWith('text/') || k.type.includes('javascript')
    tags[url] = [k.path.split('/')[1]!, `item-${i + 1}`]
    const onThisNode = i % 6 !== 5
    if (onThisNode) {
      disk.push({
        key,
        variant: vary ? 'accept-encoding=br' : '',
        url,
        status,
        size,
        contentType: k.type,
        storedAt,
        staleAt,
        inMemory: i % 3 === 0,
        via: { kind: 'request' },
      })
    }
    const nodes = [...(onThisNode ? [opts.nodeId] : []), ...(opts.peers ?? []).filter((_, j) => (i + j) % 2 === 0)]
    manifest.push({ key, url, variants: vary ? 2 : 1, status, size, storedAt, staleAt, nodes: nodes.length ? nodes : [opts.peers?.[0] ?? 'peer'] })
  }
  return { disk, manifest, tags }
}
