// The admin's limits against a client that lies or floods, through real nodes:
// huge bodies posted to the sign-in and registration endpoints of a caje
// process (answered 413 at once, its memory flat), the sign-in rate limit
// with rotating forwarding headers, on Fly and off it, and across a replica
// that relays sign-in to the primary; and what the public health check tells.

import fs from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startCajeProcess } from '../src/test-support/caje-process.ts'
import { startNode, startOrigin, tempDir, waitFor, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'
import { startFakeLitefs } from '../src/test-support/fake-litefs.ts'

const PASSWORD = 'admin-limits-test-password'
const SECRET = 'cluster-secret-for-the-admin-limits-test'
const MB = 1024 * 1024

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f()
})

async function origin(): Promise<TestOrigin> {
  const o = await startOrigin((_req, res) => res.end('origin'))
  cleanups.push(() => o.close())
  return o
}

async function node(originUrl: string, env: Record<string, string> = {}): Promise<TestNode> {
  const n = await startNode(originUrl, { CAJE_ADMIN_PASSWORD: PASSWORD, ...env })
  cleanups.push(() => n.close())
  return n
}

/** caje as its own process, as in production, so its memory is its own. */
async function spawnCaje(originUrl: string): Promise<{ url: string; pid: number }> {
  const dir = await tempDir('caje-admin-limits-')
  const caje = await startCajeProcess({
    CAJE_ORIGIN: originUrl,
    CAJE_CACHE_DIR: path.join(dir, 'cache'),
    CAJE_DATABASE_PATH: path.join(dir, 'manifest.db'),
    CAJE_NODE_ID: 'admin-limits',
    CAJE_ADMIN_PASSWORD: PASSWORD,
  })
  cleanups.push(() => caje.stop(0))
  return { url: caje.url, pid: caje.child.pid! }
}

async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024
}

/**
 * POST `total` bytes to `url`, made as they are sent (never held here), with a
 * Content-Length or chunked. Writing stops when the answer arrives; resolves
 * with the status, the answer's text and how much had been sent by then.
 */
function flood(url: string, total: number, framing: 'content-length' | 'chunked'): Promise<{ status: number; body: string; sentBeforeAnswer: number }> {
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  return new Promise((resolve, reject) => {
    let sent = 0
    let answered = false
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
    if (framing === 'content-length') headers['content-length'] = String(total)
    // A keep-alive agent: `agent: false` sends Connection: close, and a server that closes after
    // its answer resets a client still uploading before the client reads that answer.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const req = http.request(url, { method: 'POST', headers, agent }, (res) => {
      answered = true
      const sentBeforeAnswer = sent
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        req.destroy()
        agent.destroy()
        resolve({ status: res.statusCode!, body, sentBeforeAnswer })
      })
      res.on('error', reject)
    })
    // Once answered, caje may close the connection on the rest of the upload: that is expected.
    req.on('error', (err) => {
      if (!answered) reject(new Error(`${framing} POST ${url}: ${err.message} after ${sent} bytes`))
    })
    const pump = () => {
      while (!answered && sent < total) {
        const n = Math.min(chunk.length, total - sent)
        sent += n
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump)
      }
      if (!answered) req.end()
    }
    pump()
  })
}

/**
 * Start a POST and send only part of its body, never ending it: resolves with the answer,
 * which caje can only give without waiting for the rest.
 */
function partialPost(url: string, framing: 'content-length' | 'chunked', declared: number, send: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
    if (framing === 'content-length') headers['content-length'] = String(declared)
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const req = http.request(url, { method: 'POST', headers, agent }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        req.destroy()
        agent.destroy()
        resolve({ status: res.statusCode!, body })
      })
    })
    req.on('error', reject)
    req.flushHeaders()
    if (send > 0) req.write(Buffer.alloc(send, 0x61))
  })
}

