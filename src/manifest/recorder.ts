// Turns this node's cache events into manifest ops. The store emits events
// synchronously from its write path; submit() only queues, so recording never
// slows a response and a manifest outage never fails one.

import type { Kysely } from 'kysely'
import { type CacheStore, type StoreEvent, isMemoryOnlyIntegrity } from '../cache/types.ts'
import type { Database } from './database.ts'
import { describeError, jsonLog } from './log.ts'
import type { ManifestLog } from './log.ts'
import { heldBy, toEntryRecord } from './repositories.ts'
import type { NodeInfo } from './repositories.ts'
import { MAX_FORGOTTEN_PER_OP } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import type { ManifestWriter } from './writer.ts'

/** The op a store event becomes, or undefined when the manifest does not care. */
export function opForStoreEvent(event: StoreEvent, nodeId: string): ManifestOp | undefined {
  switch (event.type) {
    case 'stored':
      // Kept in memory only: not on disk, so not held here for peers to copy.
      if (isMemoryOnlyIntegrity(event.meta.integrity)) return undefined
      return { type: 'stored', nodeId, entry: toEntryRecord(event.meta) }
    case 'deleted':
      // Never announced, so nothing to take back.
      if (event.memoryOnly) return undefined
      // 'replaced' is followed by the 'stored' of the new copy, which
      // overwrites the entry; recording a delete in between would only make
      // the manifest flicker for other nodes' populate.
      if (event.reason === 'replaced') return undefined
      // A purge is one op, applied to the manifest by the primary in one
      // statement (the purge removes the entries and their holdings, and a
      // 'stored' op it covers is never recorded): one op per purged variant
      // would be 10,000 ops for a 10,000-object purge, on every node. A clear
      // is followed by its one 'node-cleared' op (node-actions.ts).
      if (event.reason === 'purged' || event.reason === 'cleared') return undefined
      return { type: 'deleted', nodeId, key: event.key, variant: event.variant }
    case 'integrity-failure':
    case 'write-failure':
      // The store follows an integrity failure with 'deleted' (reason
      // 'corrupt'); a failed write never became visible.
      return undefined
  }
}

/** Record every store / delete of this node in the manifest. Returns the unsubscribe function. */
export function recordStoreEvents(
  store: Pick<CacheStore, 'subscribe'>,
  writer: Pick<ManifestWriter, 'submit'>,
  nodeId: string,
  log: ManifestLog = jsonLog,
): () => void {
  return store.subscribe((event) => {
    try {
      const op = opForStoreEvent(event, nodeId)
      if (op) writer.submit(op)
    } catch (err) {
      // A listener that throws would break the store's emit loop for the others.
      log('error', 'could not record a cache event in the manifest', { event: event.type, error: describeError(err) })
    }
  })
}

export interface ReconcileOptions {
  store: Pick<CacheStore, 'list'>
  db: Kysely<Database>
  writer: Pick<ManifestWriter, 'submit' | 'flush'>
  nodeId: string
  /** Ops submitted before waiting for the writer to deliver them (backpressure). Default 5,000. */
  chunk?: number
  /** How long to wait for one chunk to be delivered. Default 10 minutes: the primary may be away. */
  flushTimeoutMs?: number
}

/**
 * Make the manifest's record of what this node holds match its disk, once at
 * start. Store events reach the manifest through the writer's queue, so a
 * node killed (SIGKILL, OOM, power) loses the ops still queued: bodies
 * committed in its last second are on disk but never recorded as held here,
 * and entries the disk store drops at start (expired, unreadable) are still
 * recorded. Without this the two stay apart until the entry is evicted.
 *
 * Nothing is ever dropped, whatever the sizes: an empty disk is one
 * 'node-cleared' op; holdings the disk no longer has go in
 * 'holdings-forgotten' ops of up to MAX_FORGOTTEN_PER_OP variants; and after
 * every `chunk` ops this waits for the writer to deliver them, so the
 * writer's bounded queue (which drops past its bound) never fills, and the
 * node's own heartbeat and store events keep their room.
 */
export async function reconcileHoldings(options: ReconcileOptions): Promise<{ recorded: number; forgotten: number }> {
  const chunk = Math.max(1, options.chunk ?? 5000)
  const flushTimeoutMs = options.flushTimeoutMs ?? 10 * 60_000
  const recordedHere = new Set((await heldBy(options.db, options.nodeId)).map((r) => `${r.key}\n${r.variant}`))
  const { entries } = await options.store.list({ limit: Number.MAX_SAFE_INTEGER })
  let pending = 0
  const submit = async (op: ManifestOp, weight = 1) => {
    options.writer.submit(op)
    pending += weight
    if (pending >= chunk) {
      pending = 0
      await options.writer.flush({ timeoutMs: flushTimeoutMs })
    }
  }
  if (entries.length === 0) {
    const forgotten = recordedHere.size
    if (forgotten > 0) await submit({ type: 'node-cleared', nodeId: options.nodeId })
    return { recorded: 0, forgotten }
  }
  let recorded = 0
  for (const meta of entries) {
    // Kept in memory only (stored since start): not held, and forgotten below if recorded.
    if (isMemoryOnlyIntegrity(meta.integrity)) continue
    if (recordedHere.delete(`${meta.key}\n${meta.variant}`)) continue
    await submit({ type: 'stored', nodeId: options.nodeId, entry: toEntryRecord(meta) })
    recorded++
  }
  let batch: Array<{ key: string; variant: string }> = []
  for (const id of recordedHere) {
    const [key, variant] = id.split('\n') as [string, string]
    batch.push({ key, variant })
    if (batch.length === MAX_FORGOTTEN_PER_OP) {
      await submit({ type: 'holdings-forgotten', nodeId: options.nodeId, entries: batch }, batch.length)
      batch = []
    }
  }
  if (batch.length > 0) await submit({ type: 'holdings-forgotten', nodeId: options.nodeId, entries: batch }, batch.length)
  return { recorded, forgotten: recordedHere.size }
}

/** How often a node announces itself. */
export const HEARTBEAT_INTERVAL_MS = 15_000
/** A node whose last heartbeat is older than this (four missed beats) is shown offline and may be forgotten. */
export const NODE_OFFLINE_AFTER_MS = 4 * HEARTBEAT_INTERVAL_MS

export interface HeartbeatOptions {
  writer: Pick<ManifestWriter, 'submit'>
  node: NodeInfo
  /** Default 15 s; populate treats nodes unseen for several intervals as gone. */
  intervalMs?: number
  now?: () => number
}

/** Announce this node (id, region, internal URL) now and every interval. Returns a stop function. */
export function startHeartbeat(options: HeartbeatOptions): () => void {
  const now = options.now ?? Date.now
  const beat = () => options.writer.submit({ type: 'node-heartbeat', node: options.node, at: now() })
  beat()
  const timer = setInterval(beat, options.intervalMs ?? HEARTBEAT_INTERVAL_MS)
  timer.unref()
  return () => clearInterval(timer)
}
