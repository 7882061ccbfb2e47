// Node-to-node endpoints, mounted at /_caje/internal. Only other caje nodes
// call these, with `Authorization: Bearer <CAJE_CLUSTER_SECRET>`; without the
// secret every route answers 401 and does nothing, including unknown paths
// (so probing reveals no route names).
//
// Routes:
//   POST /manifest   a replica's batch of ManifestOps, applied by the primary; a batch
//                    sent in a line (x-caje-batch-line) is answered at once as in line
//                    and its outcome follows in the body, so the replica sends the next
//                    while this one is applied (writer.ts RemoteWriter)
//   GET  /role       this node's view of the cluster (debugging, peer checks)
//   GET  /object?key=&variant=
//                    one variant of this node's cache, for a peer's populate:
//                    the body opens with the EntryMeta as JSON (its byte length
//                    in X-Caje-Meta-Bytes), followed by the stored body; 404
//                    when this node does not hold it (any more)
//   POST /objects    {"items": [{key, variant}, ...]} (at most 256): the variants
//                    one after the other in one response, each as a frame:
//                    4-byte big-endian length of the metadata JSON, the
//                    metadata (or {"key", "variant", "missing": true} when this
//                    node does not hold it), then meta.size body bytes
//   POST /purge-nudge
//                    a peer recorded a purge: apply it (sent as {"purge": {...}})
//                    and any other pending purges now

import { setImmediate as nextTurn } from 'node:timers/promises'
import { turnBudget } from '../turn-budget.ts'
import { Readable } from 'node:stream'
import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import type { Context, MiddlewareHandler } from 'hono'
import type { IncomingMessage } from 'node:http'
import type { Kysely } from 'kysely'
import { bearerToken, secretEquals } from '../bearer.ts'
import { integrityOfBytes } from '../cache/content-file.ts'
import { type CacheStore, type EntryMeta, type StoredBody, isMemoryOnlyIntegrity, isPendingIntegrity, sameStoredBody } from '../cache/types.ts'
import type { Database } from './database.ts'
import { BATCH_FORMS_HEADER, COMPACT_CONTENT_TYPE, batchFormOf, parseBody, readBodyChunks } from './batch-body.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { applyOps as applyOpsToDb, isTransientDbError, parseOps } from './ops.ts'
import type { ApplyOptions, ApplyResult, ManifestOp } from './ops.ts'
import type { ClusterRole } from './primary.ts'
import type { NewPurge } from './repositories.ts'
import { PIPELINE_HEADER, QUEUED_HEADER } from './writer.ts'
import type { ReceivedBody } from './writer.ts'

export const INTERNAL_BASE_PATH = '/_caje/internal'

export interface InternalAppDeps {
  clusterSecret: string | undefined
  /**
   * The manifest this node may write, or undefined on a replica. Asked on
   * every request: LiteFS can promote or demote the node while it runs.
   */
  writableDb(): Kysely<Database> | undefined
  /** This node's role, for the answer a replica gives to a misdirected batch. */
  role?(): ClusterRole
  /**
   * How to apply a received batch to writableDb() (the manifest writer's applyReceived, which
   * takes the hot ops off the event loop); defaults to applyOps on the event loop.
   */
  applyOps?(db: Kysely<Database>, ops: ManifestOp[], options: ApplyOptions): Promise<ApplyResult>
  /**
   * How to apply a received batch from the bytes of its body (the manifest writer's
   * applyReceivedBody: its apply thread parses and applies a batch of hot ops, so the event loop
   * does neither). A body it hands back parsed is checked and applied as ops (applyOps). Without
   * it, the body is parsed here. `compact`: the body is in the compact form (batch-body.ts
   * COMPACT_CONTENT_TYPE).
   */
  applyBody?(db: Kysely<Database>, chunks: readonly Buffer[], compact: boolean): Promise<ReceivedBody>
  nodeId?: string
  /** This node's cache, streamed to peers by GET /object; without it /object answers 404. */
  store?: Pick<CacheStore, 'variants' | 'read' | 'readEntries' | 'bodySize'>
  /** A peer recorded a purge (POST /purge-nudge, with the purge when the peer sent it): apply it now. Must not throw. */
  onPurgeNudge?: (purge?: NewPurge) => void
  /** Largest accepted request body. */
  maxBodyBytes?: number
  log?: ManifestLog
}

/** Tries per deferred purge sweep while the manifest is busy, and the pause between them. */
const SWEEP_TRIES = 5
const SWEEP_RETRY_MS = 1000

