// Helpers shared by the cache tests: real temp directories, entries and bodies.

import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { integrityOfBytes } from './content-file.ts'
import type { CacheStore, EntryMeta, NewEntry, StoreEvent, StoredBody } from './types.ts'

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'caje-cache-'))
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) }
}

export function newEntry(url: string, overrides: Partial<NewEntry> = {}): NewEntry {
  const now = Date.now()
  const { host } = new URL(url)
  return {
    key: url,
    variant: '',
    url,
    host,
    status: 200,
    headers: { 'content-type': 'text/plain' },
    varyHeaders: {},
    policy: { v: 1 },
    storedAt: now,
    staleAt: now + 60_000,
    deleteAt: now + 3_600_000,
    tags: [],
    contentType: 'text/plain',
    ...overrides,
  }
}

/** A deterministic body of `size` bytes that differs per seed. */
export function bodyOf(size: number, seed = 1): Buffer {
  const buffer = Buffer.allocUnsafe(size)
  let x = seed * 2654435761 >>> 0
  for (let i = 0; i < size; i++) {
    x = (x * 1664525 + 1013904223) >>> 0
    buffer[i] = x >>> 24
  }
  return buffer
}

/** The integrity the store names a new body by (content-file.ts CONTENT_ALGORITHM). */
export function sri(body: Buffer): string {
  return integrityOfBytes(body)
}

/**
 * Writes a body in chunks, commits it, and waits until it is on disk (the store writes behind):
 * the metadata then, whose integrity is the body's digest (until the writer has hashed a
 * buffered body, the store knows it by a placeholder).
 */
export async function put(store: Pick<CacheStore, 'writer'> & Partial<Pick<CacheStore, 'drain' | 'variant'>>, entry: NewEntry, body: Buffer, chunkSize = 64 * 1024): Promise<EntryMeta | undefined> {
  const writer = store.writer(entry)
  for (let offset = 0; offset < body.length; offset += chunkSize) {
    if (!writer.write(body.subarray(offset, offset + chunkSize))) break
  }
  const meta = await writer.commit()
  if (!store.drain) return meta
  await store.drain()
  return meta && (store.variant?.(entry.key, entry.variant) ?? meta)
}

export async function bytesOf(body: StoredBody): Promise<Buffer> {
  if (body.kind === 'buffer') return body.buffer
  const chunks: Buffer[] = []
  for await (const chunk of body.stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export function recordEvents(store: Pick<CacheStore, 'subscribe'>): StoreEvent[] {
  const events: StoreEvent[] = []
  store.subscribe((event) => events.push(event))
  return events
}

/** Every regular file under `root` (relative paths), for "nothing left behind" checks. */
export async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = []
  async function walk(dir: string): Promise<void> {
    let names: string[]
    try {
      names = await readdir(dir, { withFileTypes: true }).then((entries) => entries.map((e) => (e.isDirectory() ? `${e.name}/` : e.name)))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return // absent directory: no files
      throw error
    }
    for (const name of names) {
      if (name.endsWith('/')) await walk(path.join(dir, name.slice(0, -1)))
      else out.push(path.relative(root, path.join(dir, name)))
    }
  }
  await walk(root)
  return out.sort()
}

export async function contentBytesOnDisk(dir: string): Promise<number> {
  let total = 0
  for (const file of await filesUnder(path.join(dir, 'content-v2'))) {
    // A file removed in the background between the listing and the stat is gone: it counts nothing.
    const size = await stat(path.join(dir, 'content-v2', file)).then(
      (s) => s.size,
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return 0
        throw error
      },
    )
    total += size
  }
  return total
}
