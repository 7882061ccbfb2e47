// Structured logs: one JSON object per line on stdout (errors on stderr).
// Secrets never reach a log line: callers pass only what is safe, and any
// field whose name looks like a credential is redacted here as a last guard.
//
// Lines to stdout wait in one 64 KiB buffer, allocated once, and are written
// together every 10 ms (or sooner when the buffer is full): one write for a
// few hundred access-log lines under load instead of one synchronous write
// each, which cost about a third of a small hit's throughput. Once per turn of
// the event loop was not enough: a turn answers only a handful of requests,
// and the write per turn still cost about a microsecond per line. An
// access-log line is encoded straight into that buffer as UTF-8 bytes, with
// no string built for it: the text that never changes in a process is copied
// as bytes, numbers are written as digits, and a string is escaped only where
// it holds a character JSON escapes. Errors are written at once, after what
// was queued before them. What is still buffered is written when the process
// exits (process.exit, end of the loop); a SIGKILL loses at most the last
// 10 ms of lines.
//
// stdout and stderr are made blocking when they are pipes (a log collector,
// `caje | tee`): Node writes to a full pipe asynchronously on Linux, and
// whatever waits in that queue is dropped by process.exit. Blocking costs
// nothing while the reader keeps up (one write per turn) and makes a stalled
// reader slow caje down instead of growing its memory, as files and terminals
// already do.

import fs from 'node:fs'
import type { Logger } from './vocabulary.ts'

export type { Logger }

const SECRET_KEY = /pass(word)?|secret|token|authorization|cookie|credential/i

/** The line buffer's size: it is written out as soon as it is full (bounds memory between flushes). */
const BUFFER_BYTES = 64 * 1024
/** How long a line may wait in the buffer: what a SIGKILL can lose. */
export const FLUSH_AFTER_MS = 10

/**
 * Each field name's text in a line, `"name":`, or `"name":"[redacted]"` for a name that looks like
 * a credential; names repeat on every line, so each is worked out once.
 */
const fieldPrefixes = new Map<string, { prefix: string; secret: boolean }>()
function fieldPrefix(name: string): { prefix: string; secret: boolean } {
  let field = fieldPrefixes.get(name)
  if (field === undefined) {
    const secret = SECRET_KEY.test(name)
    field = { prefix: `${jsonString(name)}:${secret ? '"[redacted]"' : ''}`, secret }
    // Field names come from code, not from clients; the bound is only a safety net.
    if (fieldPrefixes.size < 1000) fieldPrefixes.set(name, field)
  }
  return field
}