/**
 * Purge sweeps a replica's batch allowed to follow its acknowledgment (ops.ts
 * sweepAfterAck): one at a time, in the order the purges were recorded, each
 * tried again while the manifest is busy. A sweep that still fails leaves the
 * entries listed (no node serves them: the purge is in the log) until they
 * expire or a later purge covers them; it is logged.
 */
function sweepsAfterAck(log: ManifestLog): (sweep: () => Promise<void>) => void {
  let tail = Promise.resolve()
  return (sweep) => {
    tail = tail.then(async () => {
      // After the acknowledgment is on its way.
      await nextTurn()
      for (let attempt = 1; ; attempt++) {
        try {
          return await sweep()
        } catch (err) {
          if (!isTransientDbError(err) || attempt === SWEEP_TRIES) {
            log('error', 'removing a purge\'s entries from the manifest failed; they stay listed until they expire', { error: describeError(err) })
            return
          }
          await new Promise((r) => setTimeout(r, SWEEP_RETRY_MS))
        }
      }
    })
  }
}

/** `Authorization: Bearer <secret>`, compared in constant time (secretEquals). */
export const requireClusterSecret = (secret: string | undefined): MiddlewareHandler => {
  return async function requireClusterSecret(c, next) {
    c.header('cache-control', 'no-store')
    if (!secret) {
      return c.json({ error: 'internal endpoints are disabled on this node: set CAJE_CLUSTER_SECRET on every node' }, 503)
    }
    const sent = bearerToken(c)
    if (sent === undefined || !secretEquals(sent, secret)) {
      c.header('www-authenticate', 'Bearer realm="caje-internal"')
      return c.json({ error: 'missing or wrong cluster secret' }, 401)
    }
    await next()
  }
}

