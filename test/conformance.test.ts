// HTTP caching conformance through a real caje node: storing by status and
// directive (RFC 9111 §3), reading dates and targeted fields, client
// conditionals (RFC 9110 §13). The rules themselves are unit-tested beside
// src/proxy/policy.ts; here each is checked end to end, as a client sees it.

import { createHash } from 'node:crypto'
import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { startNode, startOrigin, whenReached, type TestNode, type TestOrigin } from '../src/test-support/servers.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** An origin whose answer per path is scripted by the test, in front of a fresh caje node. */
async function setup(routes: Record<string, Route>, env: Record<string, string> = {}): Promise<{ origin: TestOrigin; node: TestNode }> {
  const origin = await startOrigin((req, res) => {
    const route = routes[new URL(req.url ?? '/', 'http://o').pathname]
    if (route) return route(req, res)
    res.writeHead(404, { 'content-length': '0' })
    res.end()
  })
  cleanups.push(() => origin.close())
  const node = await startNode(origin.url, env)
  cleanups.push(() => node.close())
  return { origin, node }
}

const reply =
  (status: number, headers: Record<string, string>, body = `status ${status}`): Route =>
  (_req, res) => {
    if (status === 204) {
      res.writeHead(204, headers)
      res.end()
      return
    }
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), ...headers })
    res.end(body)
  }

/** GET twice (waiting for the first to be stored when it says so); the second's Cache-Status and status. */
async function twice(node: TestNode, path: string, init?: RequestInit): Promise<{ first: Response; second: Response; secondBody: string }> {
  const first = await node.get(path, init)
  await first.arrayBuffer()
  if (first.headers.get('cache-status')?.includes('stored')) await node.stored(path)
  const second = await node.get(path, init)
  return { first, second, secondBody: await second.text() }
}

describe('storing by status (RFC 9111 §3)', () => {
  it('stores and reuses 204, 4xx and 5xx responses with explicit freshness', async () => {
    const { origin, node } = await setup({
      '/empty': reply(204, { 'cache-control': 'max-age=60' }),
      '/gone': reply(404, { 'cache-control': 'max-age=60' }),
      '/teapot': reply(418, { expires: new Date(Date.now() + 60_000).toUTCString() }),
      '/down': reply(503, { 'cache-control': 's-maxage=60' }),
      '/odd': reply(299, { 'cache-control': 'max-age=60' }),
    })
    for (const [path, status] of [['/empty', 204], ['/gone', 404], ['/teapot', 418], ['/down', 503], ['/odd', 299]] as const) {
      const { first, second, secondBody } = await twice(node, path)
      expect(first.headers.get('cache-status'), path).toContain('stored')
      expect(second.status, path).toBe(status)
      expect(second.headers.get('cache-status'), path).toMatch(/^caje; hit/)
      expect(origin.count(path), path).toBe(1)
      if (status === 204) {
        expect(secondBody).toBe('')
        // RFC 9110 §8.6: no Content-Length on a 204.
        expect(second.headers.get('content-length')).toBeNull()
      } else expect(secondBody).toBe(`status ${status}`)
    }
  })

  it('stores a no-store response that also says must-understand, for a status it knows (RFC 9111 §5.2.2.3)', async () => {
    const { origin, node } = await setup({
      '/mu': reply(200, { 'cache-control': 'no-store, must-understand, max-age=60' }),
      '/mu-unknown': reply(299, { 'cache-control': 'no-store, must-understand, max-age=60' }),
    })
    expect((await twice(node, '/mu')).second.headers.get('cache-status')).toMatch(/^caje; hit/)
    const unknown = await twice(node, '/mu-unknown')
    expect(unknown.second.headers.get('cache-status')).toContain('detail=must-understand')
    expect(origin.count('/mu')).toBe(1)
    expect(origin.count('/mu-unknown')).toBe(2)
  })
})

