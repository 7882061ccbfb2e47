// The shape checks of the hot ops (statements.ts HOT_OP_TYPES) received over
// HTTP: a replica's batch is nearly all 'stored' ops. parseOps (ops.ts) runs
// them for every batch it checks, and the manifest's apply thread
// (apply-thread.ts) runs the very same functions from their source text, on
// a batch it parsed from the request's bytes itself. So every function here
// refers to nothing but its arguments and the other functions of this file
// (plain function declarations, no constants of the module).

import type { EntryRecord } from './repositories.ts'
import type { HotOp } from './statements.ts'

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function isStr(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0
}

export function isTime(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

export function isWhole(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0
}

/** A stored entry as a peer sent it, or what is wrong with it (the first field that does not fit, in the order below). */
export function parseEntry(v: unknown): EntryRecord | string {
  if (!isRecord(v)) return 'not an object'
  // Written out field by field: this runs for every stored op of every batch.
  if (!isStr(v.key)) return 'key must be a non-empty string'
  if (!isStr(v.url)) return 'url must be a non-empty string'
  if (!isStr(v.host)) return 'host must be a non-empty string'
  if (typeof v.variant !== 'string') return 'variant must be a string'
  if (typeof v.contentType !== 'string') return 'contentType must be a string'
  if (!isWhole(v.status)) return 'status must be a whole number'
  if (!isWhole(v.size)) return 'size must be a whole number'
  if (!isTime(v.storedAt)) return 'storedAt must be an epoch-ms number'
  if (!isTime(v.staleAt)) return 'staleAt must be an epoch-ms number'
  if (!isTime(v.deleteAt)) return 'deleteAt must be an epoch-ms number'
  const tags = v.tags
  if (!Array.isArray(tags)) return 'tags must be an array of strings'
  for (let i = 0; i < tags.length; i++) if (typeof tags[i] !== 'string') return 'tags must be an array of strings'
  const vary = v.varyHeaders
  if (!isRecord(vary)) return 'varyHeaders must be an object of strings'
  for (const k in vary) if (Object.hasOwn(vary, k) && typeof vary[k] !== 'string') return 'varyHeaders must be an object of strings'
  return {
    key: v.key,
    variant: v.variant,
    host: v.host,
    url: v.url,
    status: v.status,
    size: v.size,
    contentType: v.contentType,
    storedAt: v.storedAt,
    staleAt: v.staleAt,
    deleteAt: v.deleteAt,
    tags: tags.slice() as string[],
    varyHeaders: { ...(vary as Record<string, string>) },
  }
}

/**
 * One hot op as a peer sent it (`v` an object with a string `type`): the op, what is wrong
 * with it, or undefined when its type is not one of the hot ones (parseOps decides those).
 * `maxForgotten`: most variants one 'holdings-forgotten' op may name (MAX_FORGOTTEN_PER_OP).
 */
export function parseHotOp(v: Record<string, unknown>, maxForgotten: number): HotOp | string | undefined {
  switch (v.type) {
    case 'stored': {
      if (!isStr(v.nodeId)) return 'nodeId must be a string'
      const entry = parseEntry(v.entry)
      return typeof entry === 'string' ? `entry: ${entry}` : { type: 'stored', nodeId: v.nodeId, entry }
    }
    case 'deleted':
      if (!isStr(v.nodeId) || !isStr(v.key) || typeof v.variant !== 'string') return 'nodeId, key and variant must be strings'
      return { type: 'deleted', nodeId: v.nodeId, key: v.key, variant: v.variant }
    case 'holdings-forgotten': {
      if (!isStr(v.nodeId)) return 'nodeId must be a string'
      if (!Array.isArray(v.entries) || v.entries.length > maxForgotten) return `entries must be an array of at most ${maxForgotten} {key, variant}`
      const entries: Array<{ key: string; variant: string }> = []
      for (const e of v.entries as unknown[]) {
        if (!isRecord(e) || !isStr(e.key) || typeof e.variant !== 'string') return 'entries must be {key, variant} with string values'
        entries.push({ key: e.key, variant: e.variant })
      }
      return { type: 'holdings-forgotten', nodeId: v.nodeId, entries }
    }
    case 'node-cleared':
      if (!isStr(v.nodeId)) return 'nodeId must be a string'
      return { type: 'node-cleared', nodeId: v.nodeId }
    case 'node-heartbeat': {
      const n = v.node
      if (!isRecord(n) || !isStr(n.id) || typeof n.region !== 'string' || !isStr(n.internalUrl) || !isTime(n.startedAt)) {
        return 'node must be {id, region, internalUrl, startedAt}'
      }
      if (!isTime(v.at)) return 'at must be an epoch-ms number'
      return { type: 'node-heartbeat', node: { id: n.id, region: n.region, internalUrl: n.internalUrl, startedAt: n.startedAt }, at: v.at }
    }
    case 'purge-applied': {
      if (!isStr(v.nodeId) || !Number.isSafeInteger(v.purgeId) || (v.purgeId as number) < 0) return 'nodeId must be a string and purgeId a whole number'
      if (v.applied === undefined) return { type: 'purge-applied', nodeId: v.nodeId, purgeId: v.purgeId as number }
      if (!Array.isArray(v.applied) || v.applied.length > 10_000) return 'applied must be an array of at most 10000 {id, at}'
      const applied: Array<{ id: number; at: number }> = []
      for (const a of v.applied as unknown[]) {
        if (!isRecord(a) || !Number.isSafeInteger(a.id) || (a.id as number) < 1 || !isTime(a.at)) return 'applied must be {id, at} with a whole purge id and an epoch-ms time'
        applied.push({ id: a.id as number, at: a.at as number })
      }
      return { type: 'purge-applied', nodeId: v.nodeId, purgeId: v.purgeId as number, applied }
    }
    default:
      return undefined
  }
}

/**
 * A 'stored' op as a compact batch carries it (batch-body.ts COMPACT_CONTENT_TYPE): an array,
 * `["s", nodeId, key, variant, host, url, status, size, contentType, storedAt, staleAt,
 * deleteAt, tags, varyHeaders]`, read back into the op's object form (parseHotOp checks it),
 * or what is wrong with its shape. The primary reads it with the same checks as the object.
 */
export function expandStored(v: unknown[]): Record<string, unknown> | string {
  if (v.length !== 14 || v[0] !== 's') return 'a stored op as an array is ["s", nodeId, key, variant, host, url, status, size, contentType, storedAt, staleAt, deleteAt, tags, varyHeaders]'
  return {
    type: 'stored',
    nodeId: v[1],
    entry: { key: v[2], variant: v[3], host: v[4], url: v[5], status: v[6], size: v[7], contentType: v[8], storedAt: v[9], staleAt: v[10], deleteAt: v[11], tags: v[12], varyHeaders: v[13] },
  }
}

/**
 * The list of ops of a parsed body: `ops` of the JSON form, `c` of the compact one (its stored
 * ops arrays, see expandStored; every other op an object as in the JSON form). Undefined when
 * the body has no such list.
 */
export function opsListOf(input: unknown, compact: boolean): unknown[] | undefined {
  if (!isRecord(input)) return undefined
  const list = compact ? input.c : input.ops
  return Array.isArray(list) ? list : undefined
}

/**
 * A batch's ops when every one is a hot op of the right shape, else undefined (then parseOps
 * decides: it skips unknown types, checks the other kinds and says what is wrong). `input` is
 * the parsed body, in the compact form when `compact`; `maxOps` and `maxForgotten` as parseOps takes them.
 */
export function parseHotBatch(input: unknown, compact: boolean, maxOps: number, maxForgotten: number): HotOp[] | undefined {
  const list = opsListOf(input, compact)
  if (list === undefined || list.length > maxOps) return undefined
  const ops: HotOp[] = []
  for (let i = 0; i < list.length; i++) {
    let v: unknown = list[i]
    if (compact && Array.isArray(v)) v = expandStored(v)
    if (!isRecord(v)) return undefined
    const op = parseHotOp(v, maxForgotten)
    if (op === undefined || typeof op === 'string') return undefined
    ops.push(op)
  }
  return ops
}
