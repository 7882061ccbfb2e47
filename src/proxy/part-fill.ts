// Fills that combine an origin 206 with the stored part of its variant (RFC 9111
// §3.4; part.ts decides whether and how). The combined body is streamed in order
// (stored bytes before the new part, the origin's bytes, stored bytes after it)
// through an ordinary fill (fill.ts), so it is written as one new complete body,
// committed atomically like any other, and never served half-written. The client
// gets either the origin's own 206 (a range it asked for) or, when the parts make
// the whole representation, the complete 200 (a full request that only needed
// the rest of a stored part). A whole response stored for a variant supersedes
// the variant's part, which is then removed.

import { Readable, Transform } from 'node:stream'
import { type ByteRange, type EntryMeta, type StoredBody, sameStoredBody } from '../cache/types.ts'
import { cleanResponseHeaders } from './forward.ts'
import { entryVariant, startFill, type Fill, type FillDeps, type FillRequest, type FillTarget } from './fill.ts'
import type { HeaderBag } from './headers.ts'
import type { OriginResponse } from './origin.ts'
import { combineParts, type CombinedPart } from './part.ts'

/** A fill taken from an origin 206, and the response the client is answered with. */
export interface PartFill {
  fill: Fill
  /** The origin's 206, or the combined 200 built from it. */
  response: OriginResponse
}

/**
 * Take an origin 206 for the cache, combined with the stored part of its variant when they
 * combine (part.ts combineParts). `answer` says what the client asked for: `part`, the range
 * the origin sent (always answered: a 206 that combines with nothing is stored as it came);
 * `whole`, the complete representation (undefined unless the parts make it; the caller then
 * discards the 206 and asks for the whole).
 */
export async function startPartFill(deps: FillDeps, target: FillTarget, req: FillRequest, res: OriginResponse, answer: 'part' | 'whole'): Promise<PartFill | undefined> {
  const plain = (): PartFill | undefined => (answer === 'part' ? { fill: startFill(deps, target, req, res), response: res } : undefined)
  if (res.status === 200 && answer === 'part') {
    // The origin ignored Range: the whole response holds every byte of the stored part.
    const fill = startFill(deps, target, req, res)
    const part = storedPart(deps, target, req, cleanResponseHeaders(res.headers).headers)
    if (part) supersede(deps, fill.outcome, part)
    return { fill, response: res }
  }
  if (res.status !== 206) return plain()
  const cleaned = cleanResponseHeaders(res.headers)
  const stored = storedPart(deps, target, req, cleaned.headers)
  const plan = combineParts(stored, cleaned.headers)
  if (!plan || (answer === 'whole' && plan.status !== 200)) return plain()
  const pieces = stored ? await storedPieces(deps, stored, plan) : {}
  if (pieces === undefined) return plain()

  const combined: OriginResponse = { ...res, whole: undefined, status: plan.status, headers: combinedHeaders(res.headers, plan), body: concatenated([pieces.before, res.body, pieces.after]) }
  const fill = startFill(deps, target, req, combined)
  if (stored && plan.status === 200) supersede(deps, fill.outcome, stored)
  if (answer === 'whole') return { fill, response: combined }
  // The client asked for the origin's range: it gets that 206 as the origin sent it, its bytes
  // cut from the combined body as they stream into the cache.
  const length = Number(cleaned.headers['content-length'])
  return { fill: { ...fill, headers: cleaned.headers, setCookie: cleaned.setCookie, body: Buffer.isBuffer(fill.body) ? fill.body.subarray(plan.offset, plan.offset + length) : sliced(fill.body, plan.offset, length) }, response: res }
}

/** The stored part (206) of the variant a new response belongs to, when it came from the same origin. */
function storedPart(deps: FillDeps, target: FillTarget, req: FillRequest, headers: Record<string, string>): EntryMeta | undefined {
  const meta = deps.store.variant(target.key, entryVariant(206, headers, req.headers).variant)
  if (!meta || meta.status !== 206) return undefined
  return meta.origin === undefined || meta.origin === target.origin.href ? meta : undefined
}

/**
 * The stored bytes the combined body needs, read before anything is written. Undefined when
 * the part went away (evicted, purged, replaced, or failed its integrity check) meanwhile:
 * the new part is then taken on its own.
 */