export function createInternalApp(deps: InternalAppDeps): Hono {
  const log = deps.log ?? jsonLog
  const sweeps = sweepsAfterAck(log)
  const apply = deps.applyOps ?? ((db: Kysely<Database>, ops: ManifestOp[], options: ApplyOptions) => applyOpsToDb(db, ops, log, options))
  const app = new Hono()

  app.use('*', requireClusterSecret(deps.clusterSecret))

  app.get('/role', (c) => {
    const role = deps.role?.() ?? (deps.writableDb() ? { kind: 'primary' as const } : undefined)
    return c.json({ nodeId: deps.nodeId, role: role?.kind ?? 'replica', primaryUrl: role?.kind === 'replica' ? role.primaryUrl : undefined })
  })

  const maxBatchBytes = deps.maxBodyBytes ?? 32 * 1024 * 1024
  const lines = batchLines()
  /** A replica's batch, read: applied (on the apply thread when deps.applyBody), or why not. */
  const answerBatch = async (db: Kysely<Database>, chunks: Buffer[], compact: boolean, from: string | undefined): Promise<BatchAnswer> => {
    let body: unknown
    if (deps.applyBody) {
      let received: ReceivedBody
      try {
        received = await deps.applyBody(db, chunks, compact)
      } catch (err) {
        return applyFailed(log, from, undefined, err)
      }
      if (received.kind === 'applied') return { status: 200, body: received.result }
      if (received.kind === 'not-json') return { status: 400, body: { error: 'body is not valid JSON' } }
      body = received.body
    } else {
      try {
        body = parseBody(chunks, compact)
      } catch {
        return { status: 400, body: { error: 'body is not valid JSON' } }
      }
    }
    const parsed = parseOps(body, undefined, compact)
    if (!parsed.ok) {
      log('warn', 'refused a manifest batch from a peer', { from, error: parsed.error })
      return { status: 400, body: { error: parsed.error } }
    }
    if (parsed.unknownTypes.length > 0) {
      log('warn', 'skipped manifest ops of a type this node does not know (a newer peer during a rolling deploy?); the rest of the batch is applied', { from, types: parsed.unknownTypes })
    }
    try {
      const result = await apply(db, parsed.ops, { deferSweep: sweeps })
      return { status: 200, body: result }
    } catch (err) {
      return applyFailed(log, from, parsed.ops.length, err)
    }
  }

  // Every answer of the batch endpoint says which forms beside JSON it reads: a replica sends
  // the compact one once it has seen this (writer.ts RemoteWriter).
  app.use('/manifest', async (c, next) => {
    await next()
    c.res.headers.set(BATCH_FORMS_HEADER, 'compact')
  })

  app.post('/manifest', async (c) => {
    const form = batchFormOf(c.req.header('content-type'))
    if (form === undefined) {
      return c.json({ error: `a batch is application/json ({"ops": [...]}) or ${COMPACT_CONTENT_TYPE} ({"c": [...]}), not ${c.req.header('content-type')}` }, 415)
    }
    // Node's parser has refused a malformed length, or one beside Transfer-Encoding (RFC 9112
    // §6.3), and ends the body at the declared length: a larger one is refused unread.
    if (Number(c.req.header('content-length')) > maxBatchBytes) return tooLarge(c)
    const db = deps.writableDb()
    if (!db) {
      // The sender's view of the primary is stale (LiteFS moved it): 409
      // tells it to retry, and where this node thinks the primary is.
      const role = deps.role?.()
      return c.json(
        {
          error: 'this node is a replica and cannot write the manifest; send manifest writes to the primary',
          primaryUrl: role?.kind === 'replica' ? role.primaryUrl : undefined,
        },
        409,
      )
    }
    const from = c.req.header('x-caje-node')
    let chunks: Buffer[] | undefined
    try {
      chunks = await requestChunks(c, maxBatchBytes)
    } catch {
      return c.json({ error: 'body is not valid JSON' }, 400)
    }
    if (chunks === undefined) return tooLarge(c)
    // A replica that sends its next batch while this one is applied (writer.ts RemoteWriter) names
    // its line of batches: this one is answered at once as in line, and its outcome follows.
    const line = deps.applyBody ? c.req.header(PIPELINE_HEADER) : undefined
    if (line === undefined || line === '') {
      const { status, body } = await answerBatch(db, chunks, form === 'compact', from)
      return c.json(body, status)
    }
    const place = lines.join(line)
    const answer = (async (): Promise<BatchAnswer> => {
      let answered: BatchAnswer | undefined
      try {
        // The sender's batch before this one first: applied, then this one; not applied, and this one is not either (the sender sends both again, in order).
        if (!(await place.previous)) return (answered = { status: 503, body: { error: 'the batch before this one in its line was not applied; retry' } })
        return (answered = await answerBatch(db, chunks, form === 'compact', from))
      } catch (err) {
        return (answered = { status: 503, body: { error: describeError(err) } })
      } finally {
        place.done(answered?.status === 200)
      }
    })()
    return pipelinedAnswer(answer)
  })

  app.get('/object', async (c) => {
    const key = c.req.query('key')
    const variant = c.req.query('variant') ?? ''
    if (!key) return c.json({ error: 'key is required' }, 400)
    const found = deps.store ? await openStored(deps.store, key, variant) : undefined
    if (!found) return c.json({ error: 'this node does not hold that entry' }, 404)
    const { meta, body } = found
    const prelude = Buffer.from(JSON.stringify(meta), 'utf8')
    const headers = {
      'content-type': OBJECT_CONTENT_TYPE,
      [META_BYTES_HEADER]: String(prelude.length),
      'content-length': String(prelude.length + meta.size),
      'cache-control': 'no-store',
    }
    if (body.kind === 'buffer') return new Response(new Uint8Array(Buffer.concat([prelude, body.buffer])), { status: 200, headers })
    const stream = Readable.from(
      (async function* () {
        yield prelude
        yield* body.stream
      })(),
      { objectMode: false },
    )
    return new Response(Readable.toWeb(stream) as unknown as ReadableStream, { status: 200, headers })
  })

  app.post('/objects', bodyLimit({ maxSize: 1024 * 1024, onError: (c) => c.json({ error: `too many items; send at most ${MAX_OBJECTS_PER_REQUEST}` }, 413) }), async (c) => {
    let items: Array<{ key: string; variant: string }>
    try {
      items = parseItems(await c.req.json())
    } catch (err) {
      return c.json({ error: describeError(err) }, 400)
    }
    const store = deps.store
    return new Response(objectFrames(store, items), { status: 200, headers: { 'content-type': OBJECTS_CONTENT_TYPE, 'cache-control': 'no-store' } })
  })

  app.post('/purge-nudge', bodyLimit({ maxSize: 64 * 1024, onError: (c) => c.json({ error: 'a purge nudge is one purge; body too large' }, 413) }), async (c) => {
    const text = await c.req.text()
    let purge: NewPurge | undefined
    // An empty body is the nudge of an older version: "read the log now".
    if (text.trim() !== '') {
      let body: unknown
      try {
        body = JSON.parse(text)
      } catch {
        return c.json({ error: 'body is not valid JSON; send {"purge": {...}} or nothing' }, 400)
      }
      const sent = typeof body === 'object' && body !== null ? (body as { purge?: unknown }).purge : undefined
      const parsed = parseOps({ ops: [{ type: 'purge', purge: sent }] })
      if (!parsed.ok) return c.json({ error: parsed.error.replace(/^ops\[0\]: /, '') }, 400)
      const op = parsed.ops[0]!
      if (op.type === 'purge') purge = op.purge
    }
    deps.onPurgeNudge?.(purge)
    return c.json({ ok: true }, 202)
  })

  return app
}