describe('huge bodies to the admin', () => {
  it('are answered without waiting for the body: from the declared length, or once a chunked body passes 64 KiB', async () => {
    const n = await node((await origin()).url)
    for (const r of ['/_caje/register/options', '/_caje/register/verify', '/_caje/auth/password', '/_caje/auth/verify', '/_caje/purge']) {
      const declared = await partialPost(n.url + r, 'content-length', 100 * MB, 0)
      expect(declared.status, `content-length POST ${r}`).toBe(413)
      expect(JSON.parse(declared.body).error).toMatch(/too large: caje's admin routes accept at most 64 KiB/)
      const chunked = await partialPost(n.url + r, 'chunked', 0, 65 * 1024)
      expect(chunked.status, `chunked POST ${r}`).toBe(r === '/_caje/purge' ? 401 : 413)
    }
  })

  it('are refused on every POST route the router has under /_caje/, from the declared length alone', async () => {
    const n = await node((await origin()).url)
    // Taken from the router, so a route added later is covered the day it is added.
    const posts = [...new Set(n.app.routes.filter((r) => r.method === 'POST' && r.path.startsWith('/_caje/')).map((r) => r.path.replace(/:[^/]+/g, 'x').replace(/\*/g, 'x')))]
    expect(posts.length).toBeGreaterThan(20)
    for (const r of posts) {
      const res = await partialPost(n.url + r, 'content-length', 100 * MB, 0)
      // The nodes' internal routes check the cluster secret first (none is set here).
      expect(res.status, `POST ${r}`).toBe(r.startsWith('/_caje/internal/') ? 503 : 413)
    }
  })

  it('are answered 413 before they are sent, and caje’s memory does not grow with them', async () => {
    const o = await origin()
    const caje = await spawnCaje(o.url)
    const routes = ['/_caje/register/options', '/_caje/register/verify', '/_caje/auth/password', '/_caje/auth/verify', '/_caje/purge']
    // Warm up every route and refusal once (code loaded and compiled) with 1 MB bodies before the baseline.
    for (const r of routes) for (const framing of ['content-length', 'chunked'] as const) await flood(caje.url + r, MB, framing)
    const before = await rssBytes(caje.pid)
    let peak = before
    const sampler = setInterval(() => void rssBytes(caje.pid).then((v) => (peak = Math.max(peak, v)), () => {}), 20)
    cleanups.push(() => clearInterval(sampler))

    const total = 100 * MB
    for (const r of routes) {
      for (const framing of ['content-length', 'chunked'] as const) {
        const res = await flood(caje.url + r, total, framing)
        const what = `${framing} POST ${r}`
        // /_caje/purge checks the caller before the body: an anonymous chunked post is a 401, unread.
        if (r === '/_caje/purge' && framing === 'chunked') expect(res.status, what).toBe(401)
        else {
          expect(res.status, what).toBe(413)
          expect(JSON.parse(res.body).error, what).toMatch(/too large: caje's admin routes accept at most 64 KiB/)
        }
        // Answered while the upload was still going (how far it got depends on socket buffers and scheduling).
        expect(res.sentBeforeAnswer, what).toBeLessThan(total / 2)
      }
    }
    peak = Math.max(peak, await rssBytes(caje.pid))
    clearInterval(sampler)
    // Ten 100 MB bodies; buffering even one would add 100 MB. What grows is the drained, discarded
    // part of each upload awaiting garbage collection: measured 20-30 MB, flat after a dozen posts.
    expect(peak - before).toBeLessThan(60 * MB)
    expect((await fetch(caje.url + '/_caje/health')).status).toBe(200)
    console.log(`RSS before ${(before / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB over ten 100 MB posts`)
  }, 120_000)
})

/** A wrong password from `localAddress` (any 127.x address is this host), with extra headers. */
function wrongPassword(url: string, headers: Record<string, string> = {}, localAddress = '127.0.0.1'): Promise<number> {
  const body = JSON.stringify({ password: 'not the password at all' })
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/_caje/auth/password`,
      { method: 'POST', localAddress, agent: false, headers: { 'content-type': 'application/json', accept: 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode!))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

async function statuses(n: number, attempt: (i: number) => Promise<number>): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(await attempt(i))
  return out
}

/** The default budget is 20 attempts per client per 5 minutes. */
const limitedAfter20 = (s: number[]) => {
  expect(s.slice(0, 20).every((x) => x === 401), s.join(' ')).toBe(true)
  expect(s.slice(20).every((x) => x === 429), s.join(' ')).toBe(true)
}

const API_TOKEN = 'api-token-for-the-admin-limits-test-0123'

/** A primary and a replica sharing one manifest file, the local model of LiteFS (see test/cluster.test.ts). */
async function startCluster(): Promise<{ primary: TestNode; replica: TestNode; databasePath: string }> {
  const o = (await origin()).url
  const root = await tempDir('caje-admin-limits-cluster-')
  const databasePath = path.join(root, 'manifest.db')
  await fs.mkdir(path.join(root, 'litefs-primary'))
  await fs.mkdir(path.join(root, 'litefs-replica'))
  // The role comes from LiteFS's HTTP API: a fake of it says who is primary.
  const primaryApi = await startFakeLitefs({ isPrimary: true })
  const replicaApi = await startFakeLitefs({ isPrimary: false, hostname: '127.0.0.1' })
  cleanups.push(() => primaryApi.close(), () => replicaApi.close())
  const cluster = { CAJE_DATABASE_PATH: databasePath, CAJE_CLUSTER_SECRET: SECRET, CAJE_API_TOKEN: API_TOKEN }
  const primary = await node(o, { ...cluster, CAJE_NODE_ID: 'primary', CAJE_LITEFS_DIR: path.join(root, 'litefs-primary'), CAJE_LITEFS_API: primaryApi.url, CAJE_CACHE_DIR: path.join(root, 'c1') })
  const replica = await node(o, {
    ...cluster,
    CAJE_NODE_ID: 'replica',
    CAJE_LITEFS_DIR: path.join(root, 'litefs-replica'),
    CAJE_LITEFS_API: replicaApi.url,
    CAJE_CACHE_DIR: path.join(root, 'c2'),
    CAJE_PRIMARY_URL_TEMPLATE: `http://{host}:${primary.port}`,
  })
  expect(replica.manifest.role.current().kind).toBe('replica')
  return { primary, replica, databasePath }
}

