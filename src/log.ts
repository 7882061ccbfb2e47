// Structured logs: one JSON object per line on stdout (errors on stderr).
// Secrets never reach a log line: callers pass only what is safe, and any
// field whose name looks like a credential is redacted here as a last guard.
//
// Lines to stdout are buffered and written together every 10 ms (or sooner
// when 64 KiB pile up): one write for a few hundred access-log lines under
// load instead of one synchronous write each, which cost about a third of a
// small hit's throughput. Once per turn of the event loop was not enough: a
// turn answers only a handful of requests, and the write per turn still cost
// about a microsecond per line. Errors are written at once, after what was
// queued before them. What is still buffered is written when the process
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

/** Flush the buffer at once past this many characters (bounds memory between flushes). */
const FLUSH_AT_CHARS = 64 * 1024
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

export interface LineWriter {
  /** Queue one line (without its newline). Errors are written before this returns. */
  write(line: string, isError: boolean): void
  /** Write out everything queued, synchronously. */
  flush(): void
}

/** Runs `flush` once, later (FLUSH_AFTER_MS), without keeping the process alive for it. */
export type FlushScheduler = (flush: () => void) => void

const flushLater: FlushScheduler = (flush) => {
  setTimeout(flush, FLUSH_AFTER_MS).unref()
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
  let pending = ''
  let scheduled = false
  const flush = (): void => {
    scheduled = false
    if (pending === '') return
    const chunk = pending
    pending = ''
    out.write(chunk)
  }
  return {
    write(line, isError) {
      if (isError) {
        // Keep the order of what was logged before it.
        flush()
        err.write(line + '\n')
        return
      }
      pending += line + '\n'
      if (pending.length >= FLUSH_AT_CHARS) flush()
      else if (!scheduled) {
        scheduled = true
        schedule(flush)
      }
    },
    flush,
  }
}

let processLines: LineWriter | undefined

/** Make a stdio pipe's writes synchronous (what Node already does for files, and for pipes on Windows). */
function blockingIfPipe(stream: NodeJS.WriteStream): void {
  const handle = (stream as unknown as { _handle?: { setBlocking?: (on: boolean) => number } })._handle
  if (!stream.isTTY && typeof handle?.setBlocking === 'function') handle.setBlocking(true)
}

/**
 * Where stdout lines go. A regular file (a service manager's log file) is written straight through
 * its descriptor, synchronously as process.stdout writes a file too, without the stream's
 * per-write machinery around each flush. Pipes and terminals keep the stream.
 */
function stdoutSink(): { write(chunk: string): unknown } {
  let isFile = false
  try {
    isFile = fs.fstatSync(1).isFile()
  } catch {
    // No usable descriptor 1: the stream reports whatever goes wrong with it.
  }
  return isFile ? { write: (chunk: string) => writeWhole(1, chunk) } : process.stdout
}

/**
 * Write all of `chunk` to a blocking descriptor. The string is handed to the write as it is:
 * encoding it into a Buffer first cost more than the write itself. A write may take only part
 * of it (rare for a file); the rest goes on from that byte offset.
 */
export function writeWhole(fd: number, chunk: string): void {
  const written = fs.writeSync(fd, chunk)
  if (written === Buffer.byteLength(chunk)) return
  const bytes = Buffer.from(chunk)
  for (let off = written; off < bytes.length; ) off += fs.writeSync(fd, bytes, off)
}

/** The process-wide stdout/stderr writer, flushed on exit. */
function stdLines(): LineWriter {
  if (!processLines) {
    blockingIfPipe(process.stdout)
    blockingIfPipe(process.stderr)
    const lines = bufferedLines(stdoutSink())
    process.on('exit', () => lines.flush())
    processLines = lines
  }
  return processLines
}

/** A number as JSON writes it. */
function jsonNumber(n: number): string {
  return Number.isFinite(n) ? `${n}` : 'null'
}

/** How a logger made by createLogger writes an access-log line without an entry object. */
const REQUEST_LINE = Symbol('request line')
type RequestLineWriter = (method: string, url: string, host: string, status: number, cache: string, originMs: number | undefined, ms: number, bytes: number, aborted: boolean) => void

/**
 * Log one answered request: `{msg: 'request', method, url, host, status, cache, originMs, ms,
 * bytes, aborted}` (originMs left out when undefined, aborted when false). A logger from
 * createLogger writes the line straight from these values, the same text as for the entry
 * object; any other logger is given the entry.
 */
export function logRequest(log: Logger, method: string, url: string, host: string, status: number, cache: string, originMs: number | undefined, ms: number, bytes: number, aborted: boolean): void {
  const direct = (log as { [REQUEST_LINE]?: RequestLineWriter })[REQUEST_LINE]
  if (direct !== undefined) direct(method, url, host, status, cache, originMs, ms, bytes, aborted)
  else log({ msg: 'request', method, url, host, status, cache, originMs, ms, bytes, aborted: aborted || undefined })
}

export function createLogger(opts: { nodeId: string; write?: (line: string, isError: boolean) => void; silent?: boolean }): Logger {
  const write = opts.write ?? ((line: string, isError: boolean) => stdLines().write(line, isError))
  const node = JSON.stringify(opts.nodeId)
  // What every access-log line of one millisecond starts with.
  let prefixTime = ''
  let prefix = ''
  // The request's own fields (method to cache) as text, for the values of the line before: hits on
  // a hot URL repeat them all, and comparing them is cheaper than escaping and joining them again.
  const last = { method: '', url: '', host: '', status: -1, cache: '', text: '' }
  const requestLine: RequestLineWriter = (method, url, host, status, cache, originMs, ms, bytes, aborted) => {
    if (opts.silent) return
    const time = isoNow()
    if (time !== prefixTime) {
      prefixTime = time
      prefix = `{"time":"${time}","level":"info","node":${node},"msg":"request","method":`
    }
    if (url !== last.url || cache !== last.cache || host !== last.host || method !== last.method || status !== last.status) {
      last.method = method
      last.url = url
      last.host = host
      last.status = status
      last.cache = cache
      last.text = `${jsonString(method)},"url":${jsonString(url)},"host":${jsonString(host)},"status":${jsonNumber(status)},"cache":${jsonString(cache)}`
    }
    // The fields of every access-log line, in their order, written as jsonMembers would write them.
    const origin = originMs === undefined ? '' : `,"originMs":${jsonNumber(originMs)}`
    write(`${prefix}${last.text}${origin},"ms":${jsonNumber(ms)},"bytes":${jsonNumber(bytes)}${aborted ? ',"aborted":true' : ''}}`, false)
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
