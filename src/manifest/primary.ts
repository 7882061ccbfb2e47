// Which node may write the manifest, followed while the process runs.
//
// Under LiteFS the role comes from LiteFS's own HTTP API (default
// http://localhost:20202, CAJE_LITEFS_API), never from the `.primary` file:
// LiteFS removes that file both when the node is primary and when it cannot
// determine or reach a primary (a failover in progress, or no candidate up),
// so a missing file cannot tell "I write" from "nobody knows who writes".
// The API says it outright:
//
//   GET /info    {"isPrimary":bool, "candidate":bool, "primary":{"hostname":""}, ...}
//   GET /events  one JSON object per line, for as long as the connection lasts:
//                {"type":"init","data":{"isPrimary":bool,"hostname":"..."}} first,
//                then {"type":"primaryChange","data":{...}} on every change
//                (and "tx" events, which caje ignores).
//
// Three states follow from it: primary (write directly), replica of a known
// primary (send writes there), and replica whose primary is unknown (queue
// writes, answer admin writes 503) — the last is also where a node waits
// whenever LiteFS itself cannot be asked. Without LiteFS every node is
// "primary": all of them write the shared SQLite file directly.

import http from 'node:http'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'

export type ClusterRole =
  | { kind: 'primary' }
  /**
   * Not primary. primaryHost/primaryUrl are undefined while no primary is
   * known (PRIMARY_UNKNOWN): manifest writes wait in the queue and admin
   * writes answer 503 until LiteFS names one.
   */
  | { kind: 'replica'; primaryHost: string | undefined; primaryUrl: string | undefined }

/** Not primary, primary unknown: LiteFS has no primary for us (failover, no candidate) or cannot be asked. */
export const PRIMARY_UNKNOWN: ClusterRole = Object.freeze({ kind: 'replica', primaryHost: undefined, primaryUrl: undefined })

export type RoleListener = (role: ClusterRole, previous: ClusterRole) => void

export interface RoleSource {
  current(): ClusterRole
  /** Called on every change of role or of primary. Returns an unsubscribe function. */
  subscribe(listener: RoleListener): () => void
}

export interface PrimaryWatcher extends RoleSource {
  /** Ask LiteFS now (the poll does this every few seconds). */
  refresh(): Promise<void>
  close(): void
}

/** Where LiteFS's HTTP API listens by default (litefs.yml `http.addr`, ":20202"). */
export const DEFAULT_LITEFS_API = 'http://localhost:20202'

/** `http://{host}:{port}` → `http://machine-1:8080`; no trailing slash. */
export function primaryUrlFor(template: string, host: string, port: number): string {
  return template.replaceAll('{host}', host).replaceAll('{port}', String(port)).replace(/\/+$/, '')
}

export function sameRole(a: ClusterRole, b: ClusterRole): boolean {
  if (a.kind !== b.kind) return false
  return a.kind === 'primary' || (b.kind === 'replica' && a.primaryHost === b.primaryHost && a.primaryUrl === b.primaryUrl)
}

export function isPrimaryUnknown(role: ClusterRole): boolean {
  return role.kind === 'replica' && role.primaryUrl === undefined
}

/** What LiteFS reports about this node, from /info or an init/primaryChange event. */
export interface LitefsPrimaryStatus {
  isPrimary: boolean
  /** The primary's lease hostname; empty or absent while no primary is known. */
  hostname: string | undefined
}

export function roleFromStatus(status: LitefsPrimaryStatus, template: string, port: number): ClusterRole {
  if (status.isPrimary) return { kind: 'primary' }
  const host = status.hostname?.trim()
  if (!host) return PRIMARY_UNKNOWN
  return { kind: 'replica', primaryHost: host, primaryUrl: primaryUrlFor(template, host, port) }
}