/** A status and the JSON the route answers a batch with. */
interface BatchAnswer {
  status: 200 | 400 | 503
  body: object
}

/** Most lines kept (batchLines): past it they are forgotten, and a batch sent after one of them is sent again. */
const MAX_LINES = 10_000

/**
 * A line's batches (PIPELINE_HEADER: `<line> <index>`, the last of a line also ` last`). A
 * replica sends a batch only once the one before it is in line here (the answer's head says so,
 * before its body), so a batch finds the one before it, waits for it, and is applied only when
 * that one was: the batches of a line are applied in the order sent, and none after one that was
 * not. A line is kept while the batch after its latest may still come: a batch not applied ends
 * its line (one sent after it finds nothing before it, and is not applied either), and so does
 * the last.
 */
function batchLines(): { join(header: string): { previous: Promise<boolean>; done(applied: boolean): void } } {
  const lines = new Map<string, { index: number; applied: Promise<boolean> }>()
  return {
    join(header) {
      const [line = '', at = '', last] = header.split(' ')
      const index = Number(at)
      const before = lines.get(line)
      // The first of a line waits for nothing; another, for the one just before it, which must be here.
      const previous = index === 0 ? Promise.resolve(true) : before?.index === index - 1 ? before.applied : Promise.resolve(false)
      let settle!: (applied: boolean) => void
      const mine = { index, applied: new Promise<boolean>((resolve) => (settle = resolve)) }
      if (lines.size >= MAX_LINES) lines.clear()
      lines.set(line, mine)
      return {
        previous,
        done(applied) {
          if ((!applied || last === 'last') && lines.get(line) === mine) lines.delete(line)
          settle(applied)
        },
      }
    },
  }
}

/**
 * The answer to a batch in line: its head at once (with a space, which JSON allows before a
 * value: the head goes out with the first bytes), then the JSON answer with its status.
 */
function pipelinedAnswer(answer: Promise<BatchAnswer>): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array([0x20]))
    },
    async pull(controller) {
      const { status, body } = await answer
      controller.enqueue(new Uint8Array(Buffer.from(JSON.stringify({ ...body, status }))))
      controller.close()
    },
  })
  // Chunked named outright: the server sends the head without waiting to see whether the body ends soon.
  return new Response(body, { status: 200, headers: { 'content-type': 'application/json', 'cache-control': 'no-store', 'transfer-encoding': 'chunked', [QUEUED_HEADER]: '1' } })
}

/** A batch that could not be applied now: busy or read-only right now, the sender keeps it and retries. */
function applyFailed(log: ManifestLog, from: string | undefined, ops: number | undefined, err: unknown): BatchAnswer {
  log('error', 'applying a peer manifest batch failed', { from, ops, error: describeError(err) })
  return { status: 503, body: { error: isTransientDbError(err) ? 'manifest is busy; retry' : 'manifest write failed; retry' } }
}

function tooLarge(c: Context): Response {
  return c.json({ error: 'batch too large; send fewer ops per request' }, 413)
}

/**
 * The request's body as the chunks it arrived in, or undefined past maxBytes: straight from
 * Node's request stream (batch-body.ts) when the node's listener passed it and nothing has read
 * it, else through the Request.
 */
async function requestChunks(c: Context, maxBytes: number): Promise<Buffer[] | undefined> {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming
  if (incoming !== undefined && !incoming.readableDidRead && incoming.readableFlowing === null) return readBodyChunks(incoming, maxBytes)
  const body = Buffer.from(await c.req.arrayBuffer())
  return body.length > maxBytes ? undefined : [body]
}

/** Header and content type of GET /object (populate.ts reads them). */
export const META_BYTES_HEADER = 'x-caje-meta-bytes'
export const OBJECT_CONTENT_TYPE = 'application/vnd.caje.object'
export const OBJECTS_CONTENT_TYPE = 'application/vnd.caje.objects'
/** Most variants one /objects request may ask for. */
export const MAX_OBJECTS_PER_REQUEST = 256

