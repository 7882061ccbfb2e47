import { createCacheStore } from '../src/cache/tiered-store.ts'
import { newEntry, put, bodyOf } from '../src/cache/test-support.ts'
import fs from 'node:fs/promises'
const dir = await fs.mkdtemp('/tmp/bench100k/x')
const store = await createCacheStore({ dir, maxBytes: 1e10, memoryBytes: 0, maxObjectBytes: 1e7 })
const body = bodyOf(100)
const t0 = Date.now()
const N = Number(process.argv[2] ?? 5000)
let next = 0
await Promise.all(Array.from({ length: 32 }, async () => { while (next < N) { const i = next++; await put(store, newEntry(`https://www.example.com/p/${i}`), body) } }))
console.log('put', N, Date.now() - t0, 'ms')
await store.close()
const t1 = Date.now()
const s2 = await createCacheStore({ dir, maxBytes: 1e10, memoryBytes: 0, maxObjectBytes: 1e7 })
console.log('reopen', Date.now() - t1, 'ms', s2.stats().entries)
await s2.close()
await fs.rm(dir, { recursive: true })
