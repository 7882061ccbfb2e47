// Reading a replica's batch of ops off the wire on the primary.
//
// A batch is JSON, `{"ops":[...]}` as RemoteWriter sends it: about 300 KB
// for 1,000 stored ops. Read through Request.json(), that body went through
// a web stream, undici's body reader and a string of the whole body. V8 keeps
// a string of 128 KiB or more in its large-object space, on pages of its
// own that are mapped fresh each time: making that one string (and the
// buffer it was decoded from) cost more than parsing it. So the body is read
// from Node's request stream as the chunks it arrives in, decoded chunk by
// chunk, and parsed in pieces of about PIECE_CHARS characters, each cut
// where an op begins.

import type { IncomingMessage } from 'node:http'
import { StringDecoder } from 'node:string_decoder'

/**
 * Content type of a batch in the compact form: `{"c":[...]}`, each 'stored' op an array
 * (hot-op-shapes.ts expandStored), every other op an object as in the JSON form. About half the
 * bytes of `{"ops":[...]}`, and read in half the time. A replica sends it only to a primary
 * that announced it reads it (BATCH_FORMS_HEADER).
 */
export const COMPACT_CONTENT_TYPE = 'application/vnd.caje.ops+json'
/** Response header of the primary's batch endpoint: the forms it reads beside the JSON one (`compact`). */
export const BATCH_FORMS_HEADER = 'x-caje-batch-forms'

/**
 * The form a batch's content type names: 'json' (application/json, or none: older senders),
 * 'compact' (COMPACT_CONTENT_TYPE), or undefined for any other (answered 415).
 */
export function batchFormOf(contentType: string | undefined): 'json' | 'compact' | undefined {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  if (type === '' || type === 'application/json') return 'json'
  if (type === COMPACT_CONTENT_TYPE) return 'compact'
  return undefined
}

/** Characters per piece parsed, about: far below the 128 KiB of a large-object string. */
export const PIECE_CHARS = 32 * 1024

/**
 * The request body's chunks, at most maxBytes in all, or undefined when it is larger (nothing
 * more is kept, and the answer can go out at once). Rejects when the client goes away mid-body.
 */
export function readBodyChunks(incoming: IncomingMessage, maxBytes: number): Promise<Buffer[] | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    incoming.on('data', (chunk: Buffer) => {
      if (done) return
      size += chunk.length
      if (size > maxBytes) {
        done = true
        chunks.length = 0
        resolve(undefined)
        return
      }
      chunks.push(chunk)
    })
    incoming.once('end', () => {
      done = true
      resolve(chunks)
    })
    incoming.once('error', (err) => {
      done = true
      reject(err)
    })
    incoming.once('close', () => {
      if (!done) reject(new Error('the request ended before its body did'))
      done = true
    })
  })
}

/** What splitBatch and parseBatch decode with: a StringDecoder('utf8') of node:string_decoder, new for each body. */
export interface Utf8Decoder {
  write(bytes: Uint8Array): string
  end(): string
}

/**
 * The body's text in pieces the batch can be parsed from one by one: every piece but the
 * first starts where an op starts, and each ends where the next begins. Undefined when the
 * text does not look like a batch (then it is parsed whole).
 */
export function batchPieces(chunks: readonly Uint8Array[], compact = false): { pieces: string[]; whole: () => string } | undefined {
  const { pieces, whole } = splitBatch(chunks, new StringDecoder('utf8'), PIECE_CHARS, compact)
  return pieces === undefined ? undefined : { pieces, whole }
}

/**
 * The body parsed as JSON, as JSON.parse would (it throws SyntaxError the same way). A batch
 * is parsed piece by piece (batchPieces): each piece holds whole ops, so `[` + piece + `]` is
 * valid JSON exactly when the piece is a list of values, and the batch is the lists joined.
 * Anything else (other whitespace, other keys, invalid JSON) is parsed whole. `compact`: the
 * body is in the compact form (COMPACT_CONTENT_TYPE), cut where a stored op's array begins.
 */
export function parseBody(chunks: readonly Uint8Array[], compact = false): unknown {
  return parseBatch(chunks, new StringDecoder('utf8'), PIECE_CHARS, compact)
}

// splitBatch and parseBatch refer to nothing but their arguments and each other: the manifest's
// apply thread (apply-thread.ts) runs them from their source text, on the bytes of a batch.

/** batchPieces, with the decoder and the piece length given; no pieces when the text does not look like a batch. */
export function splitBatch(chunks: readonly Uint8Array[], decoder: Utf8Decoder, pieceChars: number, compact: boolean): { pieces: string[] | undefined; whole: () => string } {
  // A body handed over whole (tests, other servers, the thread's copy) is still decoded in small strings.
  const decodeBytes = 64 * 1024
  const head = compact ? '{"c":[' : '{"ops":['
  const tail = ']}'
  // Where an op begins in JSON.stringify's text of a batch: a comma, then the op's first key (a
  // compact stored op's first item). A quote inside a string is escaped, so this is never inside
  // one; where it is inside an op (a list of tags that begins "s"), a piece is not a list of
  // values, and the whole text is parsed instead.
  const opStart = compact ? ',["s",' : ',{"type":'
  const texts: string[] = []
  for (const chunk of chunks) {
    for (let at = 0; at < chunk.length; at += decodeBytes) {
      const text = decoder.write(chunk.subarray(at, at + decodeBytes))
      if (text !== '') texts.push(text)
    }
  }
  const rest = decoder.end()
  if (rest !== '') texts.push(rest)
  const whole = () => texts.join('')
  const pieces: string[] = []
  let piece = ''
  for (const text of texts) {
    let from = 0
    for (;;) {
      // The next op start once the piece is long enough; one that straddles two chunks is not seen (the piece grows).
      const at = text.indexOf(opStart, from + Math.max(0, pieceChars - piece.length))
      if (at < 0) {
        piece += text.slice(from)
        break
      }
      pieces.push(piece + text.slice(from, at))
      piece = ''
      // The comma between two ops belongs to neither.
      from = at + 1
    }
  }
  pieces.push(piece)
  const first = pieces[0]!
  const last = pieces[pieces.length - 1]!
  if (!first.startsWith(head) || !last.endsWith(tail) || (pieces.length === 1 && first.length < head.length + tail.length)) return { pieces: undefined, whole }
  pieces[0] = first.slice(head.length)
  pieces[pieces.length - 1] = pieces[pieces.length - 1]!.slice(0, -tail.length)
  return { pieces, whole }
}

/** parseBody, with the decoder and the piece length given. */
export function parseBatch(chunks: readonly Uint8Array[], decoder: Utf8Decoder, pieceChars: number, compact: boolean): unknown {
  const { pieces, whole } = splitBatch(chunks, decoder, pieceChars, compact)
  if (pieces === undefined) return JSON.parse(whole())
  const ops: unknown[] = []
  try {
    for (const piece of pieces) {
      const values = JSON.parse(`[${piece}]`) as unknown[]
      for (const v of values) ops.push(v)
    }
  } catch {
    // Not a list of ops after all (or not JSON): the whole text decides, and its error is the one to report.
    return JSON.parse(whole())
  }
  return compact ? { c: ops } : { ops }
}