async function storedPieces(deps: FillDeps, stored: EntryMeta, plan: CombinedPart): Promise<{ before?: StoredBody; after?: StoredBody } | undefined> {
  const read = async (range: ByteRange | undefined): Promise<StoredBody | undefined | null> => {
    if (!range) return null
    try {
      return await deps.store.read(stored.key, stored.variant, range)
    } catch (err) {
      // A range outside the body: the entry changed under us; take the new part alone.
      deps.log({ level: 'warn', msg: 'stored part could not be read for combining', key: stored.key, error: (err as Error).message })
      return undefined
    }
  }
  const before = await read(plan.before)
  const after = await read(plan.after)
  const current = deps.store.variant(stored.key, stored.variant)
  if (before === undefined || after === undefined || !sameStoredBody(stored, current)) {
    for (const piece of [before, after]) if (piece?.kind === 'stream') discard(piece.stream)
    return undefined
  }
  return { before: before ?? undefined, after: after ?? undefined }
}

/** The origin's fields with the combined Content-Range and Content-Length, and the stored part's fields it lacks (RFC 9111 §3.4). */
function combinedHeaders(origin: HeaderBag, plan: CombinedPart): HeaderBag {
  const headers: HeaderBag = { ...plan.storedOnly, ...origin, 'content-length': plan.fields['content-length'] }
  if (plan.fields['content-range'] === undefined) delete headers['content-range']
  else headers['content-range'] = plan.fields['content-range']
  return headers
}

/**
 * Once a fill has stored the whole response, the stored part of its variant is superseded
 * (every byte of it is in the whole): it is removed, unless a newer part replaced it meanwhile.
 */
export function supersede(deps: FillDeps, outcome: Fill['outcome'], part: EntryMeta): void {
  void outcome.then(({ stored, meta }) => {
    if (stored && meta?.status === 200) dropPart(deps, part)
  })
}

function dropPart(deps: FillDeps, part: EntryMeta): void {
  const current = deps.store.variant(part.key, part.variant)
  if (!sameStoredBody(part, current)) return
  deps.store.delete(part.key, part.variant).catch((err: unknown) => {
    deps.log({ level: 'error', msg: 'could not remove a stored part after combining it', key: part.key, error: (err as Error).message })
  })
}

/**
 * One stream of several bodies in order, read one after another at the reader's pace. Closing
 * it (a client gone, a failed write) closes every piece, the origin's body included, so no
 * origin connection or open file outlives it.
 */
export function concatenated(pieces: ReadonlyArray<StoredBody | Readable | undefined>): Readable {
  const sources = pieces.filter((p): p is StoredBody | Readable => p !== undefined)
  async function* chunks(): AsyncGenerator<Buffer> {
    for (const piece of sources) {
      if (piece instanceof Readable) for await (const chunk of piece) yield chunk as Buffer
      else if (piece.kind === 'buffer') yield piece.buffer
      else for await (const chunk of piece.stream) yield chunk as Buffer
    }
  }
  const out = Readable.from(chunks(), { objectMode: false })
  const streams = sources.map((p) => (p instanceof Readable ? p : p.kind === 'stream' ? p.stream : undefined)).filter((s) => s !== undefined)
  out.on('close', () => {
    for (const stream of streams) discard(stream)
  })
  return out
}

/**
 * Close a body nobody will read. The abort it reports (undici's body says "Request aborted")
 * is the one asked for here; any failure while it was being read reached its reader already.
 */
export function discard(body: Readable): void {
  if (body.destroyed) return
  body.on('error', () => {})
  body.destroy()
}

/**
 * The bytes `offset` to `offset + length - 1` of a stream; the rest is read and dropped, so the
 * source (here a fill writing the whole combined body) runs to its end. Closing the slice early
 * closes the source.
 */
export function sliced(source: Readable, offset: number, length: number): Readable {
  let position = 0
  const slice = new Transform({
    transform(chunk: Buffer, _encoding, cb) {
      const from = Math.max(0, offset - position)
      const to = Math.min(chunk.length, offset + length - position)
      position += chunk.length
      cb(null, from < to ? chunk.subarray(from, to) : undefined)
    },
  })
  source.on('error', (err) => slice.destroy(err))
  slice.on('close', () => {
    if (!source.destroyed) source.destroy()
  })
  return source.pipe(slice)
}
