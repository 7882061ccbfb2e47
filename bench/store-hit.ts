// npx tsx bench/store-hit.ts [-- options]: what the cache store costs a memory-tier
// hit, in process, without HTTP around it: the calls the proxy makes for a hit
// (varyOf, variant, read), per hit. Uses only the public CacheStore API, so the
// same script measures any version of the store side by side.
//
//   one   every hit on one key (the 1 KiB memory-hit scenario of bench/run.ts)
//   many  hits spread round-robin over --keys keys

import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { createCacheStore } from '../src/cache/tiered-store.ts'
import type { CacheStore } from '../src/cache/types.ts'
import { realisticEntry } from './realistic-entry.ts'

function hits(store: CacheStore, keys: { key: string; variant: string }[], n: number): number {
  const started = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    const { key, variant } = keys[i % keys.length]!
    const varies = store.varyOf(key)
    if (varies.length === 0) throw new Error(`no variants of ${key}`)
    const meta = store.variant(key, variant)
    if (!meta) throw new Error(`${key} not found`)
    const body = store.read(meta.key, meta.variant)
    if (!body || body instanceof Promise || body.tier !== 'memory') throw new Error(`${key} not a memory hit`)
  }
  return Number(process.hrtime.bigint() - started) / n
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { keys: { type: 'string' }, hits: { type: 'string' }, rounds: { type: 'string' } } })
  const keyCount = Number(values.keys ?? 1000)
  const n = Number(values.hits ?? 1_000_000)
  const rounds = Number(values.rounds ?? 7)
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'caje-store-hit-'))
  const store = await createCacheStore({ dir, maxBytes: 1 << 30, memoryBytes: 256 << 20, maxObjectBytes: 1 << 20 })
  try {
    const now = Date.now()
    const keys: { key: string; variant: string }[] = []
    for (let i = 0; i < keyCount; i++) {
      const entry = { ...realisticEntry(i, now), variant: '', varyHeaders: {} }
      delete (entry.headers as Record<string, string>).vary
      await store.put(entry, Buffer.alloc(1024, i % 256))
      keys.push({ key: entry.key, variant: '' })
    }
    await store.drain()
    const one: number[] = []
    const many: number[] = []
    for (let r = 0; r < rounds; r++) {
      one.push(hits(store, keys.slice(0, 1), n))
      many.push(hits(store, keys, n))
    }
    console.log(JSON.stringify({ keys: keyCount, hitsPerRound: n, rounds, oneKeyNsPerHit: Math.round(median(one)), manyKeysNsPerHit: Math.round(median(many)) }))
  } finally {
    await store.close()
    await fs.rm(dir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
