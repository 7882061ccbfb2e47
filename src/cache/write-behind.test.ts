// The disk writer behind the store: bounded queue, cacache's format on disk,
// variant cap, and what a SIGKILL in the middle of writing leaves behind.

import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import cacache from 'cacache'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type DiskStore, type DiskStoreOptions, createDiskStore, entryId } from './disk-store.ts'
import { bodyOf, bytesOf, filesUnder, newEntry, put, recordEvents, sri, tempDir } from './test-support.ts'
import { createHash } from 'node:crypto'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import { SMALL_BODY_BYTES, contentPath } from './content-file.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
let dir: string
let cleanup: () => Promise<void>
const open: DiskStore[] = []

beforeEach(async () => {
  ;({ dir, cleanup } = await tempDir())
})

afterEach(async () => {
  for (const store of open.splice(0)) await store.close()
  await cleanup()
})

async function openStore(overrides: Partial<DiskStoreOptions> = {}): Promise<DiskStore> {
  const store = await createDiskStore({ dir, maxBytes: 100 * 1024 * 1024, maxObjectBytes: 10 * 1024 * 1024, log: () => {}, ...overrides })
  open.push(store)
  return store
}

describe('write-behind disk writer', () => {
  it('serves a commit at once from memory and has it on disk, readable by cacache, once drained', async () => {
    const store = await openStore()
    const writer = store.writer(newEntry('https://a.test/now'))
    writer.write(bodyOf(3000))
    const meta = await writer.commit()
    expect(meta?.size).toBe(3000)
    const body = await store.read('https://a.test/now', '')
    expect(body && (await bytesOf(body))).toEqual(bodyOf(3000))
    await store.drain()
    expect(store.stats()).toMatchObject({ writeQueueJobs: 0, writeQueueBytes: 0 })
    const viaCacache = await cacache.get(dir, entryId('https://a.test/now', ''))
    expect(viaCacache.data.equals(bodyOf(3000))).toBe(true)
    expect(viaCacache.metadata).toMatchObject({ key: 'https://a.test/now', url: 'https://a.test/now' })
  })

  it('put() stores a whole body through the same writer, and refuses one over the object limit', async () => {
    const store = await openStore({ maxObjectBytes: 1000 })
    expect((await store.put(newEntry('https://a.test/p'), bodyOf(900)))?.size).toBe(900)
    expect(await store.put(newEntry('https://a.test/too-big'), bodyOf(1001))).toBeUndefined()
    await store.drain()
    expect((await cacache.get(dir, entryId('https://a.test/p', ''))).data.equals(bodyOf(900))).toBe(true)
    expect(store.stats().entries).toBe(1)
  })

  it('keeps cacache able to read an entry whose bucket was rewritten by many metadata updates', async () => {
    const store = await openStore()
    const meta = (await put(store, newEntry('https://a.test/m'), bodyOf(100)))!
    for (let i = 0; i < 20; i++) await store.updateMeta({ ...meta, headers: { n: String(i) } })
    await store.drain()
    const info = await cacache.get.info(dir, entryId('https://a.test/m', ''))
    expect((info?.metadata as { headers: { n: string } }).headers.n).toBe('19')
    expect((await cacache.ls(dir))[entryId('https://a.test/m', '')]).toBeDefined()
  })

  it('writes each body exactly when many arrive at once as views into one shared buffer (a network read of many objects)', async () => {
    const store = await openStore()
    // 600 bodies of 700 bytes, each a view into one 420,000-byte buffer: more jobs and
    // bytes than the writer sends the worker in one message.
    const count = 600
    const size = 700
    const shared = bodyOf(count * size, 7)
    const commits: Promise<unknown>[] = []
    for (let i = 0; i < count; i++) {
      const writer = store.writer(newEntry(`https://a.test/view/${i}`))
      expect(writer.write(shared.subarray(i * size, (i + 1) * size))).toBe(true)
      commits.push(writer.commit())
    }
    await Promise.all(commits)
    await store.drain()
    for (const i of [0, 1, 255, 256, 257, 511, 512, count - 1]) {
      const { data } = await cacache.get(dir, entryId(`https://a.test/view/${i}`, ''))
      expect(data.equals(shared.subarray(i * size, (i + 1) * size)), `body ${i}`).toBe(true)
    }
    expect(Object.keys(await cacache.ls(dir))).toHaveLength(count)
    expect(store.stats()).toMatchObject({ writeFailures: 0, writeQueueJobs: 0, writeQueueBytes: 0 })
  })

  it('serves without storing, and counts it, when the write queue is full', async () => {
    const store = await openStore({ writeQueueBytes: 1000 })
    const events = recordEvents(store)
    expect(store.admits('https://a.test/big', 5000)).toBe(false)
    expect(await put(store, newEntry('https://a.test/big'), bodyOf(5000))).toBeUndefined()
    expect(await store.read('https://a.test/big', '')).toBeUndefined()
    expect(store.stats()).toMatchObject({ writesSkipped: 2, entries: 0 })
    expect(events.filter((e) => e.type === 'write-skipped')).toHaveLength(2)
    // What fits is stored.
    expect(store.admits('https://a.test/small', 500)).toBe('disk')
    expect(await put(store, newEntry('https://a.test/small'), bodyOf(500))).toBeDefined()
  })

  it('serves without storing, and counts it, when the write queue holds as many jobs as it may', async () => {
    const store = await openStore({ writeQueueJobs: 2 })
    const events = recordEvents(store)
    /** A commit that does not wait for the disk: its job is still queued when it resolves. */
    const commit = (url: string, seed: number) => {
      const writer = store.writer(newEntry(url))
      writer.write(bodyOf(100, seed))
      return writer.commit()
    }
    await store.drain()
    // Committed in one turn: the writer's thread has not answered either yet.
    const [one, two] = await Promise.all([commit('https://a.test/one', 1), commit('https://a.test/two', 2)])
    expect(one && two).toBeDefined()
    expect(store.stats()).toMatchObject({ writeQueueJobs: 2 })
    expect(store.admits('https://a.test/three', 100)).toBe(false)
    expect(await commit('https://a.test/three', 3)).toBeUndefined()
    expect(store.stats()).toMatchObject({ writesSkipped: 2, entries: 2 })
    expect(events.filter((e) => e.type === 'write-skipped')).toHaveLength(2)
    // A writer waiting for room is let in once the queue has gone down.
    await store.writeRoom(100)
    expect(store.admits('https://a.test/three', 100)).toBe('disk')
    expect(await commit('https://a.test/three', 3)).toBeDefined()
  })

  it('replaces a torn file left under a body\'s content name, and shares one file between two entries with the same body', async () => {
    const body = bodyOf(5000, 3)
    const file = contentPath(dir, sri(body))!
    // What a SIGKILL in the middle of a direct write leaves: the first bytes, under the final name.
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, body.subarray(0, 1000))
    const store = await openStore()
    expect(await put(store, newEntry('https://a.test/one'), body)).toBeDefined()
    expect(await put(store, newEntry('https://a.test/two'), body)).toBeDefined()
    for (const url of ['https://a.test/one', 'https://a.test/two']) {
      expect((await cacache.get(dir, entryId(url, ''))).data.equals(body)).toBe(true)
    }
    expect(store.stats().writeFailures).toBe(0)
  })

  it('writes a body shared by many entries once: later entries get only their index line, and cacache reads every one', async () => {
    const store = await openStore()
    const body = bodyOf(4000, 7)
    expect(await put(store, newEntry('https://a.test/first'), body)).toBeDefined()
    const file = contentPath(dir, sri(body))!
    const before = await stat(file)
    const writers = Array.from({ length: 5 }, (_, i) => store.writer(newEntry(`https://a.test/same/${i}`)))
    for (const w of writers) w.write(body)
    await Promise.all(writers.map((w) => w.commit()))
    await store.drain()
    // The very same file, never rewritten nor replaced.
    const after = await stat(file)
    expect({ ino: after.ino, mtimeMs: after.mtimeMs }).toEqual({ ino: before.ino, mtimeMs: before.mtimeMs })
    for (let i = 0; i < 5; i++) expect((await cacache.get(dir, entryId(`https://a.test/same/${i}`, ''))).data.equals(body)).toBe(true)
    expect(store.stats().writeFailures).toBe(0)
  })

  it('makes a directory again when it was removed by hand under the running writer, so writes never fail for good', async () => {
    const store = await openStore()
    expect(await put(store, newEntry('https://a.test/kept'), bodyOf(3000, 1))).toBeDefined()
    // The writer has made (and remembers) this entry's bucket directory and the body's directories.
    await rm(path.join(dir, 'index-v5'), { recursive: true })
    await rm(path.join(dir, 'content-v2'), { recursive: true })
    // Same key, so the same (remembered, now missing) bucket directory; and a new body.
    expect(await put(store, newEntry('https://a.test/kept'), bodyOf(3000, 2))).toBeDefined()
    expect(await put(store, newEntry('https://a.test/other'), bodyOf(3000, 3))).toBeDefined()
    expect(store.stats().writeFailures).toBe(0)
    expect((await cacache.get(dir, entryId('https://a.test/kept', ''))).data.equals(bodyOf(3000, 2))).toBe(true)
    expect((await cacache.get(dir, entryId('https://a.test/other', ''))).data.equals(bodyOf(3000, 3))).toBe(true)
  })

  it('a writer told which body to expect refuses any other before it becomes visible, buffered or spilled', async () => {
    const store = await openStore()
    for (const size of [2000, SMALL_BODY_BYTES + 100_000]) {
      const body = bodyOf(size, 4)
      const url = `https://a.test/expected/${size}`
      const wrong = store.writer(newEntry(url), { size, integrity: sri(bodyOf(size, 5)) })
      wrong.write(body)
      await expect(wrong.commit()).rejects.toMatchObject({ code: 'EINTEGRITY' })
      const short = store.writer(newEntry(url), { size: size + 1, integrity: sri(body) })
      short.write(body)
      await expect(short.commit()).rejects.toMatchObject({ code: 'EINTEGRITY' })
      await store.drain()
      expect(store.variants(url)).toEqual([])
      const right = store.writer(newEntry(url), { size, integrity: sri(body) })
      right.write(body)
      expect((await right.commit())?.integrity).toBe(sri(body))
    }
    await store.drain()
    // Nothing of the refused bodies stays behind, not even a temp file.
    expect(Object.keys(await cacache.ls(dir))).toHaveLength(2)
    expect(await filesUnder(path.join(dir, 'tmp'))).toEqual([])
  })

  it('stores a body expected by its sha512 integrity (a peer running an older version) under that digest, buffered or spilled', async () => {
    const sha512 = (body: Buffer) => `sha512-${createHash('sha512').update(body).digest('base64')}`
    const store = await openStore()
    // No room in its write queue: a buffered body is checked on the event loop (and not stored).
    const full = await openStore({ dir: path.join(dir, 'full'), writeQueueBytes: 0 })
    for (const size of [2000, SMALL_BODY_BYTES + 100_000]) {
      const body = bodyOf(size, 6)
      const url = `https://a.test/old-peer/${size}`
      for (const s of [store, full]) {
        const wrong = s.writer(newEntry(url), { size, integrity: sha512(bodyOf(size, 7)) })
        wrong.write(body)
        await expect(wrong.commit()).rejects.toMatchObject({ code: 'EINTEGRITY' })
      }
      const unstored = full.writer(newEntry(url), { size, integrity: sha512(body) })
      unstored.write(body)
      await unstored.commit()
      const right = store.writer(newEntry(url), { size, integrity: sha512(body) })
      right.write(body)
      expect((await right.commit())?.integrity).toBe(sha512(body))
      await store.drain()
      expect(store.variant(url, '')?.integrity).toBe(sha512(body))
      const read = await store.read(url, '')
      expect(read && (await bytesOf(read)).equals(body)).toBe(true)
      const viaCacache = await cacache.get(dir, entryId(url, ''))
      expect(viaCacache.integrity).toBe(sha512(body))
      expect(viaCacache.data.equals(body)).toBe(true)
    }
  })

  it('writeRoom() resolves once the queue has drained enough for the body, so a patient writer is not skipped', async () => {
    const store = await openStore({ writeQueueBytes: 1000 })
    expect(await store.put(newEntry('https://a.test/first'), bodyOf(900))).toBeDefined()
    let roomy = false
    const room = store.writeRoom(500).then(() => (roomy = true))
    // The worker's answer can only arrive in a later turn of the event loop.
    await Promise.resolve()
    expect(roomy).toBe(false)
    await room
    expect(store.admits('https://a.test/second', 500)).toBe('disk')
    expect(await put(store, newEntry('https://a.test/second'), bodyOf(500))).toBeDefined()
    // With room already, at once.
    await store.writeRoom(10)
    expect(store.stats().writesSkipped).toBe(0)
  })

  it('keeps at most maxVariants variants per key, dropping the least recently used', async () => {
    const store = await openStore({ maxVariants: 3 })
    const url = 'https://a.test/vary'
    for (const v of ['a', 'b', 'c']) await put(store, newEntry(url, { variant: v, headers: { vary: 'x-foo' } }), bodyOf(10, v.charCodeAt(0)))
    // 'a' is read, so 'b' is now the least recently used.
    expect(await store.read(url, 'a')).toBeDefined()
    await put(store, newEntry(url, { variant: 'd', headers: { vary: 'x-foo' } }), bodyOf(10, 9))
    expect((await store.variants(url)).map((m) => m.variant).sort()).toEqual(['a', 'c', 'd'])
    expect(store.stats().entries).toBe(3)
    // The cap holds after a restart with a lower one too.
    await store.close()
    open.splice(0)
    const reopened = await openStore({ maxVariants: 2 })
    expect(await reopened.variants(url)).toHaveLength(2)
  })

  it('never serves a corrupt body after a SIGKILL in the middle of writing', async () => {
    const script = `
      import { createDiskStore } from ${JSON.stringify(path.join(here, 'disk-store.ts'))}
      import { bodyOf, newEntry } from ${JSON.stringify(path.join(here, 'test-support.ts'))}
      const store = await createDiskStore({ dir: ${JSON.stringify(dir)}, maxBytes: 1e9, maxObjectBytes: 1e8 })
      for (let i = 0; ; i++) {
        const size = i % 7 === 0 ? 1_200_000 : 2000 + i
        const w = store.writer(newEntry('https://a.test/' + i + '?size=' + size))
        w.write(bodyOf(size, i))
        await w.commit()
        if (i % 50 === 0) process.stdout.write(i + '\\n')
      }
    `
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    // Kill it once it has committed a few hundred entries, while writes are certainly queued.
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        if (d.split('\n').some((l) => Number(l) >= 300)) resolve()
      })
      child.once('exit', (code) => reject(new Error(`writer exited early (${code})`)))
    })
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))

    const store = await openStore()
    const { entries } = await store.list({ limit: 100_000 })
    expect(entries.length).toBeGreaterThan(0)
    for (const entry of entries) {
      const m = /^https:\/\/a\.test\/(\d+)\?size=(\d+)$/.exec(entry.url)!
      const body = await store.read(entry.key, entry.variant)
      expect(body, entry.url).toBeDefined()
      expect((await bytesOf(body!)).equals(bodyOf(Number(m[2]), Number(m[1]))), entry.url).toBe(true)
    }
    expect(store.stats().integrityFailures).toBe(0)
  })
})