/** GET with raw header values (an array is sent as separate field lines), for what fetch() cannot send. */
function rawGet(url: string, headers: Record<string, string | string[]>): Promise<{ status: number; cacheStatus: string; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, cacheStatus: String(res.headers['cache-status'] ?? ''), body, headers: res.headers }))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

describe('variants (RFC 9111 §4.1)', () => {
  it('equivalent requests share a variant: Accept-Language order, case and spacing; list spacing and repeated lines in any field', async () => {
    const varied = (field: string): Route => (req, res) => {
      const body = `variant for ${String(req.headers[field])}`
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'max-age=60', vary: field })
      res.end(body)
    }
    const { origin, node } = await setup({ '/lang': varied('accept-language'), '/foo': varied('foo') })

    const first = await rawGet(node.url + '/lang', { 'accept-language': 'en, de;q=0.5, fr' })
    expect(first.cacheStatus).toContain('stored')
    await node.stored('/lang')
    for (const same of ['fr,en,de;q=0.5', 'DE;Q=0.5 ,  FR, en']) {
      const r = await rawGet(node.url + '/lang', { 'accept-language': same })
      expect(r.cacheStatus, same).toMatch(/^caje; hit/)
      expect(r.body).toBe('variant for en, de;q=0.5, fr')
    }
    // Another weighting is another variant.
    expect((await rawGet(node.url + '/lang', { 'accept-language': 'de, en;q=0.5, fr' })).cacheStatus).toContain('fwd=vary-miss')

    expect((await rawGet(node.url + '/foo', { foo: '1,2' })).cacheStatus).toContain('stored')
    await node.stored('/foo')
    expect((await rawGet(node.url + '/foo', { foo: ' 1, 2 ' })).cacheStatus).toMatch(/^caje; hit/)
    expect((await rawGet(node.url + '/foo', { foo: ['1', '2'] })).cacheStatus).toMatch(/^caje; hit/)
    expect((await rawGet(node.url + '/foo', { foo: '2,1' })).cacheStatus).toContain('fwd=vary-miss')
    expect(origin.count('/lang')).toBe(2)
    expect(origin.count('/foo')).toBe(2)
  })
})

describe('client conditionals on a hit (RFC 9110 §13.1.3, RFC 9111 §4.3.2)', () => {
  it('evaluates If-Modified-Since against Last-Modified, else Date, in any HTTP-date form', async () => {
    const lastModified = new Date(Date.now() - 3_000_000)
    const date = new Date(Date.now() - 1000)
    const { origin, node } = await setup({
      '/lm': reply(200, { 'cache-control': 'max-age=10000', 'last-modified': lastModified.toUTCString(), date: date.toUTCString() }),
      '/no-lm': reply(200, { 'cache-control': 'max-age=10000', date: date.toUTCString() }),
    })
    await twice(node, '/lm')
    await twice(node, '/no-lm')
    const rfc850 = (d: Date) => {
      const [day, dd, mon, yyyy, time] = d.toUTCString().replace(',', '').split(' ')
      const long = { Sun: 'Sunday', Mon: 'Monday', Tue: 'Tuesday', Wed: 'Wednesday', Thu: 'Thursday', Fri: 'Friday', Sat: 'Saturday' }[day!]
      return `${long}, ${dd}-${mon}-${yyyy!.slice(2)} ${time} GMT`
    }
    // Not fetch(): with a conditional header it adds Cache-Control: no-cache (Fetch's "no-store" mode).
    const ims = async (path: string, value: string) => {
      const r = await rawGet(node.url + path, { 'if-modified-since': value })
      expect(r.cacheStatus, `${path} ${value}`).toMatch(/^caje; hit/)
      return r.status
    }
    expect(await ims('/lm', lastModified.toUTCString())).toBe(304)
    expect(await ims('/lm', rfc850(lastModified))).toBe(304)
    expect(await ims('/lm', new Date(lastModified.getTime() - 1000).toUTCString())).toBe(200)
    // Not an HTTP-date: ignored.
    expect(await ims('/lm', lastModified.toISOString())).toBe(200)
    expect(await ims('/no-lm', date.toUTCString())).toBe(304)
    // The stored copy is newer than the client's: modified since, so sent in full.
    expect(await ims('/no-lm', new Date(date.getTime() - 3_000_000).toUTCString())).toBe(200)
    expect(origin.count('/lm')).toBe(1)
    expect(origin.count('/no-lm')).toBe(1)
  })
})