function parseItems(body: unknown): Array<{ key: string; variant: string }> {
  const items = typeof body === 'object' && body !== null ? (body as { items?: unknown }).items : undefined
  if (!Array.isArray(items) || items.length === 0 || items.length > MAX_OBJECTS_PER_REQUEST) {
    throw new Error(`body must be {"items": [{"key", "variant"}, ...]} with 1 to ${MAX_OBJECTS_PER_REQUEST} items`)
  }
  return items.map((item: unknown, i) => {
    const v = item as { key?: unknown; variant?: unknown } | null
    if (typeof v !== 'object' || v === null || typeof v.key !== 'string' || v.key === '' || typeof v.variant !== 'string') {
      throw new Error(`items[${i}] must be {"key": "...", "variant": "..."}`)
    }
    return { key: v.key, variant: v.variant }
  })
}

/**
 * Frames gathered for one piece of the response, laid out once: each frame's head (the
 * metadata's length, 4 bytes, big-endian, then the metadata as JSON) is encoded straight into
 * the piece, and each body copied into it once. Built frame by frame (a buffer per head, then
 * one concatenation of heads and bodies), a sender allocated three buffers per object and copied
 * every metadata twice.
 */
export class FramesPiece {
  private readonly metas: string[] = []
  private readonly bodies: Array<Buffer | undefined> = []
  /** The piece's length so far. */
  bytes = 0

  /** A frame: `meta` (as JSON), then `body` when there is one (a streamed body follows the piece). */
  add(meta: unknown, body?: Buffer): void {
    const json = JSON.stringify(meta)
    this.metas.push(json)
    this.bodies.push(body)
    this.bytes += 4 + Buffer.byteLength(json, 'utf8') + (body?.length ?? 0)
  }

  get frames(): number {
    return this.metas.length
  }

  /** The frames as one buffer. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.bytes)
    let at = 0
    for (let i = 0; i < this.metas.length; i++) {
      const written = out.write(this.metas[i]!, at + 4, 'utf8')
      out.writeUInt32BE(written, at)
      at += 4 + written
      const body = this.bodies[i]
      if (body) {
        out.set(body, at)
        at += body.length
      }
    }
    return out
  }
}

/** Frames are gathered into pieces of about this size before they are handed to the response. */
const FRAMES_PIECE_BYTES = 256 * 1024
/**
 * At most this many small bodies are read (synchronously) into one piece, and the event loop
 * turns between pieces: otherwise, while the peer reads as fast as the socket takes it (each
 * write drains on the next tick), a whole request of 128 objects is read in one turn, and a
 * health check or a client's request waits behind it for hundreds of milliseconds.
 */
export const FRAMES_PIECE_OBJECTS = 16

/**
 * The frames of POST /objects as a stream. Small bodies (nearly all) are read whole and several
 * frames go out as one piece: a stream chunk per frame and per body cost the sender more than
 * reading them. A body the store streams (a large one) goes out chunk by chunk, at the pace
 * the peer reads it.
 */
function objectFrames(store: Pick<CacheStore, 'variants' | 'read' | 'readEntries' | 'bodySize'> | undefined, items: Array<{ key: string; variant: string }>): ReadableStream<Uint8Array> {
  let next = 0
  let body: AsyncIterator<Buffer> | undefined
  let bodyStream: Readable | undefined
  let piecesRead = 0
  // Shared with every other bulk pass of this process: sixteen requests at once still read about one slice per turn.
  const budget = turnBudget()
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        if (body) {
          const chunk = await body.next()
          if (!chunk.done) {
            controller.enqueue(chunk.value)
            return
          }
          body = undefined
          bodyStream = undefined
        }
        if (next >= items.length) {
          controller.close()
          return
        }
        // Let the loop turn before the next piece's reads (see FRAMES_PIECE_OBJECTS), and end a piece early once the turn's slice is spent.
        if (piecesRead++ > 0) await budget.next()
        while (budget.spent()) await budget.next()
        const piece = new FramesPiece()
        const last = Math.min(items.length, next + FRAMES_PIECE_OBJECTS)
        while (next < last && piece.bytes < FRAMES_PIECE_BYTES && !body) {
          if (piece.frames > 0 && budget.spent()) break
          // A run of small bodies is read in one batch, off the event loop when the store can.
          const run = store?.readEntries ? smallRun(store, items, next, last, FRAMES_PIECE_BYTES - piece.bytes) : []
          if (run.length > 0) {
            await framedRun(store!, run, piece)
            next += run.length
            continue
          }
          const item = items[next++]!
          const found = store ? await openStored(store, item.key, item.variant) : undefined
          piece.add(found ? found.meta : { key: item.key, variant: item.variant, missing: true }, found?.body.kind === 'buffer' ? found.body.buffer : undefined)
          if (found?.body.kind === 'stream') {
            bodyStream = found.body.stream
            body = bodyStream[Symbol.asyncIterator]() as AsyncIterator<Buffer>
          }
        }
        controller.enqueue(piece.take())
        return
      }
    },
    cancel() {
      // The peer went away: a body file still open is closed now.
      bodyStream?.destroy()
    },
  })
}