/** `GET /info` → the status, or an error naming what is wrong. */
export function parseInfo(body: unknown): LitefsPrimaryStatus {
  const info = body as { isPrimary?: unknown; primary?: { hostname?: unknown } } | null
  if (typeof info !== 'object' || info === null || typeof info.isPrimary !== 'boolean') {
    throw new Error('LiteFS /info answered without a boolean "isPrimary" (is CAJE_LITEFS_API the LiteFS HTTP API, LiteFS 0.5 or later?)')
  }
  const hostname = typeof info.primary?.hostname === 'string' ? info.primary.hostname : undefined
  return { isPrimary: info.isPrimary, hostname }
}

/** One `/events` line → the status it carries, or undefined for events that say nothing about the primary. */
export function parseEvent(line: string): LitefsPrimaryStatus | undefined {
  const event = JSON.parse(line) as { type?: unknown; data?: { isPrimary?: unknown; hostname?: unknown } } | null
  if (!event || (event.type !== 'init' && event.type !== 'primaryChange')) return undefined
  if (typeof event.data?.isPrimary !== 'boolean') throw new Error(`LiteFS "${String(event.type)}" event without a boolean "isPrimary"`)
  return { isPrimary: event.data.isPrimary, hostname: typeof event.data.hostname === 'string' ? event.data.hostname : undefined }
}

/** Ask LiteFS once (`GET <api>/info`). Throws when LiteFS cannot be reached or answers oddly. */
export async function fetchLitefsStatus(apiUrl: string, timeoutMs = 5_000): Promise<LitefsPrimaryStatus> {
  const url = `${apiUrl.replace(/\/+$/, '')}/info`
  let res: Response
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' })
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause
    throw new Error(`cannot reach the LiteFS API at ${url} (${describeError(cause ?? err)}); is LiteFS running, and is CAJE_LITEFS_API its http address?`)
  }
  const text = await res.text()
  if (!res.ok) throw new Error(`the LiteFS API at ${url} answered ${res.status}: ${text.slice(0, 200)}`)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    throw new Error(`the LiteFS API at ${url} did not answer JSON; is CAJE_LITEFS_API the LiteFS HTTP API?`)
  }
  return parseInfo(body)
}

/** A node that always writes directly (no LiteFS: local runs, tests). */
export function staticPrimary(): PrimaryWatcher {
  const role: ClusterRole = { kind: 'primary' }
  return {
    current: () => role,
    subscribe: () => () => {},
    refresh: async () => {},
    close: () => {},
  }
}

export interface WatchLitefsOptions {
  /** LiteFS's HTTP API base URL (CAJE_LITEFS_API). */
  apiUrl: string
  primaryUrlTemplate: string
  /** Port the primary's caje listens on (the same on every node). */
  port: number
  /** How often /info is asked as well, in case an event was missed. Default 5000. */
  pollIntervalMs?: number
  /** Wait before reconnecting a lost /events stream. Default 1000. */
  reconnectDelayMs?: number
  requestTimeoutMs?: number
  log?: ManifestLog
}

/**
 * Follow LiteFS's view of this node: the /events stream for prompt changes,
 * /info at start and on a poll. Starts as PRIMARY_UNKNOWN; call refresh() and
 * await it to know the role before serving.
 */