describe('the sign-in rate limit', () => {
  it('behind a trusted proxy, counts the address the proxy added, whatever the client puts before it', async () => {
    const n = await node((await origin()).url, { CAJE_TRUST_FORWARDED: 'true' })
    const s = await statuses(30, (i) => wrongPassword(n.url, { 'x-forwarded-for': `192.0.2.${i}, 198.51.100.7`, 'fly-client-ip': `203.0.113.${i}` }))
    limitedAfter20(s)
    // Another client behind the same proxy has its own budget.
    expect(await wrongPassword(n.url, { 'x-forwarded-for': `192.0.2.1, 198.51.100.8` })).toBe(401)
  })

  it('ignores forwarding headers it does not trust', async () => {
    const n = await node((await origin()).url)
    limitedAfter20(await statuses(30, (i) => wrongPassword(n.url, { 'x-forwarded-for': `192.0.2.${i}`, 'fly-client-ip': `203.0.113.${i}` })))
  })

  it('believes Fly-Client-IP only when running on Fly', async () => {
    const o = (await origin()).url
    const offFly = await node(o, { CAJE_TRUST_FORWARDED: 'true' })
    // Off Fly the header is the client's own: rotating it changes nothing (the proxy added 198.51.100.9).
    limitedAfter20(await statuses(30, (i) => wrongPassword(offFly.url, { 'fly-client-ip': `203.0.113.${i}`, 'x-forwarded-for': '198.51.100.9' })))
    // On Fly, Fly's proxy sets it (overwriting whatever the client sent): one budget per value.
    const onFly = await node(o, { CAJE_TRUST_FORWARDED: 'true', FLY_APP_NAME: 'caje-test' })
    limitedAfter20(await statuses(30, (i) => wrongPassword(onFly.url, { 'fly-client-ip': '203.0.113.50', 'x-forwarded-for': `192.0.2.${i}` })))
    expect(await wrongPassword(onFly.url, { 'fly-client-ip': '203.0.113.51' })).toBe(401)
  })

  it('counts per client, not per replica, when a replica relays sign-in to the primary', async () => {
    const { primary, replica } = await startCluster()
    // Client A (127.0.0.2) uses up its budget through the replica; the primary refuses it...
    limitedAfter20(await statuses(30, () => wrongPassword(replica.url, {}, '127.0.0.2')))
    // ...but not client B (127.0.0.3) behind the same replica.
    expect(await wrongPassword(replica.url, {}, '127.0.0.3')).toBe(401)
    // Client C names other addresses in the relay headers itself: the replica replaces them with its own, signed.
    const forged = (i: number) => ({ 'x-caje-client-address': `192.0.2.${i}`, 'x-caje-client-address-signature': 'forged' })
    limitedAfter20(await statuses(30, (i) => wrongPassword(replica.url, forged(i), '127.0.0.4')))
    // Sent straight to the primary, unsigned relay headers are ignored as well.
    limitedAfter20(await statuses(30, (i) => wrongPassword(primary.url, forged(i), '127.0.0.5')))
    // The replica caps what it relays like any admin route.
    expect((await partialPost(replica.url + '/_caje/register/options', 'content-length', 100 * MB, 0)).status).toBe(413)
    expect((await partialPost(replica.url + '/_caje/register/options', 'chunked', 0, 65 * 1024)).status).toBe(413)
  })
})

describe('/_caje/health', () => {
  it('shows status, node, region, role and counts; where the manifest lives is for signed-in admins', async () => {
    const { primary, replica, databasePath } = await startCluster()
    const primaryUrl = `http://127.0.0.1:${primary.port}`
    for (const [n, role] of [[primary, 'primary'], [replica, 'replica']] as const) {
      const text = await (await n.get('/_caje/health')).text()
      const health = JSON.parse(text) as Record<string, unknown>
      expect(Object.keys(health).sort()).toEqual(['cache', 'eventLoop', 'fills', 'manifestWriter', 'node', 'populate', 'region', 'role', 'status', 'uptimeSeconds'])
      expect(health).toMatchObject({ status: 'ok', node: role, role })
      for (const part of ['cache', 'manifestWriter', 'eventLoop', 'fills'] as const) {
        for (const [k, v] of Object.entries(health[part] as object)) expect(typeof v, `${part}.${k}`).toBe('number')
      }
      expect(text).not.toContain(databasePath)
      expect(text).not.toContain(path.basename(databasePath))
      expect(text).not.toContain(primaryUrl)
      expect(text).not.toContain(`:${primary.port}`)
    }
    // The signed-in status shows them.
    const status = async (n: TestNode) =>
      ((await (await n.get('/_caje/status', { headers: { authorization: `Bearer ${API_TOKEN}`, accept: 'application/json' } })).json()) as { status: { manifest: { mode: string; target: string } } }).status.manifest
    expect(await status(primary)).toMatchObject({ mode: 'direct', target: databasePath })
    expect((await status(replica)).mode).toBe('remote')
    expect((await status(replica)).target).toContain(primaryUrl)
    expect((await (await replica.get('/_caje/status')).text())).not.toContain(primaryUrl)
  })
})
