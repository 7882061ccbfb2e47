import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createRoleSource, primaryUrlFor, readRole, watchPrimary } from './primary.ts'
import type { ClusterRole, PrimaryWatcher } from './primary.ts'
import { captureLog, tempDir, waitFor } from './test-helpers.ts'

const TEMPLATE = 'http://{host}.vm.caje.internal:{port}'

describe('primary.ts', () => {
  const cleanups: (() => void)[] = []
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c()
  })

  function setup(pollIntervalMs = 25): { dir: string; watcher: PrimaryWatcher; seen: ClusterRole[]; write: (s: string) => void } {
    const { dir, cleanup } = tempDir('caje-litefs-')
    cleanups.push(cleanup)
    const { log } = captureLog()
    const watcher = watchPrimary({ litefsDir: dir, primaryUrlTemplate: TEMPLATE, port: 8080, pollIntervalMs, log })
    cleanups.push(() => watcher.close())
    const seen: ClusterRole[] = []
    watcher.subscribe((role) => seen.push(role))
    // Write through a temp file + rename, as an atomic replace.
    const write = (s: string) => {
      fs.writeFileSync(path.join(dir, '.primary.tmp'), s)
      fs.renameSync(path.join(dir, '.primary.tmp'), path.join(dir, '.primary'))
    }
    return { dir, watcher, seen, write }
  }

  it('builds the primary URL from the template', () => {
    expect(primaryUrlFor('http://{host}:{port}/', 'm1', 8080)).toBe('http://m1:8080')
    expect(primaryUrlFor(TEMPLATE, 'abc', 9000)).toBe('http://abc.vm.caje.internal:9000')
  })

  it('reads the role once: no file means primary, a hostname means replica', () => {
    const { dir, cleanup } = tempDir('caje-litefs-')
    cleanups.push(cleanup)
    expect(readRole(dir, TEMPLATE, 8080)).toEqual({ kind: 'primary' })
    fs.writeFileSync(path.join(dir, '.primary'), 'machine-a\n')
    expect(readRole(dir, TEMPLATE, 8080)).toEqual({ kind: 'replica', primaryHost: 'machine-a', primaryUrl: 'http://machine-a.vm.caje.internal:8080' })
  })

  it('follows .primary appearing, changing and disappearing without a restart', async () => {
    const { watcher, seen, write, dir } = setup()
    expect(watcher.current()).toEqual({ kind: 'primary' })

    write('machine-a')
    await waitFor(() => watcher.current().kind === 'replica', 3000, 'replica role')
    expect(watcher.current()).toEqual({ kind: 'replica', primaryHost: 'machine-a', primaryUrl: 'http://machine-a.vm.caje.internal:8080' })

    write('machine-b\n')
    await waitFor(() => hostOf(watcher.current()) === 'machine-b', 3000, 'new primary')

    fs.rmSync(path.join(dir, '.primary'))
    await waitFor(() => watcher.current().kind === 'primary', 3000, 'primary role')

    // One notification per change, none for repeated reads of the same content.
    await watcher.refresh()
    expect(seen.map((r) => (r.kind === 'primary' ? 'primary' : r.primaryHost))).toEqual(['machine-a', 'machine-b', 'primary'])
  })

  it('keeps the known primary while .primary is momentarily empty', async () => {
    const { watcher, write } = setup()
    write('machine-a')
    await watcher.refresh()
    write('')
    await watcher.refresh()
    expect(watcher.current()).toMatchObject({ kind: 'replica', primaryHost: 'machine-a' })
  })

  it('notices a change by polling alone (FUSE may not deliver inotify events)', async () => {
    const { dir, cleanup } = tempDir('caje-litefs-')
    cleanups.push(cleanup)
    const watcher = watchPrimary({ litefsDir: path.join(dir, 'not-yet'), primaryUrlTemplate: TEMPLATE, port: 1, pollIntervalMs: 20, log: captureLog().log })
    cleanups.push(() => watcher.close())
    expect(watcher.current().kind).toBe('primary')
    fs.mkdirSync(path.join(dir, 'not-yet'))
    fs.writeFileSync(path.join(dir, 'not-yet', '.primary'), 'm')
    await waitFor(() => watcher.current().kind === 'replica', 3000, 'poll to see the file')
  })

  it('sees changes through fs.watch well before a slow poll would', async () => {
    const { watcher, write } = setup(60_000)
    write('machine-w')
    await waitFor(() => hostOf(watcher.current()) === 'machine-w', 2000, 'fs.watch to report the file')
  })

  it('is always primary without LiteFS', () => {
    const source = createRoleSource({ litefsDir: undefined, primaryUrlTemplate: TEMPLATE, port: 8080 })
    expect(source.current()).toEqual({ kind: 'primary' })
    source.close()
  })
})

function hostOf(role: ClusterRole): string | undefined {
  return role.kind === 'replica' ? role.primaryHost : undefined
}