describe('partial content (RFC 9111 §3.3)', () => {
  const BODY = '0123456789'
  /**
   * An origin that answers ranges of `body`, like a static file server, with a lifetime and
   * these validators. It ignores If-Range, as an origin that does not support it may.
   */
  const rangedWith =
    (validators: () => Record<string, string>, body: () => string = () => BODY): Route =>
    (req, res) => {
      const b = body()
      const m = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''))
      const headers = { 'cache-control': 'max-age=600', 'content-type': 'text/plain', ...validators() }
      if (!m) {
        res.writeHead(200, { ...headers, 'content-length': String(b.length) })
        res.end(b)
        return
      }
      const start = m[1] === '' ? b.length - Number(m[2]) : Number(m[1])
      const end = m[1] === '' || m[2] === '' ? b.length - 1 : Math.min(Number(m[2]), b.length - 1)
      const part = b.slice(start, end + 1)
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${b.length}`, 'content-length': String(part.length) })
      res.end(part)
    }
  const ranged = rangedWith(() => ({ etag: '"ten"' }))
  /** The entries stored for a path of a node. */
  const entries = (node: TestNode, path: string) => node.store.variants(`http://${new URL(node.url).host}${path}`)

  it('stores a 206 as a part, answers ranges inside it, and never takes it for the whole response', async () => {
    const { origin, node } = await setup({ '/file': ranged })
    const first = await rawGet(node.url + '/file', { range: 'bytes=4-8' })
    expect(first.status).toBe(206)
    expect(first.body).toBe('45678')
    expect(first.cacheStatus).toBe('caje; fwd=uri-miss; fwd-status=206; stored')
    expect(origin.requests[0]!.headers.range).toBe('bytes=4-8')
    await node.stored('/file')

    // Ranges inside the part: from cache.
    for (const [range, body, contentRange] of [
      ['bytes=4-8', '45678', 'bytes 4-8/10'],
      ['bytes=5-7', '567', 'bytes 5-7/10'],
      ['bytes=8-8', '8', 'bytes 8-8/10'],
    ] as const) {
      const r = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        http
          .get(node.url + '/file', { headers: { range }, agent: false }, (res) => {
            let b = ''
            res.setEncoding('utf8')
            res.on('data', (c: string) => (b += c))
            res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: b }))
          })
          .on('error', reject)
      })
      expect(r.status, range).toBe(206)
      expect(r.body, range).toBe(body)
      expect(r.headers['content-range'], range).toBe(contentRange)
      expect(r.headers['content-length'], range).toBe(String(body.length))
      expect(String(r.headers['cache-status']), range).toMatch(/^caje; hit/)
    }
    expect(origin.count('/file')).toBe(1)

    // A range reaching past the part goes to the origin (and its 206 extends the part to 4-9).
    const past = await rawGet(node.url + '/file', { range: 'bytes=6-' })
    expect(past.body).toBe('6789')
    expect(past.cacheStatus).toContain('fwd=uri-miss')
    await whenReached(node.store, async () => (await node.store.variants(`http://${new URL(node.url).host}/file`)).some((v) => v.headers['content-range'] === 'bytes 4-9/10'))
    // A whole-response request is never answered from a part: the origin is asked for the rest.
    const whole = await rawGet(node.url + '/file', {})
    expect(whole.status).toBe(200)
    expect(whole.body).toBe(BODY)
    expect(whole.cacheStatus).toBe('caje; fwd=partial; fwd-status=206; stored')
    expect(origin.requests.at(-1)!.headers.range).toBe('bytes=0-3')
    await whenReached(node.store, async () => (await node.store.variants(`http://${new URL(node.url).host}/file`)).some((v) => v.status === 200))
    // Now every range comes from the whole response.
    const fromWhole = await rawGet(node.url + '/file', { range: 'bytes=0-2' })
    expect(fromWhole.body).toBe('012')
    expect(fromWhole.cacheStatus).toMatch(/^caje; hit/)
    expect(origin.count('/file')).toBe(3)
  })

  it('a part stored after the whole response (a slow range fill) does not replace it', async () => {
    let releaseRange!: () => void
    const rangeHeld = new Promise<void>((resolve) => (releaseRange = resolve))
    let rangeArrived!: () => void
    const rangeSeen = new Promise<void>((resolve) => (rangeArrived = resolve))
    const { origin, node } = await setup({
      '/file': (req, res) => {
        if (req.headers.range === undefined) return ranged(req, res)
        rangeArrived()
        void rangeHeld.then(() => ranged(req, res))
      },
    })
    const slowRange = rawGet(node.url + '/file', { range: 'bytes=0-1' })
    await rangeSeen
    const whole = await rawGet(node.url + '/file', {})
    expect(whole.cacheStatus).toContain('stored')
    await node.stored('/file')
    releaseRange()
    expect((await slowRange).body).toBe('01')
    await node.stored('/file', 2)
    const again = await rawGet(node.url + '/file', {})
    expect(again.status).toBe(200)
    expect(again.body).toBe(BODY)
    expect(again.cacheStatus).toMatch(/^caje; hit/)
    expect(origin.count('/file')).toBe(2)
  })

  it('passes a range with If-Range through, and stores a 200 when the origin ignores Range', async () => {
    const { origin, node } = await setup({
      '/file': ranged,
      '/no-ranges': reply(200, { 'cache-control': 'max-age=600' }, BODY),
    })
    const conditional = await rawGet(node.url + '/file', { range: 'bytes=0-1', 'if-range': '"ten"' })
    expect(conditional.status).toBe(206)
    expect(conditional.cacheStatus).not.toContain('stored')
    expect(origin.requests[0]!.headers['if-range']).toBe('"ten"')

    const ignored = await rawGet(node.url + '/no-ranges', { range: 'bytes=0-1' })
    expect(ignored.status).toBe(200)
    expect(ignored.body).toBe(BODY)
    expect(ignored.cacheStatus).toContain('stored')
    await node.stored('/no-ranges')
    expect((await rawGet(node.url + '/no-ranges', {})).cacheStatus).toMatch(/^caje; hit/)
  })

  it('completes a stored part with a request for the rest, and stores the whole response (RFC 9111 §3.3, §3.4)', async () => {
    const { origin, node } = await setup({ '/file': ranged })
    expect((await rawGet(node.url + '/file', { range: 'bytes=0-4' })).body).toBe('01234')
    await node.stored('/file')

    const whole = await rawGet(node.url + '/file', {})
    expect(whole.status).toBe(200)
    expect(whole.body).toBe(BODY)
    expect(whole.headers['content-length']).toBe('10')
    expect(whole.headers['content-range']).toBeUndefined()
    expect(whole.cacheStatus).toBe('caje; fwd=partial; fwd-status=206; stored')
    // Only the missing bytes were asked for, on the condition that they belong to the stored part's representation.
    expect(origin.requests[1]!.headers.range).toBe('bytes=5-')
    expect(origin.requests[1]!.headers['if-range']).toBe('"ten"')

    // One complete entry, written as a new body of its own; the part it replaces is gone.
    await whenReached(node.store, async () => {
      const stored = await entries(node, '/file')
      return stored.length === 1 && stored[0]!.status === 200
    })
    await node.store.drain()
    const [entry] = await entries(node, '/file')
    expect(entry!.size).toBe(10)
    expect(entry!.integrity).toBe(`sha256-${createHash('sha256').update(BODY).digest('base64')}`)
    expect(entry!.headers['content-range']).toBeUndefined()

    // It answers full requests and any range.
    const again = await rawGet(node.url + '/file', {})
    expect([again.status, again.body]).toEqual([200, BODY])
    expect(again.cacheStatus).toMatch(/^caje; hit/)
    const tail = await rawGet(node.url + '/file', { range: 'bytes=7-' })
    expect([tail.status, tail.body, tail.headers['content-range']]).toEqual([206, '789', 'bytes 7-9/10'])
    expect(tail.cacheStatus).toMatch(/^caje; hit/)
    expect(origin.count('/file')).toBe(2)
  })

  it('takes a Last-Modified well before Date as a strong validator for completing a part (RFC 9110 §8.8.2.2)', async () => {
    const LAST_MODIFIED = 'Tue, 01 Dec 2020 08:00:00 GMT'
    const { origin, node } = await setup({ '/file': rangedWith(() => ({ 'last-modified': LAST_MODIFIED })) })
    await rawGet(node.url + '/file', { range: 'bytes=6-' })
    await node.stored('/file')
    const whole = await rawGet(node.url + '/file', {})
    expect([whole.status, whole.body, whole.cacheStatus]).toEqual([200, BODY, 'caje; fwd=partial; fwd-status=206; stored'])
    expect([origin.requests[1]!.headers.range, origin.requests[1]!.headers['if-range']]).toEqual(['bytes=0-5', LAST_MODIFIED])
  })

  it('combines ranges as they arrive into one part, and into the whole response once they add up (RFC 9111 §3.4)', async () => {
    const { origin, node } = await setup({ '/file': ranged })
    expect((await rawGet(node.url + '/file', { range: 'bytes=0-3' })).body).toBe('0123')
    await node.stored('/file')
    // The client gets the origin's own 206; the cache keeps the union of both parts.
    const second = await rawGet(node.url + '/file', { range: 'bytes=4-6' })
    expect([second.status, second.body, second.headers['content-range'], second.headers['content-length']]).toEqual([206, '456', 'bytes 4-6/10', '3'])
    expect(second.cacheStatus).toBe('caje; fwd=uri-miss; fwd-status=206; stored')
    await whenReached(node.store, async () => (await entries(node, '/file')).some((v) => v.headers['content-range'] === 'bytes 0-6/10'))
    // A range across both parts: only the combined part holds it.
    const across = await rawGet(node.url + '/file', { range: 'bytes=2-5' })
    expect([across.status, across.body]).toEqual([206, '2345'])
    expect(across.cacheStatus).toMatch(/^caje; hit/)

    const last = await rawGet(node.url + '/file', { range: 'bytes=7-9' })
    expect([last.status, last.body, last.headers['content-range']]).toEqual([206, '789', 'bytes 7-9/10'])
    await whenReached(node.store, async () => {
      const stored = await entries(node, '/file')
      return stored.length === 1 && stored[0]!.status === 200
    })
    const whole = await rawGet(node.url + '/file', {})
    expect([whole.status, whole.body]).toEqual([200, BODY])
    expect(whole.cacheStatus).toMatch(/^caje; hit/)
    expect(origin.requests.map((r) => r.headers.range)).toEqual(['bytes=0-3', 'bytes=4-6', 'bytes=7-9'])
  })

  it('never combines parts whose strong validators differ, or that have only weak ones or none (RFC 9110 §15.3.7.3)', async () => {
    const NEW_BODY = 'abcdefghij'
    let version = 1
    const changing = rangedWith(
      () => ({ etag: `"v${version}"` }),
      () => (version === 1 ? BODY : NEW_BODY),
    )
    const { origin, node } = await setup({ '/changed': changing, '/changed-range': changing, '/weak': rangedWith(() => ({ etag: 'W/"w"' })), '/none': rangedWith(() => ({})) })
    for (const path of ['/changed', '/changed-range', '/weak', '/none']) {
      expect((await rawGet(node.url + path, { range: 'bytes=0-4' })).body, path).toBe('01234')
      await node.stored(path)
    }
    version = 2

    // The representation changed, and this origin ignores If-Range: its 206 is of the new one.
    // The stored 01234 must not be put in front of it; the whole new response is fetched.
    const changed = await rawGet(node.url + '/changed', {})
    expect([changed.status, changed.body]).toEqual([200, NEW_BODY])
    const asked = origin.requests.filter((r) => r.url === '/changed').map((r) => [r.headers.range, r.headers['if-range']])
    expect(asked).toEqual([['bytes=0-4', undefined], ['bytes=5-', '"v1"'], [undefined, undefined]])
    // The whole new response supersedes the old part.
    await whenReached(node.store, async () => (await entries(node, '/changed')).map((v) => v.status).join() === '200')

    // A range of the new representation replaces the stored part rather than extend it.
    const range = await rawGet(node.url + '/changed-range', { range: 'bytes=5-9' })
    expect([range.status, range.body]).toEqual([206, 'fghij'])
    await whenReached(node.store, async () => (await entries(node, '/changed-range')).some((v) => v.headers['content-range'] === 'bytes 5-9/10'))
    expect((await entries(node, '/changed-range')).map((v) => [v.status, v.headers['content-range']])).toEqual([[206, 'bytes 5-9/10']])
    expect((await rawGet(node.url + '/changed-range', {})).body).toBe(NEW_BODY)

    // Weak or no validators: nothing shows the bytes belong together, so no If-Range either.
    for (const path of ['/weak', '/none']) {
      const whole = await rawGet(node.url + path, {})
      expect([whole.status, whole.body], path).toEqual([200, BODY])
      const seen = origin.requests.filter((r) => r.url === path).map((r) => [r.headers.range, r.headers['if-range']])
      expect(seen, path).toEqual([['bytes=0-4', undefined], ['bytes=5-', undefined], [undefined, undefined]])
    }
  })

  it('asks for the rest of a part without validators, and takes a 200 answer as the whole response', async () => {
    let calls = 0
    const { origin, node } = await setup({
      '/file': (req, res) => {
        calls++
        if (calls === 1) {
          res.writeHead(206, { 'cache-control': 'max-age=3600', 'content-range': 'bytes 0-4/10', 'content-length': '5' })
          res.end('01234')
          return
        }
        res.writeHead(200, { 'cache-control': 'max-age=3600', 'content-length': '10' })
        res.end('whole body')
      },
    })
    await rawGet(node.url + '/file', { range: 'bytes=-5' })
    await node.stored('/file')
    const whole = await rawGet(node.url + '/file', {})
    expect(origin.requests[1]!.headers.range).toBe('bytes=5-')
    expect([whole.status, whole.body]).toEqual([200, 'whole body'])
    expect(whole.cacheStatus).toBe('caje; fwd=partial; fwd-status=200; stored')
    await whenReached(node.store, async () => (await entries(node, '/file')).map((v) => v.status).join() === '200')
    expect((await rawGet(node.url + '/file', {})).cacheStatus).toMatch(/^caje; hit/)
  })

  it('stores nothing from a completion cut short: the part stays and the next request completes it', async () => {
    let cut = true
    const { origin, node } = await setup({
      '/file': (req, res) => {
        if (req.headers.range !== 'bytes=5-' || !cut) return ranged(req, res)
        cut = false
        res.writeHead(206, { 'cache-control': 'max-age=600', etag: '"ten"', 'content-range': 'bytes 5-9/10', 'content-length': '5' })
        res.write('56', () => res.destroy())
      },
    })
    await rawGet(node.url + '/file', { range: 'bytes=0-4' })
    await node.stored('/file')
    await expect(rawGet(node.url + '/file', {})).rejects.toThrow()
    await node.store.drain()
    expect((await entries(node, '/file')).map((v) => [v.status, v.headers['content-range']])).toEqual([[206, 'bytes 0-4/10']])

    const whole = await rawGet(node.url + '/file', {})
    expect([whole.status, whole.body]).toEqual([200, BODY])
    expect(origin.requests.map((r) => r.headers.range)).toEqual(['bytes=0-4', 'bytes=5-', 'bytes=5-'])
  })
})
