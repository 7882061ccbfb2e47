// What a rules file costs a memory hit inside the proxy, without sockets: the
// same store answers /1k through three proxies, with no rules, an empty rules
// file and the 50-rule bench file (bench/rules50.ts), each hit followed by what
// the server does after it (its traffic count and the explain page's last-status
// note, the access log line). The three are interleaved in batches of 1,000 hits, their order
// rotating, so the machine's drift hits all alike; each ratio is taken within
// a round, then the median over the rounds. `npm run bench:rules-hit` runs it
// bundled, as caje runs (the TypeScript loader adds a cost per closure).

import { createCacheStore } from '../src/cache/tiered-store.ts'
import { createLogger } from '../src/log.ts'
import { formatCacheStatus } from '../src/proxy/cache-status.ts'
import { createOriginClient } from '../src/proxy/origin.ts'
import { createProxy, type ProxyRequest, type ProxyResult } from '../src/proxy/proxy.ts'
import { parseRulesText } from '../src/rules/load.ts'
import { compileRules, NO_RULES } from '../src/rules/match.ts'
import { startOrigin, tempDir } from '../src/test-support/servers.ts'
import { createTrafficRecorder } from '../src/traffic.ts'
import { rm } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { rules50 } from './rules50.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '400' }, batch: { type: 'string', default: '1000' } } })
const ROUNDS = Number(values.rounds)
const BATCH = Number(values.batch)
const WARMUP_ROUNDS = Math.min(10, Math.floor(ROUNDS / 10))

const origin = await startOrigin((_req, res) => {
  res.writeHead(200, { 'cache-control': 'public, max-age=3600', 'content-type': 'application/octet-stream' })
  res.end(Buffer.alloc(1024, 1))
})
const dir = await tempDir('caje-rules-hit-')
const store = await createCacheStore({ dir, maxBytes: 1e8, memoryBytes: 1e8, maxObjectBytes: 1e7 })
const client = createOriginClient({ connectTimeoutMs: 2000, headersTimeoutMs: 2000, bodyTimeoutMs: 2000 })
const sets = { none: NO_RULES, empty: compileRules(parseRulesText('empty.yml', 'rules: []\n')), rules50: compileRules(parseRulesText('rules50.yml', rules50())) }
type Variant = keyof typeof sets
const names = Object.keys(sets) as Variant[]
let sink = 0
const log = createLogger({ nodeId: 'bench', write: (line) => (sink += line.length) })
const proxies = Object.fromEntries(
  names.map((n) => [
    n,
    createProxy({ store, origin: client, resolveOrigin: () => new URL(origin.url), rules: () => sets[n], maxObjectBytes: 1e7, cacheSetCookie: false, preserveHost: false, trustForwarded: false, log: () => {} }),
  ]),
) as Record<Variant, ReturnType<typeof createProxy>>
const traffic = createTrafficRecorder()
const signal = new AbortController().signal
const request = (): ProxyRequest => ({ method: 'GET', scheme: 'http', host: '127.0.0.1:8080', path: '/1k', headers: { host: '127.0.0.1:8080' }, body: null, clientIp: '127.0.0.1', signal })

// Fill /1k once; every later request is a memory hit answered without a promise.
const first = (await proxies.none.serve(request())) as ProxyResult
if (first.body && !Buffer.isBuffer(first.body)) for await (const _ of first.body);
await store.drain()

function hit(n: Variant): void {
  const req = request()
  const res = proxies[n].serve(req)
  if (res instanceof Promise) throw new Error(`${n}: /1k was not a memory hit`)
  const sent = res.headers['cache-status']
  traffic.record(res, (res.body as Buffer).length, req, undefined, typeof sent === 'string' ? sent : undefined)
  log({ msg: 'request', method: req.method, url: req.path, host: req.host, status: res.status, cache: formatCacheStatus(res.cacheStatus), ms: 0.1, bytes: (res.body as Buffer).length })
}

for (const n of names) console.log(`${n}: ${(proxies[n].serve(request()) as ProxyResult).headers['cache-status']}`)
const times = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<Variant, number[]>
for (let round = 0; round < ROUNDS; round++) {
  for (let i = 0; i < names.length; i++) {
    const n = names[(i + round) % names.length]!
    const t = process.hrtime.bigint()
    for (let j = 0; j < BATCH; j++) hit(n)
    if (round >= WARMUP_ROUNDS) times[n].push(Number(process.hrtime.bigint() - t) / BATCH)
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
for (const n of names) console.log(`${n}: ${median(times[n]).toFixed(0)} ns per hit (median of ${times[n].length} batches of ${BATCH})`)
for (const n of ['empty', 'rules50'] as const) {
  console.log(`${n} ÷ none, time per hit within a round: ${median(times[n].map((t, i) => t / times.none[i]!)).toFixed(3)}`)
}
if (sink === 0) throw new Error('nothing was logged')
await store.close()
await client.close()
await origin.close()
await rm(dir, { recursive: true, force: true })
