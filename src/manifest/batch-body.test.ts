import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { getRequestListener } from '@hono/node-server'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { PIECE_CHARS, batchPieces, parseBody, readBodyChunks } from './batch-body.ts'
import { INTERNAL_BASE_PATH, createInternalApp } from './internal-routes.ts'
import type { ManifestOp } from './ops.ts'
import { batchBody } from './writer.ts'
import { countEntries } from './repositories.ts'
import { captureLog, chunked, entry, freshManifestPerTest } from './test-helpers.ts'

const storedOps = (n: number, url = (i: number) => `https://ex.com/p/${i}`): ManifestOp[] =>
  Array.from({ length: n }, (_, i) => ({ type: 'stored', nodeId: `n${i % 3}`, entry: entry({ url: url(i), storedAt: 1000 + i }) }))

describe('parsing a batch body', () => {
  it('parses a large batch piece by piece, as JSON.parse parses it whole, wherever the chunks end', () => {
    // Multi-byte characters (split across chunks by the odd sizes), quotes and escaped look-alikes of an op's start.
    const ops = storedOps(2000, (i) => `https://ex.com/ü€/${i}/"${i % 7 === 0 ? ',{"type":' : '😀'}"`)
    const text = JSON.stringify({ ops })
    expect(text.length).toBeGreaterThan(10 * PIECE_CHARS)
    for (const sizes of [[65536], [7, 1000, 3], [text.length * 4]]) {
      const chunks = chunked(Buffer.from(text), sizes)
      expect(parseBody(chunks)).toEqual(JSON.parse(text))
      const split = batchPieces(chunks)!
      expect(split.pieces.length).toBeGreaterThan(5)
      // No piece near the 128 KiB that puts a string in V8's large-object space.
      expect(Math.max(...split.pieces.map((p) => p.length))).toBeLessThan(4 * PIECE_CHARS)
    }
  })

  it('parses a large compact batch piece by piece too, cut where a stored op begins, and whole where a cut falls inside an op', () => {
    // Every seventh op's tags begin with "s", so a cut there falls inside a stored op.
    const ops = storedOps(3000).map((op, i) => (op.type === 'stored' && i % 7 === 0 ? { ...op, entry: { ...op.entry, tags: ['s', 'x'] } } : op))
    const bytes = Buffer.from(batchBody(ops, true))
    const text = bytes.toString()
    expect(text.length).toBeGreaterThan(10 * PIECE_CHARS)
    for (const sizes of [[65536], [7, 1000, 3]]) {
      const chunks = chunked(bytes, sizes)
      expect(parseBody(chunks, true)).toEqual(JSON.parse(text))
      const split = batchPieces(chunks, true)!
      expect(split.pieces.length).toBeGreaterThan(5)
      expect(Math.max(...split.pieces.map((p) => p.length))).toBeLessThan(4 * PIECE_CHARS)
    }
    // The JSON form's cut is not the compact one's.
    expect(batchPieces(chunked(bytes, [65536]))).toBeUndefined()
  })

  it('parses anything else whole, exactly as JSON.parse does, and refuses what is not JSON the same way', () => {
    const ops = storedOps(300)
    const bodies = [
      JSON.stringify({ ops: [] }),
      JSON.stringify({ ops }, null, 2),
      `${JSON.stringify({ ops })}\n`,
      // Looks like a batch at both ends, but it is not one list of ops.
      `{"ops":[${JSON.stringify(ops.slice(0, 200)).slice(1, -1)}],"more":[${JSON.stringify(ops.slice(200)).slice(1, -1)}]}`,
      JSON.stringify({ other: ops }),
      '[]',
    ]
    for (const body of bodies) expect(parseBody(chunked(Buffer.from(body), [4096]))).toEqual(JSON.parse(body))
    for (const bad of ['{', `${JSON.stringify({ ops }).slice(0, -3)}]}`, `{"ops":[${JSON.stringify(ops).slice(1, -1)},]}`, '']) {
      expect(() => parseBody(chunked(Buffer.from(bad), [4096]))).toThrow(SyntaxError)
    }
  })
})

describe('reading a batch from the request stream', () => {
  let db: Parameters<typeof countEntries>[0]
  freshManifestPerTest((m) => (db = m.db))
  const servers: http.Server[] = []
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r))
  })

  /** A real listener as the node runs it (app.ts): Hono gets Node's request as c.env.incoming. */
  async function serve(app: Hono): Promise<string> {
    const server = http.createServer(getRequestListener(app.fetch, { overrideGlobalObjects: false }))
    servers.push(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  const SECRET = 'a-cluster-secret-of-some-length'
  const internal = (maxBodyBytes?: number) => {
    const root = new Hono()
    root.route(INTERNAL_BASE_PATH, createInternalApp({ clusterSecret: SECRET, writableDb: () => db, log: captureLog().log, maxBodyBytes }))
    return root
  }

  it('applies a batch read from the stream, and refuses one past the limit with or without a declared length', async () => {
    const base = await serve(internal(200_000))
    const post = (body: BodyInit, headers: Record<string, string> = {}) =>
      fetch(`${base}${INTERNAL_BASE_PATH}/manifest`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json', ...headers }, body, duplex: 'half' } as RequestInit)

    const res = await post(JSON.stringify({ ops: storedOps(500) }))
    expect(await res.json()).toEqual({ applied: 500, failed: 0 })
    expect(await countEntries(db)).toBe(500)

    const big = JSON.stringify({ ops: storedOps(1500) })
    expect(big.length).toBeGreaterThan(200_000)
    expect((await post(big)).status).toBe(413)
    // Chunked, no length declared: counted while it arrives.
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunked(Buffer.from(big), [16_384])) controller.enqueue(new Uint8Array(chunk))
        controller.close()
      },
    })
    const streamed = await post(stream)
    expect(streamed.status).toBe(413)
    expect(await streamed.json()).toEqual({ error: 'batch too large; send fewer ops per request' })
    expect(await countEntries(db)).toBe(500)
  })

  it('rejects when the client goes away before the body ends', async () => {
    // Wrapped: a promise resolved with a promise would wait for it.
    let reading!: (r: { read: Promise<unknown> }) => void
    const started = new Promise<{ read: Promise<unknown> }>((resolve) => (reading = resolve))
    const server = http.createServer((req) => reading({ read: readBodyChunks(req, 1_000_000).catch((err: Error) => err) }))
    servers.push(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const req = http.request({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', method: 'POST', headers: { 'content-length': '1000' } })
    req.on('error', () => {})
    req.write('{"ops":[')
    const { read } = await started
    req.destroy()
    expect(await read).toBeInstanceOf(Error)
  })
})