/** What JSON.stringify escapes in a string: quote, backslash, control characters and (being well-formed) lone surrogates. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/

/** A string as JSON: plain text (nearly every value) quoted as it is, anything else as JSON.stringify writes it. */
function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`
}

/**
 * The entry's fields as JSON object members, each led by a comma, exactly as JSON.stringify
 * writes them (undefined and functions left out), credentials redacted. Written as text: an
 * access-log line is a few flat fields, and JSON.stringify of the entry object was the largest
 * part of what a line costs.
 */
function jsonMembers(entry: Record<string, unknown>): string {
  let out = ''
  for (const name in entry) {
    const value = entry[name]
    if (value === undefined) continue
    const field = fieldPrefix(name)
    if (field.secret) {
      out += `,${field.prefix}`
      continue
    }
    let text: string | undefined
    switch (typeof value) {
      case 'string':
        text = jsonString(value)
        break
      case 'number':
        text = Number.isFinite(value) ? String(value) : 'null'
        break
      case 'boolean':
        text = value ? 'true' : 'false'
        break
      default:
        // null, objects and arrays; what JSON leaves out of an object (functions, symbols) stays out.
        text = JSON.stringify(value) as string | undefined
    }
    if (text !== undefined) out += `,${field.prefix}${text}`
  }
  return out
}

/** ISO time of the current millisecond, formatted once per millisecond (many lines share one). */
let isoMs = -1
let isoText = ''
function isoNow(): string {
  const now = Date.now()
  if (now !== isoMs) {
    isoMs = now
    isoText = new Date(now).toISOString()
  }
  return isoText
}

/**
 * The ISO time of the millisecond in which performance.now() read `at`, for a line whose caller
 * has just read that clock: the wall clock is read once per millisecond of the monotonic one, not
 * once more per line. The time is the wall clock's at the first line of that millisecond, at most
 * a millisecond before it.
 */
let atMs = -1
let atText = ''
function isoAt(at: number): string {
  const ms = Math.floor(at)
  if (ms !== atMs) {
    atMs = ms
    atText = isoNow()
  }
  return atText
}

export interface LineWriter {
  /** Queue one line (without its newline). Errors are written before this returns. */
  write(line: string, isError: boolean): void
  /** Write out everything queued, synchronously. */
  flush(): void
}

/**
 * Where a logger's lines go: whole lines as text, or a line encoded in place. `room(max)` gives a
 * buffer that has room from `at` for a line of up to `max` bytes and its newline (undefined when no
 * line that long fits: the caller encodes it elsewhere and writes it as text); `done(end)` takes
 * the bytes from `at` to `end` as one line.
 */
interface LineSink extends LineWriter {
  at: number
  room(max: number): Buffer | undefined
  done(end: number): void
}

/** Runs `flush` once, later (FLUSH_AFTER_MS), without keeping the process alive for it. */
export type FlushScheduler = (flush: () => void) => void

const flushLater: FlushScheduler = (flush) => {
  setTimeout(flush, FLUSH_AFTER_MS).unref()
}

/** Takes the first `length` bytes of `bytes` (a buffer that is reused once this returns). */
type ByteSink = (bytes: Buffer, length: number) => void

const NEWLINE = 0x0a

/**
 * Lines gathered in one buffer and written with one call of `out` per FLUSH_AFTER_MS (`schedule`),
 * or as soon as the buffer is full. A line longer than the whole buffer is written by itself, after
 * what was queued before it.
 */
class LineBuffer implements LineSink {
  readonly bytes = Buffer.allocUnsafe(BUFFER_BYTES)
  at = 0
  private scheduled = false
  private readonly flushNow = (): void => this.flush()

  constructor(
    private readonly out: ByteSink,
    private readonly err: { write(chunk: string): unknown },
    private readonly schedule: FlushScheduler,
  ) {}

  flush(): void {
    this.scheduled = false
    const length = this.at
    if (length === 0) return
    // Reset first: should the write throw, the next line starts on an empty buffer.
    this.at = 0
    this.out(this.bytes, length)
  }

  room(max: number): Buffer | undefined {
    if (this.at + max + 1 > BUFFER_BYTES) {
      this.flush()
      if (max + 1 > BUFFER_BYTES) return undefined
    }
    return this.bytes
  }

  done(end: number): void {
    this.bytes[end] = NEWLINE
    this.at = end + 1
    if (this.at >= BUFFER_BYTES) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      this.schedule(this.flushNow)
    }
  }

  write(line: string, isError: boolean): void {
    if (isError) {
      // Keep the order of what was logged before it.
      this.flush()
      this.err.write(line + '\n')
      return
    }
    // At most three bytes of UTF-8 for each UTF-16 unit; the exact count only when that bound does not fit.
    if (this.at + line.length * 3 + 1 > BUFFER_BYTES && this.at + Buffer.byteLength(line) + 1 > BUFFER_BYTES) {
      this.flush()
      const whole = Buffer.from(line + '\n')
      if (whole.length > BUFFER_BYTES) {
        this.out(whole, whole.length)
        return
      }
    }
    this.done(this.at + this.bytes.write(line, this.at, 'utf8'))
  }
}

/**
 * Lines batched into one write on `out` per FLUSH_AFTER_MS (`schedule`). Writes to files, pipes
 * and terminals are synchronous in Node on Linux, so a flush never leaves bytes in flight.
 */
export function bufferedLines(
  out: { write(chunk: string): unknown } = process.stdout,
  err: { write(chunk: string): unknown } = process.stderr,
  schedule: FlushScheduler = flushLater,
): LineWriter {
  return new LineBuffer((bytes, length) => out.write(bytes.toString('utf8', 0, length)), err, schedule)
}

/** A logger's own line writer (`createLogger({ write })`): each line handed over as text, encoded lines too. */
class TextLines implements LineSink {
  at = 0
  private scratch: Buffer | undefined

  constructor(readonly write: (line: string, isError: boolean) => void) {}

  flush(): void {}

  room(max: number): Buffer | undefined {
    if (max + 1 > BUFFER_BYTES) return undefined
    return (this.scratch ??= Buffer.allocUnsafe(BUFFER_BYTES))
  }

  done(end: number): void {
    this.write(this.scratch!.toString('utf8', 0, end), false)
  }
}

let processLines: LineBuffer | undefined

/** Make a stdio pipe's writes synchronous (what Node already does for files, and for pipes on Windows). */
function blockingIfPipe(stream: NodeJS.WriteStream): void {
  const handle = (stream as unknown as { _handle?: { setBlocking?: (on: boolean) => number } })._handle
  if (!stream.isTTY && typeof handle?.setBlocking === 'function') handle.setBlocking(true)
}

/**
 * Where stdout lines go. A regular file (a service manager's log file) is written straight through
 * its descriptor, synchronously as process.stdout writes a file too, without the stream's
 * per-write machinery around each flush. Pipes and terminals keep the stream, given a copy of the
 * bytes (a stream may hold on to a chunk after write returns).
 */
function stdoutSink(): ByteSink {
  let isFile = false
  try {
    isFile = fs.fstatSync(1).isFile()
  } catch {
    // No usable descriptor 1: the stream reports whatever goes wrong with it.
  }
  return isFile ? (bytes, length) => writeWhole(1, bytes, length) : (bytes, length) => process.stdout.write(Buffer.from(bytes.subarray(0, length)))
}

/** Write the first `length` bytes of `bytes` to a blocking descriptor; a write may take only part of them (rare for a file). */
export function writeWhole(fd: number, bytes: Uint8Array, length: number): void {
  for (let off = 0; off < length; ) off += fs.writeSync(fd, bytes, off, length - off)
}

/** The process-wide stdout/stderr writer, flushed on exit. */
function stdLines(): LineBuffer {
  if (!processLines) {
    blockingIfPipe(process.stdout)
    blockingIfPipe(process.stderr)
    const lines = new LineBuffer(stdoutSink(), process.stderr, flushLater)
    process.on('exit', () => lines.flush())
    processLines = lines
  }
  return processLines
}

// Encoding an access-log line into bytes, exactly as JSON.stringify would write its text in UTF-8.

/** The most bytes one UTF-16 unit of a string takes in a line: `\u001f` or a lone surrogate's `\udXXX`. */
const MAX_BYTES_PER_UNIT = 6

const HEX = Buffer.from('0123456789abcdef', 'latin1')

/** `s` as a JSON string (quoted) in UTF-8 at `pos` of `buf`; returns where it ends. Room: 2 + 6 × s.length. */
function putJsonString(buf: Buffer, pos: number, s: string): number {
  buf[pos++] = 0x22
  const n = s.length
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0x20 && c < 0x80) {
      // Printable ASCII, nearly every character of a line: one byte, a quote or backslash escaped.
      if (c === 0x22 || c === 0x5c) buf[pos++] = 0x5c
      buf[pos++] = c
    } else if (c < 0x20) {
      buf[pos++] = 0x5c
      if (c === 0x08) buf[pos++] = 0x62 // \b
      else if (c === 0x09) buf[pos++] = 0x74 // \t
      else if (c === 0x0a) buf[pos++] = 0x6e // \n
      else if (c === 0x0c) buf[pos++] = 0x66 // \f
      else if (c === 0x0d) buf[pos++] = 0x72 // \r
      else pos = putUnicodeEscape(buf, pos, c)
    } else if (c < 0x800) {
      buf[pos++] = 0xc0 | (c >> 6)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else if (c < 0xd800 || c > 0xdfff) {
      buf[pos++] = 0xe0 | (c >> 12)
      buf[pos++] = 0x80 | ((c >> 6) & 0x3f)
      buf[pos++] = 0x80 | (c & 0x3f)
    } else {
      const low = i + 1 < n ? s.charCodeAt(i + 1) : 0
      if (c <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        // A surrogate pair: one code point, four bytes.
        const cp = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00)
        buf[pos++] = 0xf0 | (cp >> 18)
        buf[pos++] = 0x80 | ((cp >> 12) & 0x3f)
        buf[pos++] = 0x80 | ((cp >> 6) & 0x3f)
        buf[pos++] = 0x80 | (cp & 0x3f)
        i++
      } else {
        // A lone surrogate, escaped as well-formed JSON.stringify does.
        buf[pos++] = 0x5c
        pos = putUnicodeEscape(buf, pos, c)
      }
    }
  }
  buf[pos++] = 0x22
  return pos
}

/** `uXXXX` (the backslash already written), lowercase hex as JSON.stringify writes it. */
function putUnicodeEscape(buf: Buffer, pos: number, c: number): number {
  buf[pos++] = 0x75
  buf[pos++] = HEX[(c >> 12) & 0xf]!
  buf[pos++] = HEX[(c >> 8) & 0xf]!
  buf[pos++] = HEX[(c >> 4) & 0xf]!
  buf[pos++] = HEX[c & 0xf]!
  return pos
}

/** ASCII text (a key and its punctuation, a number's text) at `pos`; returns where it ends. */
function putAscii(buf: Buffer, pos: number, s: string): number {
  for (let i = 0; i < s.length; i++) buf[pos++] = s.charCodeAt(i)
  return pos
}

/** The decimal digits of a non-negative safe integer at `pos`; returns where they end. */
function putDigits(buf: Buffer, pos: number, n: number): number {
  let end = pos + 1
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) end++
  for (let i = end - 1; i >= pos; i--) {
    const q = Math.floor(n / 10)
    buf[i] = 0x30 + (n - q * 10)
    n = q
  }
  return end
}

/** The most bytes putNumber writes: `-1.7976931348623157e+308` and the like. */
const MAX_NUMBER_BYTES = 24

/**
 * A number as JSON writes it (String(n); null when not finite) at `pos`. Integers and numbers of
 * whole tenths (the log's milliseconds) are written digit by digit: for a double that is the
 * nearest to k/10, with k below 10^15, the shortest text that reads back as it (what String
 * gives) is k's digits with a point before the last one.
 */
function putNumber(buf: Buffer, pos: number, n: number): number {
  if (n >= 0 && n < 1e14) {
    const tenths = Math.round(n * 10)
    if (tenths / 10 === n) {
      const whole = Math.floor(tenths / 10)
      pos = putDigits(buf, pos, whole)
      const tenth = tenths - whole * 10
      if (tenth !== 0) {
        buf[pos++] = 0x2e
        buf[pos++] = 0x30 + tenth
      }
      return pos
    }
  }
  return putAscii(buf, pos, Number.isFinite(n) ? `${n}` : 'null')
}

/** The text between an access-log line's fields. */
const URL_KEY = ',"url":'
const HOST_KEY = ',"host":'
const STATUS_KEY = ',"status":'
const CACHE_KEY = ',"cache":'
/** The most bytes of the request fields (method to cache) besides their strings' own text: keys, quotes, the status. */
const FIELD_KEYS_BYTES = URL_KEY.length + HOST_KEY.length + STATUS_KEY.length + CACHE_KEY.length + 4 * 2 + MAX_NUMBER_BYTES
const ORIGIN_MS_KEY = ',"originMs":'
const MS_KEY = ',"ms":'
const BYTES_KEY = ',"bytes":'
const ABORTED = ',"aborted":true}'
/** The most bytes of a line besides its opening and its request fields: the keys above and three numbers. */
const MAX_TAIL_BYTES = ORIGIN_MS_KEY.length + MS_KEY.length + BYTES_KEY.length + ABORTED.length + 3 * MAX_NUMBER_BYTES

/** How a logger made by createLogger writes an access-log line without an entry object. */
const REQUEST_LINE = Symbol('request line')
type RequestLineWriter = (method: string, url: string, host: string, status: number, cache: string, originMs: number | undefined, ms: number, bytes: number, aborted: boolean, finishedAt: number | undefined) => void

/**
 * Log one answered request: `{msg: 'request', method, url, host, status, cache, originMs, ms,
 * bytes, aborted}` (originMs left out when undefined, aborted when false). A logger from
 * createLogger writes the line straight from these values, the same text as for the entry
 * object; any other logger is given the entry. `finishedAt`, performance.now() as the request
 * finished, spares the line a clock read of its own for its time.
 */
export function logRequest(log: Logger, method: string, url: string, host: string, status: number, cache: string, originMs: number | undefined, ms: number, bytes: number, aborted: boolean, finishedAt?: number): void {
  const direct = (log as { [REQUEST_LINE]?: RequestLineWriter })[REQUEST_LINE]
  if (direct !== undefined) direct(method, url, host, status, cache, originMs, ms, bytes, aborted, finishedAt)
  else log({ msg: 'request', method, url, host, status, cache, originMs, ms, bytes, aborted: aborted || undefined })
}

export function createLogger(opts: { nodeId: string; write?: (line: string, isError: boolean) => void; silent?: boolean }): Logger {
  const sink: LineSink = opts.write ? new TextLines(opts.write) : stdLines()
  const write = opts.write ?? ((line: string, isError: boolean) => sink.write(line, isError))
  const node = JSON.stringify(opts.nodeId)

  // What every access-log line of one millisecond starts with, as bytes: its time is written over
  // the ISO text of the millisecond before (the same length, 24 characters, until the year 10000).
  const opening = (time: string) => Buffer.from(`{"time":"${time}","level":"info","node":${node},"msg":"request","method":`)
  const TIME_AT = '{"time":"'.length
  let openingTime = isoNow()
  let openingBytes = opening(openingTime)
  // The request's own fields (method to cache) as bytes, for the values of the line before: hits on
  // a hot URL repeat them all, and comparing them is cheaper than escaping and encoding them again.
  const last = { method: '', url: '', host: '', status: -1, cache: '' }
  const lastFieldsStore = Buffer.allocUnsafe(1024)
  let lastFields: Buffer | undefined

  const requestLine: RequestLineWriter = (method, url, host, status, cache, originMs, ms, bytes, aborted, finishedAt) => {
    if (opts.silent) return
    const time = finishedAt === undefined ? isoNow() : isoAt(finishedAt)
    if (time !== openingTime) {
      if (time.length === openingTime.length) openingBytes.write(time, TIME_AT, 'latin1')
      else openingBytes = opening(time)
      openingTime = time
    }
    const same = lastFields !== undefined && url === last.url && cache === last.cache && host === last.host && method === last.method && status === last.status
    const fieldsMax = same ? lastFields!.length : FIELD_KEYS_BYTES + (method.length + url.length + host.length + cache.length) * MAX_BYTES_PER_UNIT
    const max = openingBytes.length + fieldsMax + MAX_TAIL_BYTES
    // A line too long for the buffer (a URL of many kilobytes) is encoded on its own and written as text.
    const room = sink.room(max)
    const buf = room ?? Buffer.allocUnsafe(max)
    const start = room === undefined ? 0 : sink.at
    // Typed-array set, not Buffer#copy: copy builds a view of its source on every call.
    buf.set(openingBytes, start)
    let pos = start + openingBytes.length
    if (same) {
      buf.set(lastFields!, pos)
      pos += lastFields!.length
    } else {
      const fieldsAt = pos
      pos = putJsonString(buf, pos, method)
      pos = putJsonString(buf, putAscii(buf, pos, URL_KEY), url)
      pos = putJsonString(buf, putAscii(buf, pos, HOST_KEY), host)
      pos = putNumber(buf, putAscii(buf, pos, STATUS_KEY), status)
      pos = putJsonString(buf, putAscii(buf, pos, CACHE_KEY), cache)
      last.method = method
      last.url = url
      last.host = host
      last.status = status
      last.cache = cache
      lastFields = undefined
      if (pos - fieldsAt <= lastFieldsStore.length) {
        lastFields = lastFieldsStore.subarray(0, pos - fieldsAt)
        lastFields.set(buf.subarray(fieldsAt, pos))
      }
    }
    // The fields of every access-log line, in their order, written as jsonMembers would write them.
    if (originMs !== undefined) pos = putNumber(buf, putAscii(buf, pos, ORIGIN_MS_KEY), originMs)
    pos = putNumber(buf, putAscii(buf, pos, MS_KEY), ms)
    pos = putNumber(buf, putAscii(buf, pos, BYTES_KEY), bytes)
    if (aborted) pos = putAscii(buf, pos, ABORTED)
    else buf[pos++] = 0x7d
    if (room === undefined) write(buf.toString('utf8', 0, pos), false)
    else sink.done(pos)
  }
  const logEntry: Logger = (entry) => {
    if (opts.silent) return
    const level = (entry.level as string | undefined) ?? 'info'
    if ('time' in entry || 'level' in entry || 'node' in entry) {
      // The entry names a fixed field itself: an object spread keeps JSON's order and last-one-wins.
      write(`{${jsonMembers({ time: isoNow(), level, node: opts.nodeId, ...entry }).slice(1)}}`, level === 'error')
      return
    }
    // The common case: the fixed fields, then the entry's own.
    write(`{"time":"${isoNow()}","level":${jsonString(level)},"node":${node}${jsonMembers(entry)}}`, level === 'error')
  }
  return Object.assign(logEntry, { [REQUEST_LINE]: requestLine })
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = () => {}
