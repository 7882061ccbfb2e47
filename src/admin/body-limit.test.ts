import { afterEach, describe, expect, it } from 'vitest'
import { ADMIN_BODY_LIMIT_BYTES } from './body-limit.ts'
import * as repo from './repo.ts'
import { API_TOKEN, PASSWORD, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness
afterEach(async () => {
  await h?.close()
})

const MB = 1024 * 1024
const CHUNK = 16 * 1024

/** A body of `total` bytes made as it is read, counting what was read: nothing is held in the test's memory. */
function lazyBody(total: number, fill = 0x61) {
  const chunk = new Uint8Array(CHUNK).fill(fill)
  const counter = { pulled: 0 }
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (counter.pulled >= total) return controller.close()
      const n = Math.min(CHUNK, total - counter.pulled)
      counter.pulled += n
      controller.enqueue(n === CHUNK ? chunk : chunk.subarray(0, n))
    },
  })
  return { stream, counter }
}

function post(path: string, body: ReadableStream<Uint8Array> | string, headers: Record<string, string> = {}): Promise<Response> {
  return Promise.resolve(h.app.request(path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers }, duplex: 'half' } as RequestInit))
}

const UNAUTHENTICATED = ['/_caje/register/options', '/_caje/register/verify', '/_caje/auth/password', '/_caje/auth/verify', '/_caje/auth/options']

describe('request bodies on admin routes', () => {
  it('are refused with 413 from the declared length alone, before a byte is read', async () => {
    h = await setup()
    for (const path of [...UNAUTHENTICATED, '/_caje/purge', '/_caje/logout']) {
      const { stream, counter } = lazyBody(100 * MB)
      const res = await post(path, stream, { 'content-length': String(100 * MB), accept: 'application/json' })
      expect(res.status, path).toBe(413)
      expect(((await res.json()) as { error: string }).error).toMatch(/too large.*64 KiB/)
      expect(counter.pulled, path).toBeLessThanOrEqual(CHUNK) // the stream's first pull at most, never read
    }
  })

  it('stop a chunked body as soon as it passes the cap', async () => {
    h = await setup()
    for (const path of ['/_caje/register/options', '/_caje/register/verify', '/_caje/auth/password', '/_caje/auth/verify']) {
      const { stream, counter } = lazyBody(100 * MB)
      const res = await post(path, stream, { 'x-test-ip': `198.51.100.${UNAUTHENTICATED.indexOf(path)}` })
      expect(res.status, path).toBe(413)
      expect(await res.text()).toMatch(/at most 64 KiB/)
      expect(counter.pulled, path).toBeLessThanOrEqual(ADMIN_BODY_LIMIT_BYTES + 2 * CHUNK)
    }
    // A signed-in admin's oversized action gets the same answer.
    const { stream, counter } = lazyBody(10 * MB)
    const res = await post('/_caje/purge', stream, { authorization: `Bearer ${API_TOKEN}` })
    expect(res.status).toBe(413)
    expect(counter.pulled).toBeLessThanOrEqual(ADMIN_BODY_LIMIT_BYTES + 2 * CHUNK)
  })

  it('accept a body within the cap, chunked or not', async () => {
    h = await setup()
    const json = JSON.stringify({ password: PASSWORD, name: 'Ada', padding: 'x'.repeat(ADMIN_BODY_LIMIT_BYTES - 200) })
    const bytes = new TextEncoder().encode(json)
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 1000) controller.enqueue(bytes.subarray(at, at + 1000))
        controller.close()
      },
    })
    expect((await post('/_caje/auth/password', chunked, { accept: 'application/json' })).status).toBe(200)
    expect((await post('/_caje/auth/password', json, { accept: 'application/json' })).status).toBe(200)
    expect((await repo.listAdmins(h.deps.db)).map((a) => a.name)).toEqual(['Ada'])
  })

  it('are not read at all once an anonymous client is rate limited', async () => {
    h = await setup({ deps: { loginRateLimit: { max: 2, windowMs: 60_000 } } })
    for (let i = 0; i < 2; i++) expect((await post('/_caje/register/options', '{}', { accept: 'application/json' })).status).toBe(401)
    for (const path of ['/_caje/register/options', '/_caje/register/verify', '/_caje/auth/password', '/_caje/auth/verify']) {
      const { stream, counter } = lazyBody(MB)
      const res = await post(path, stream, { accept: 'application/json' })
      expect(res.status, path).toBe(429)
      expect(counter.pulled, path).toBeLessThanOrEqual(CHUNK) // the stream's first pull at most, never read
    }
  })
})