export function watchLitefs(options: WatchLitefsOptions): PrimaryWatcher {
  const log = options.log ?? jsonLog
  const apiUrl = options.apiUrl.replace(/\/+$/, '')
  const pollIntervalMs = options.pollIntervalMs ?? 5_000
  const reconnectDelayMs = options.reconnectDelayMs ?? 1_000
  const requestTimeoutMs = options.requestTimeoutMs ?? 5_000
  const listeners = new Set<RoleListener>()
  let role: ClusterRole = PRIMARY_UNKNOWN
  let closed = false
  // Bumped by every stream event: an /info answer that was asked before the
  // latest event is older than what the stream said, and is dropped.
  let generation = 0
  let unreachableLogged = false

  const set = (next: ClusterRole, source: string) => {
    if (closed || sameRole(role, next)) return
    const previous = role
    role = next
    log(next.kind === 'primary' || !isPrimaryUnknown(next) ? 'info' : 'warn', 'manifest role changed', { ...describeRole(next), previous: describeRole(previous).role, source })
    for (const listener of listeners) {
      try {
        listener(next, previous)
      } catch (err) {
        log('error', 'role change listener failed', { error: describeError(err) })
      }
    }
  }

  const refresh = async (): Promise<void> => {
    const asked = generation
    try {
      const status = await fetchLitefsStatus(apiUrl, requestTimeoutMs)
      if (unreachableLogged) log('info', 'the LiteFS API answers again', { api: apiUrl })
      unreachableLogged = false
      if (generation === asked) set(roleFromStatus(status, options.primaryUrlTemplate, options.port), 'info')
    } catch (err) {
      // Nobody can say who writes: never guess "primary". Writes wait in the queue.
      if (!unreachableLogged) log('error', 'cannot ask LiteFS for this node\'s role; acting as a replica whose primary is unknown', { api: apiUrl, error: describeError(err) })
      unreachableLogged = true
      if (generation === asked) set(PRIMARY_UNKNOWN, 'info')
    }
  }

  let request: http.ClientRequest | undefined
  let reconnectTimer: NodeJS.Timeout | undefined
  let streamLossLogged = false
  const connect = () => {
    reconnectTimer = undefined
    if (closed) return
    let buffered = ''
    let settled = false
    const lost = (why: string) => {
      if (settled) return
      settled = true
      request = undefined
      if (closed) return
      if (!streamLossLogged) log('warn', 'LiteFS event stream lost; asking /info and reconnecting', { api: apiUrl, reason: why })
      streamLossLogged = true
      void refresh()
      reconnectTimer = setTimeout(connect, reconnectDelayMs)
      reconnectTimer.unref()
    }
    // node:http rather than fetch: fetch's body timeout would cut a quiet stream.
    const req = http.get(`${apiUrl}/events`, { headers: { accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        return lost(`GET /events answered ${res.statusCode}`)
      }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        buffered += chunk
        let nl: number
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim()
          buffered = buffered.slice(nl + 1)
          if (!line) continue
          let status: LitefsPrimaryStatus | undefined
          try {
            status = parseEvent(line)
          } catch (err) {
            log('warn', 'unreadable LiteFS event; ignored', { error: describeError(err), line: line.slice(0, 200) })
            continue
          }
          if (!status) continue
          if (streamLossLogged) log('info', 'LiteFS event stream connected again', { api: apiUrl })
          streamLossLogged = false
          generation++
          set(roleFromStatus(status, options.primaryUrlTemplate, options.port), 'events')
        }
      })
      res.on('end', () => lost('the stream ended'))
      res.on('error', (err) => lost(describeError(err)))
      res.on('close', () => lost('the connection closed'))
    })
    req.on('error', (err) => lost(describeError(err)))
    request = req
  }
  connect()

  const poll = setInterval(() => void refresh(), pollIntervalMs)
  poll.unref()

  return {
    current: () => role,
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    refresh,
    close() {
      closed = true
      clearInterval(poll)
      if (reconnectTimer) clearTimeout(reconnectTimer)
      request?.destroy()
      listeners.clear()
    },
  }
}

/** The role source for a config: LiteFS's API under LiteFS, always primary without it. */
export function createRoleSource(
  config: { litefsDir: string | undefined; litefsApi: string; primaryUrlTemplate: string; port: number },
  log?: ManifestLog,
): PrimaryWatcher {
  if (!config.litefsDir) return staticPrimary()
  return watchLitefs({ apiUrl: config.litefsApi, primaryUrlTemplate: config.primaryUrlTemplate, port: config.port, log })
}

export function describeRole(role: ClusterRole): { role: 'primary' | 'replica' | 'replica, primary unknown'; primaryHost?: string; primaryUrl?: string } {
  if (role.kind === 'primary') return { role: 'primary' }
  if (role.primaryUrl === undefined) return { role: 'replica, primary unknown' }
  return { role: 'replica', primaryHost: role.primaryHost, primaryUrl: role.primaryUrl }
}
