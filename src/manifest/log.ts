// The manifest code logs through this small function type rather than
// console.* so main.ts can route it into the process's structured log and
// tests can capture what was said (e.g. "N ops not delivered").

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export type ManifestLog = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void

/** One JSON line per message on stderr, the same shape as the rest of caje's logs. */
export const jsonLog: ManifestLog = (level, msg, fields) => {
  if (level === 'debug') return
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, component: 'manifest', msg, ...fields })}\n`)
}

export const silentLog: ManifestLog = () => {}

export { describeError } from '../vocabulary.ts'
