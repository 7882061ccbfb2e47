import { describe, expect, it, vi } from 'vitest'
import type { EntryMeta, StoreEvent } from '../cache/types.ts'
import type { ManifestOp } from './ops.ts'
import { opForStoreEvent, recordStoreEvents, startHeartbeat } from './recorder.ts'
import { captureLog, entry } from './test-helpers.ts'

const meta: EntryMeta = {
  ...entry({ url: 'https://ex.com/a', tags: ['t'] }),
  headers: { 'content-type': 'text/html', etag: '"x"' },
  policy: { big: 'object' },
  integrity: 'sha512-abc',
}

function fakeStore() {
  const listeners = new Set<(e: StoreEvent) => void>()
  return {
    subscribe(l: (e: StoreEvent) => void) {
      listeners.add(l)
      return () => void listeners.delete(l)
    },
    emit(e: StoreEvent) {
      for (const l of listeners) l(e)
    },
    listeners,
  }
}

describe('recorder', () => {
  it('maps store events to ops, keeping only what the manifest stores', () => {
    const op = opForStoreEvent({ type: 'stored', meta }, 'n1')
    expect(op).toEqual({ type: 'stored', nodeId: 'n1', entry: entry({ url: 'https://ex.com/a', tags: ['t'] }) })
    expect(JSON.stringify(op)).not.toContain('policy')
    // The stored metadata is frozen: the op shares its tags and vary values instead of copying them.
    const stored = op as Extract<ManifestOp, { type: 'stored' }>
    expect(stored.entry.tags).toBe(meta.tags)
    expect(stored.entry.varyHeaders).toBe(meta.varyHeaders)
    expect(opForStoreEvent({ type: 'deleted', key: 'k', variant: 'v', reason: 'evicted' }, 'n1')).toEqual({
      type: 'deleted',
      nodeId: 'n1',
      key: 'k',
      variant: 'v',
    })
    expect(opForStoreEvent({ type: 'deleted', key: 'k', variant: 'v', reason: 'replaced' }, 'n1')).toBeUndefined()
    // A purge and a clear are one op each (the purge, 'node-cleared'), never one per variant.
    expect(opForStoreEvent({ type: 'deleted', key: 'k', variant: 'v', reason: 'purged' }, 'n1')).toBeUndefined()
    expect(opForStoreEvent({ type: 'deleted', key: 'k', variant: 'v', reason: 'cleared' }, 'n1')).toBeUndefined()
    expect(opForStoreEvent({ type: 'integrity-failure', key: 'k', variant: 'v' }, 'n1')).toBeUndefined()
    expect(opForStoreEvent({ type: 'write-failure', key: 'k', error: new Error('x') }, 'n1')).toBeUndefined()
  })

  it('submits without waiting, survives a throwing writer, and unsubscribes', () => {
    const store = fakeStore()
    const ops: ManifestOp[] = []
    const { log, lines } = captureLog()
    let fail = false
    const stop = recordStoreEvents(
      store,
      {
        submit: (op) => {
          if (fail) throw new Error('boom')
          ops.push(op)
        },
      },
      'n1',
      log,
    )
    store.emit({ type: 'stored', meta })
    store.emit({ type: 'deleted', key: 'k', variant: '', reason: 'evicted' })
    expect(ops.map((o) => o.type)).toEqual(['stored', 'deleted'])
    fail = true
    expect(() => store.emit({ type: 'stored', meta })).not.toThrow()
    expect(lines[0]).toMatchObject({ level: 'error', fields: { event: 'stored', error: 'boom' } })
    stop()
    expect(store.listeners.size).toBe(0)
  })

  it('sends a heartbeat at once and then every interval', () => {
    vi.useFakeTimers()
    try {
      const ops: ManifestOp[] = []
      let t = 1000
      const node = { id: 'n1', region: 'ams', internalUrl: 'http://n1:8080', startedAt: 1 }
      const stop = startHeartbeat({ writer: { submit: (op) => ops.push(op) }, node, intervalMs: 100, now: () => t })
      expect(ops).toEqual([{ type: 'node-heartbeat', node, at: 1000 }])
      t = 1100
      vi.advanceTimersByTime(250)
      expect(ops).toHaveLength(3)
      stop()
      vi.advanceTimersByTime(1000)
      expect(ops).toHaveLength(3)
    } finally {
      vi.useRealTimers()
    }
  })
})
