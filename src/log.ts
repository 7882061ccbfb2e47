// Structured logs: one JSON object per line on stdout (errors on stderr).
// Secrets never reach a log line: callers pass only what is safe, and any
// field whose name looks like a credential is redacted here as a last guard.

export type Logger = (entry: Record<string, unknown>) => void

const SECRET_KEY = /pass(word)?|secret|token|authorization|cookie|credential/i

function redact(entry: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined
  for (const k in entry) {
    if (SECRET_KEY.test(k) && entry[k] !== undefined) {
      out ??= { ...entry }
      out[k] = '[redacted]'
    }
  }
  return out ?? entry
}

export function createLogger(opts: { nodeId: string; write?: (line: string, isError: boolean) => void; silent?: boolean }): Logger {
  const write = opts.write ?? ((line, isError) => (isError ? process.stderr : process.stdout).write(line + '\n'))
  return (entry) => {
    if (opts.silent) return
    const level = (entry.level as string | undefined) ?? 'info'
    write(JSON.stringify({ time: new Date().toISOString(), level, node: opts.nodeId, ...redact(entry) }), level === 'error')
  }
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = () => {}
