// Structured logs: one JSON object per line on stdout (errors on stderr).
// Secrets never reach a log line: callers pass only what is safe, and any
// field whose name looks like a credential is redacted here as a last guard.
//
// Lines to stdout are buffered and written together once per turn of the
// event loop (or sooner when 64 KiB pile up): one write for a few dozen
// access-log lines instead of one synchronous write each, which cost about a
// third of a small hit's throughput. Errors are written at once. What is still
// buffered is written when the process exits (process.exit, end of the loop);
// a SIGKILL loses at most the lines of the current turn.
//
// stdout and stderr are made blocking when they are pipes (a log collector,
// `caje | tee`): Node writes to a full pipe asynchronously on Linux, and
// whatever waits in that queue is dropped by process.exit. Blocking costs
// nothing while the reader keeps up (one write per turn) and makes a stalled
// reader slow caje down instead of growing its memory, as files and terminals
// already do.

import type { Logger } from './vocabulary.ts'

export type { Logger }

const SECRET_KEY = /pass(word)?|secret|token|authorization|cookie|credential/i

/** Flush the buffer at once past this many characters (bounds memory between turns). */
const FLUSH_AT_CHARS = 64 * 1024

/** Whether a field name looks like a credential; names repeat on every line, so each is tested once. */
const secretNames = new Map<string, boolean>()
function isSecretName(name: string): boolean {
  let secret = secretNames.get(name)
  if (secret === undefined) {
    secret = SECRET_KEY.test(name)
    // Field names come from code, not from clients; the bound is only a safety net.
    if (secretNames.size < 1000) secretNames.set(name, secret)
  }
  return secret
}

function redact(entry: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined
  for (const k in entry) {
    if (entry[k] !== undefined && isSecretName(k)) {
      out ??= { ...entry }
      out[k] = '[redacted]'
    }
  }
  return out ?? entry
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

/**
 * Lines batched per event-loop turn into one write on `out`. Writes to files, pipes and
 * terminals are synchronous in Node on Linux, so a flush never leaves bytes in flight.
 */
export function bufferedLines(out: { write(chunk: string): unknown } = process.stdout, err: { write(chunk: string): unknown } = process.stderr): LineWriter {
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
        setImmediate(flush)
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

/** The process-wide stdout/stderr writer, flushed on exit. */
function stdLines(): LineWriter {
  if (!processLines) {
    blockingIfPipe(process.stdout)
    blockingIfPipe(process.stderr)
    const lines = bufferedLines()
    process.on('exit', () => lines.flush())
    processLines = lines
  }
  return processLines
}

export function createLogger(opts: { nodeId: string; write?: (line: string, isError: boolean) => void; silent?: boolean }): Logger {
  const write = opts.write ?? ((line: string, isError: boolean) => stdLines().write(line, isError))
  const node = JSON.stringify(opts.nodeId)
  return (entry) => {
    if (opts.silent) return
    const level = (entry.level as string | undefined) ?? 'info'
    if ('time' in entry || 'level' in entry || 'node' in entry) {
      write(JSON.stringify({ time: isoNow(), level, node: opts.nodeId, ...redact(entry) }), level === 'error')
      return
    }
    // The common case (every access-log line): the fixed fields written as text, the entry's own
    // after them; the same JSON as the object spread above, without building that object.
    const fields = JSON.stringify(redact(entry))
    write(`{"time":"${isoNow()}","level":${JSON.stringify(level)},"node":${node}${fields === '{}' ? '}' : `,${fields.slice(1)}`}`, level === 'error')
  }
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = () => {}