describe('bodies hashed by the disk writer thread', () => {
  /** A store past its start-up sweep, during which bodies are hashed on the main thread. */
  async function openSwept(): Promise<DiskStore> {
    const store = await openStore()
    await store.drain()
    return store
  }

  it('names a body by the integrity cacache computes for the same bytes, and cacache reads it back', async () => {
    const store = await openSwept()
    const body = bodyOf(7000, 11)
    const committed = await store.put(newEntry('https://a.test/hashed'), body)
    // Served at once, under a placeholder until the writer has hashed it.
    expect(committed?.integrity).toMatch(/^pending-/)
    await store.drain()
    const cacacheIntegrity = String(await cacache.put(path.join(dir, 'other'), 'k', body, { algorithms: ['sha256'] }))
    expect(store.variant('https://a.test/hashed', '')?.integrity).toBe(cacacheIntegrity)
    const viaCacache = await cacache.get(dir, entryId('https://a.test/hashed', ''))
    expect(viaCacache.integrity).toBe(cacacheIntegrity)
    expect(viaCacache.data.equals(body)).toBe(true)
    expect(await filesUnder(path.join(dir, 'content-v2'))).toEqual([path.relative(path.join(dir, 'content-v2'), contentPath(dir, cacacheIntegrity)!)])
  })

  it('writes the metadata changed while the body was being hashed, with its integrity, so a restart loads it', async () => {
    const store = await openSwept()
    const entry = newEntry('https://a.test/updated')
    const committed = (await store.put(entry, bodyOf(2000, 4)))!
    await store.updateMeta({ ...committed, headers: { etag: '"2"' } })
    await store.drain()
    await store.close()
    open.splice(open.indexOf(store), 1)
    const again = await openStore()
    expect(again.variant(entry.key, '')).toMatchObject({ headers: { etag: '"2"' }, integrity: sri(bodyOf(2000, 4)) })
  })

  it('leaves no file of a body whose entry went before the writer had hashed it', async () => {
    const store = await openSwept()
    await store.put(newEntry('https://a.test/gone'), bodyOf(3000, 5))
    expect(await store.delete('https://a.test/gone')).toBe(1)
    await store.drain()
    expect(await filesUnder(dir)).toEqual([])
    expect(store.stats()).toMatchObject({ entries: 0, bytes: 0 })
  })

  it('keeps one record of a body two entries committed before either was hashed: counted once, kept while one holds it', async () => {
    const store = await openSwept()
    const body = bodyOf(4000, 6)
    await store.put(newEntry('https://a.test/one'), body)
    await store.put(newEntry('https://a.test/two'), body)
    await store.drain()
    expect(store.stats()).toMatchObject({ entries: 2, bytes: 4000 })
    await store.delete('https://a.test/one')
    await store.drain()
    expect((await cacache.get(dir, entryId('https://a.test/two', ''))).data.equals(body)).toBe(true)
    const read = await store.read('https://a.test/two', '')
    expect(read && (await bytesOf(read))).toEqual(body)
  })

  it('keeps the file of a body whose first entry went before it was hashed while a second entry with the same bytes was still being hashed', async () => {
    const store = await openSwept()
    const body = bodyOf(4500, 9)
    await store.put(newEntry('https://a.test/first'), body)
    await store.put(newEntry('https://a.test/second'), body)
    // Gone before the writer has answered for either body: its file is the second's too.
    expect(await store.delete('https://a.test/first')).toBe(1)
    await store.drain()
    expect((await cacache.get(dir, entryId('https://a.test/second', ''))).data.equals(body)).toBe(true)
    expect(store.stats()).toMatchObject({ entries: 1, bytes: 4500 })
    // And once the second goes too, nothing is left.
    await store.delete('https://a.test/second')
    await store.drain()
    expect(await filesUnder(path.join(dir, 'content-v2'))).toEqual([])
  })

  it('keeps a body committed while the start-up sweep removes unreferenced files, though its file was one of them', async () => {
    const body = bodyOf(5000, 8)
    const file = contentPath(dir, sri(body))!
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, body)
    const store = await openStore()
    await store.put(newEntry('https://a.test/swept'), body)
    await store.drain()
    expect((await cacache.get(dir, entryId('https://a.test/swept', ''))).data.equals(body)).toBe(true)
  })

  it('replaces a file of the same size but other bytes under a body\'s content name (torn by a crash, then filled by chance)', async () => {
    const store = await openSwept()
    const body = bodyOf(5000, 8)
    const file = contentPath(dir, sri(body))!
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, bodyOf(5000, 9))
    await store.put(newEntry('https://a.test/healed'), body)
    await store.drain()
    expect((await cacache.get(dir, entryId('https://a.test/healed', ''))).data.equals(body)).toBe(true)
  })

  it('checks again a file it wrote itself once it has changed on disk, and replaces it when another entry stores the same body', async () => {
    const store = await openSwept()
    const body = bodyOf(5000, 4)
    await store.put(newEntry('https://a.test/first'), body)
    await store.drain()
    const file = contentPath(dir, sri(body))!
    // Changed behind the writer's back (same inode, same size, other bytes).
    await writeFile(file, bodyOf(5000, 5))
    await store.put(newEntry('https://a.test/second'), body)
    await store.drain()
    for (const url of ['https://a.test/first', 'https://a.test/second']) expect((await cacache.get(dir, entryId(url, ''))).data.equals(body)).toBe(true)
  })
})