/** Bodies up to this size are read in batches (readEntries) rather than one by one. */
export const BATCH_READ_BYTES = 64 * 1024

/**
 * The items from `from` (before `to`) that can be read in one batch: those this node holds with a
 * body of at most BATCH_READ_BYTES (or does not hold: a frame saying so), up to about `room`
 * bytes of bodies; empty when the first is larger (it is streamed). Only sizes are looked up
 * (bodySize, when the store has it): the metadata comes with the bodies (readEntries).
 */
function smallRun(store: Pick<CacheStore, 'variants' | 'bodySize'>, items: Array<{ key: string; variant: string }>, from: number, to: number, room: number): Array<{ key: string; variant: string }> {
  const run: Array<{ key: string; variant: string }> = []
  let bytes = 0
  for (let i = from; i < to && (run.length === 0 || bytes < room); i++) {
    const item = items[i]!
    const size = store.bodySize ? store.bodySize(item.key, item.variant) : store.variants(item.key).find((m) => m.variant === item.variant)?.size
    if (size !== undefined && size > BATCH_READ_BYTES) break
    run.push(item)
    bytes += size ?? 0
  }
  return run
}

/**
 * The frames of a run of small bodies (see smallRun), read with one readEntries(), added to `piece`,
 * each with the metadata its body was read with. A variant replaced while its body was being read
 * is read again on its own (openStored).
 */
async function framedRun(store: Pick<CacheStore, 'variants' | 'read' | 'readEntries'>, run: Array<{ key: string; variant: string }>, piece: FramesPiece): Promise<void> {
  const entries = await store.readEntries!(run)
  for (let i = 0; i < run.length; i++) {
    const { key, variant } = run[i]!
    const entry = entries[i]
    let found: { meta: EntryMeta; body: StoredBody } | undefined
    if (entry && entry.body.kind === 'buffer' && !entry.replaced) found = { meta: withDigest(entry.meta, entry.body), body: entry.body }
    else if (entry) {
      if (entry.body.kind === 'stream') entry.body.stream.destroy()
      found = await openStored(store, key, variant)
      if (found?.body.kind === 'stream') {
        // Grown past the batch size meanwhile: the peer asks the next holder for it.
        found.body.stream.destroy()
        found = undefined
      }
    }
    piece.add(found ? found.meta : { key, variant, missing: true }, found?.body.kind === 'buffer' ? found.body.buffer : undefined)
  }
}

/**
 * The metadata as a peer checks the body against: a body still being written behind is known
 * here by a placeholder integrity, so its digest is taken from the bytes sent (they are in memory).
 */
function withDigest(meta: EntryMeta, body: StoredBody): EntryMeta {
  if (!isPendingIntegrity(meta.integrity) || body.kind !== 'buffer') return meta
  return { ...meta, integrity: integrityOfBytes(body.buffer) }
}

/**
 * The metadata and body of one stored variant, consistent with each other:
 * if the variant is replaced between reading the two, try once more.
 */
async function openStored(store: Pick<CacheStore, 'variants' | 'read'>, key: string, variant: string): Promise<{ meta: EntryMeta; body: StoredBody } | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const meta = store.variants(key).find((m) => m.variant === variant)
    // Kept in memory only: not held by this node (its body may go at any moment).
    if (!meta || isMemoryOnlyIntegrity(meta.integrity)) return undefined
    const lookup = store.read(key, variant)
    const body = lookup instanceof Promise ? await lookup : lookup
    if (!body) return undefined
    // Read at once (a small body verified before): nothing can have replaced it meanwhile.
    if (lookup === body) return { meta: withDigest(meta, body), body }
    const after = store.variants(key).find((m) => m.variant === variant)
    if (sameStoredBody(meta, after)) return { meta: withDigest(after!, body), body }
    if (body.kind === 'stream') body.stream.destroy()
  }
  return undefined
}
