// Small pure formatters shared by the pages.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/**
 * A count as toLocaleString('en') writes it (`1,234,567`; a fraction to three places), without
 * Intl. ICU loads its locale data on the first number it formats: 25-45 ms of the event loop (up
 * to 158 ms on a loaded node, once inside the answer to a purge) and about 5 MB of memory kept for
 * good, which every node paid at start to spare the admin that wait, most of them never showing
 * an admin page at all.
 */
export function formatCount(n: number): string {
  // Beyond 2^53 (never a count here) the digits String() writes are not whole; ICU's are.
  if (!Number.isFinite(n) || Math.abs(n) >= Number.MAX_SAFE_INTEGER) return n.toLocaleString('en')
  const rounded = Math.round(Math.abs(n) * 1000) / 1000
  if (rounded === 0) return '0'
  const [whole = '0', fraction] = String(rounded).split('.')
  const grouped = whole.replace(/\B(?=(\d{3})+$)/g, ',')
  return `${n < 0 ? '-' : ''}${grouped}${fraction ? `.${fraction}` : ''}`
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '—'
  let v = n
  let u = 0
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${v}\u00a0B` : `${v < 10 ? v.toFixed(1) : Math.round(v)}\u00a0${UNITS[u]}`
}

/** `2025-03-01 14:05` in UTC, compact and sortable. */
export function formatTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ')
}

/** `14:05:09` in UTC, to the second (purge history per node; the full time is in its title). */
export function formatClock(ms: number): string {
  if (!Number.isFinite(ms)) return '—'
  return new Date(ms).toISOString().slice(11, 19)
}

/** How long after something another thing happened: `0.3 s`, `12 s`, `4m 2s`. */
export function formatLag(ms: number): string {
  const d = Math.max(0, ms)
  if (d < 10_000) return `${(d / 1000).toFixed(1)} s`
  return formatDuration(d)
}

/** Full ISO timestamp for title attributes. */
export function isoTime(ms: number | null | undefined): string | undefined {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return undefined
  return new Date(ms).toISOString()
}

/** `45s`, `12m`, `3h 20m`, `5d 4h`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m}m${s % 60 ? ` ${s % 60}s` : ''}`
  const h = Math.floor(m / 60)
  if (h < 48) return `${h}h${m % 60 ? ` ${m % 60}m` : ''}`
  const d = Math.floor(h / 24)
  return `${d}d${h % 24 ? ` ${h % 24}h` : ''}`
}

/** `3 min ago`, `in 2 h`, relative to now. */
export function formatRelative(ms: number | null | undefined, now: number): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  const d = ms - now
  if (Math.abs(d) < 5000) return 'just now'
  return d < 0 ? `${formatDuration(-d)} ago` : `in ${formatDuration(d)}`
}

export function formatRatio(r: number | null): string | undefined {
  if (r === null || !Number.isFinite(r)) return undefined
  return `${(r * 100).toFixed(1)}\u00a0%`
}
