import { afterEach, describe, expect, it } from 'vitest'
import { startFakeLitefs, type FakeLitefs } from '../test-support/fake-litefs.ts'
import { PRIMARY_UNKNOWN, createRoleSource, fetchLitefsStatus, parseEvent, primaryUrlFor, roleFromStatus, watchLitefs } from './primary.ts'
import type { ClusterRole } from './primary.ts'
import { whenReached } from '../test-support/when-reached.ts'
import { captureLog } from './test-helpers.ts'

const TEMPLATE = 'http://{host}.vm.caje.internal:{port}'

describe('primary.ts: the role from LiteFS', () => {
  const cleanups: (() => void | Promise<void>)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function setup(initial: { isPrimary: boolean; hostname?: string }, pollIntervalMs = 60_000) {
    const litefs = await startFakeLitefs(initial)
    cleanups.push(() => litefs.close())
    const { log, lines } = captureLog()
    const watcher = watchLitefs({ apiUrl: litefs.url, primaryUrlTemplate: TEMPLATE, port: 8080, pollIntervalMs, reconnectDelayMs: 20, log })
    cleanups.push(() => watcher.close())
    const seen: ClusterRole[] = []
    watcher.subscribe((role) => seen.push(role))
    return { litefs, watcher, seen, lines }
  }
  const label = (r: ClusterRole) => (r.kind === 'primary' ? 'primary' : (r.primaryHost ?? 'unknown'))
  const streamUp = (litefs: FakeLitefs) => whenReached(litefs, () => litefs.streams() === 1)

  it('builds the primary URL from the template', () => {
    expect(primaryUrlFor('http://{host}:{port}/', 'm1', 8080)).toBe('http://m1:8080')
    expect(primaryUrlFor(TEMPLATE, 'abc', 9000)).toBe('http://abc.vm.caje.internal:9000')
  })

  it('maps what LiteFS says to three states: primary, replica of a host, primary unknown', () => {
    expect(roleFromStatus({ isPrimary: true, hostname: '' }, TEMPLATE, 8080)).toEqual({ kind: 'primary' })
    expect(roleFromStatus({ isPrimary: false, hostname: 'machine-a' }, TEMPLATE, 8080)).toEqual({
      kind: 'replica',
      primaryHost: 'machine-a',
      primaryUrl: 'http://machine-a.vm.caje.internal:8080',
    })
    // Not primary and no hostname: LiteFS lost the primary (this is also when `.primary` is missing).
    expect(roleFromStatus({ isPrimary: false, hostname: '' }, TEMPLATE, 8080)).toBe(PRIMARY_UNKNOWN)
    expect(parseEvent('{"type":"tx","db":"manifest.db","data":{"txID":"0000000000000002"}}')).toBeUndefined()
    expect(parseEvent('{"type":"primaryChange","data":{"isPrimary":false,"hostname":"node-2"}}')).toEqual({ isPrimary: false, hostname: 'node-2' })
    expect(() => parseEvent('{"type":"init","data":{}}')).toThrow(/isPrimary/)
  })

  it('reads /info once (the migration CLI does) and names the fix when LiteFS cannot be reached', async () => {
    const litefs = await startFakeLitefs({ isPrimary: false, hostname: 'machine-a' })
    cleanups.push(() => litefs.close())
    expect(await fetchLitefsStatus(litefs.url)).toEqual({ isPrimary: false, hostname: 'machine-a' })
    await litefs.pause()
    await expect(fetchLitefsStatus(litefs.url)).rejects.toThrow(/cannot reach the LiteFS API .*CAJE_LITEFS_API/)
  })

  it('follows promotion, demotion and a lost primary from the event stream', async () => {
    const { litefs, watcher, seen } = await setup({ isPrimary: false, hostname: 'machine-a' })
    // Until LiteFS has said anything, the node does not write.
    expect(watcher.current()).toBe(PRIMARY_UNKNOWN)
    await whenReached(watcher, () => watcher.current().kind === 'replica' && label(watcher.current()) === 'machine-a')
    await streamUp(litefs)

    litefs.tx() // write traffic on the stream says nothing about the role
    litefs.losePrimary()
    await whenReached(watcher, () => label(watcher.current()) === 'unknown')
    expect(watcher.current()).toEqual(PRIMARY_UNKNOWN)

    litefs.promote()
    await whenReached(watcher, () => watcher.current().kind === 'primary')
    litefs.follow('machine-b')
    await whenReached(watcher, () => label(watcher.current()) === 'machine-b')
    expect(watcher.current()).toEqual({ kind: 'replica', primaryHost: 'machine-b', primaryUrl: 'http://machine-b.vm.caje.internal:8080' })

    // One notification per change; the poll interval is a minute, so all of this came from the stream.
    expect(seen.map(label)).toEqual(['machine-a', 'unknown', 'primary', 'machine-b'])
    expect(litefs.requests('/info')).toBe(0)
  })

  it('never takes a missing answer for "primary": LiteFS unreachable is primary unknown, and the role returns with LiteFS', async () => {
    const { litefs, watcher, lines } = await setup({ isPrimary: true })
    await watcher.refresh()
    expect(watcher.current()).toEqual({ kind: 'primary' })
    await streamUp(litefs)

    await litefs.pause()
    await whenReached(watcher, () => watcher.current() === PRIMARY_UNKNOWN)
    expect(lines.some((l) => l.level === 'error' && /cannot ask LiteFS/.test(l.msg))).toBe(true)

    await litefs.resume()
    await whenReached(watcher, () => watcher.current().kind === 'primary')
    await streamUp(litefs)
  })

  it('reconnects a dropped stream and catches a change made while it was down', async () => {
    const { litefs, watcher } = await setup({ isPrimary: false, hostname: 'machine-a' })
    await streamUp(litefs)
    await whenReached(watcher, () => label(watcher.current()) === 'machine-a')
    litefs.dropStreams()
    litefs.promote() // nobody is listening: only /info or the next init event can tell
    await whenReached(watcher, () => watcher.current().kind === 'primary')
  })

  it('also polls /info, so a node whose stream went quiet still converges', async () => {
    const { litefs, watcher } = await setup({ isPrimary: true }, 30)
    await whenReached(litefs, () => litefs.requests('/info') >= 2)
    expect(watcher.current()).toEqual({ kind: 'primary' })
  })

  it('is always primary without LiteFS', () => {
    const source = createRoleSource({ litefsDir: undefined, litefsApi: 'http://localhost:20202', primaryUrlTemplate: TEMPLATE, port: 8080 })
    expect(source.current()).toEqual({ kind: 'primary' })
    source.close()
  })
})

