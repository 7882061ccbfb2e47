// Which node may write the manifest, followed while the process runs.
//
// LiteFS tells a node it is a replica by the file `<mount>/.primary`, whose
// content is the current primary's hostname; on the primary the file does not
// exist. The primary changes on deploys and failures, so the file is watched
// (fs.watch for speed) and also polled (FUSE mounts do not always deliver
// inotify events). Without LiteFS every node is "primary": all of them write
// the shared SQLite file directly.

import fs from 'node:fs'
import path from 'node:path'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'

export type ClusterRole =
  | { kind: 'primary' }
  /** primaryHost/primaryUrl are undefined while `.primary` exists but is still empty. */
  | { kind: 'replica'; primaryHost: string | undefined; primaryUrl: string | undefined }

export type RoleListener = (role: ClusterRole, previous: ClusterRole) => void

export interface RoleSource {
  current(): ClusterRole
  /** Called on every change of role or of primary. Returns an unsubscribe function. */
  subscribe(listener: RoleListener): () => void
}

export interface PrimaryWatcher extends RoleSource {
  /** Re-read `.primary` now (the poll does this every second). */
  refresh(): Promise<void>
  close(): void
}

export const PRIMARY_FILE = '.primary'

/** `http://{host}:{port}` → `http://machine-1:8080`; no trailing slash. */
export function primaryUrlFor(template: string, host: string, port: number): string {
  return template.replaceAll('{host}', host).replaceAll('{port}', String(port)).replace(/\/+$/, '')
}

/** The role as `<litefsDir>/.primary` says it is right now. */
export function readRole(litefsDir: string, primaryUrlTemplate: string, port: number): ClusterRole {
  let content: string
  try {
    content = fs.readFileSync(path.join(litefsDir, PRIMARY_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'primary' }
    throw err
  }
  return roleFromContent(content, primaryUrlTemplate, port)
}

function roleFromContent(content: string, template: string, port: number): ClusterRole {
  const host = content.trim()
  if (!host) return { kind: 'replica', primaryHost: undefined, primaryUrl: undefined }
  return { kind: 'replica', primaryHost: host, primaryUrl: primaryUrlFor(template, host, port) }
}

export function sameRole(a: ClusterRole, b: ClusterRole): boolean {
  if (a.kind !== b.kind) return false
  return a.kind === 'primary' || (b.kind === 'replica' && a.primaryHost === b.primaryHost && a.primaryUrl === b.primaryUrl)
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

export interface WatchPrimaryOptions {
  litefsDir: string
  primaryUrlTemplate: string
  /** Port the primary's caje listens on (the same on every node). */
  port: number
  pollIntervalMs?: number
  log?: ManifestLog
}

export function watchPrimary(options: WatchPrimaryOptions): PrimaryWatcher {
  const log = options.log ?? jsonLog
  const file = path.join(options.litefsDir, PRIMARY_FILE)
  const listeners = new Set<RoleListener>()
  let closed = false
  let reading: Promise<void> | undefined
  let again = false

  let role: ClusterRole
  try {
    role = readRole(options.litefsDir, options.primaryUrlTemplate, options.port)
  } catch (err) {
    // Unreadable (not missing) .primary: assuming primary could make a
    // replica write to a LiteFS file, so start as a replica that waits.
    log('error', 'cannot read the LiteFS .primary file; acting as a replica until it can be read', { file, error: describeError(err) })
    role = { kind: 'replica', primaryHost: undefined, primaryUrl: undefined }
  }
  if (!fs.existsSync(options.litefsDir)) {
    log('warn', 'CAJE_LITEFS_DIR does not exist (is LiteFS mounted?); acting as primary until a .primary file appears', { dir: options.litefsDir })
  }
  log('info', 'manifest role', describeRole(role))

  const set = (next: ClusterRole) => {
    if (closed || sameRole(role, next)) return
    const previous = role
    role = next
    log('info', 'manifest role changed', { ...describeRole(next), previous: previous.kind })
    for (const listener of listeners) {
      try {
        listener(next, previous)
      } catch (err) {
        log('error', 'role change listener failed', { error: describeError(err) })
      }
    }
  }

  const readOnce = async () => {
    try {
      const content = await fs.promises.readFile(file, 'utf8')
      const next = roleFromContent(content, options.primaryUrlTemplate, options.port)
      // LiteFS may truncate before it writes: an empty file is "replica, primary
      // not known yet", but it must not forget a primary already known.
      if (next.kind === 'replica' && next.primaryHost === undefined && role.kind === 'replica') return
      set(next)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') set({ kind: 'primary' })
      else log('warn', 'cannot read the LiteFS .primary file; keeping the current role', { file, error: describeError(err) })
    }
  }

  // Serialise reads; a change seen during a read triggers one more.
  const refresh = (): Promise<void> => {
    if (reading) {
      again = true
      return reading
    }
    reading = (async () => {
      do {
        again = false
        await readOnce()
      } while (again && !closed)
    })().finally(() => {
      reading = undefined
    })
    return reading
  }

  let watcher: fs.FSWatcher | undefined
  try {
    // Watch the directory, not the file: the file comes and goes.
    watcher = fs.watch(options.litefsDir, { persistent: false }, (_event, name) => {
      if (name === null || name === PRIMARY_FILE) void refresh()
    })
    watcher.on('error', (err) => {
      log('debug', 'fs.watch on the LiteFS dir failed; polling only', { error: describeError(err) })
      watcher?.close()
      watcher = undefined
    })
  } catch (err) {
    log('debug', 'fs.watch is not available on the LiteFS dir; polling only', { error: describeError(err) })
  }
  const poll = setInterval(() => void refresh(), options.pollIntervalMs ?? 1000)
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
      watcher?.close()
      listeners.clear()
    },
  }
}

/** The role source for a config: watched under LiteFS, always primary without it. */
export function createRoleSource(
  config: { litefsDir: string | undefined; primaryUrlTemplate: string; port: number },
  log?: ManifestLog,
): PrimaryWatcher {
  if (!config.litefsDir) return staticPrimary()
  return watchPrimary({ litefsDir: config.litefsDir, primaryUrlTemplate: config.primaryUrlTemplate, port: config.port, log })
}

function describeRole(role: ClusterRole): Record<string, unknown> {
  return role.kind === 'primary' ? { role: 'primary' } : { role: 'replica', primaryHost: role.primaryHost, primaryUrl: role.primaryUrl }
}
