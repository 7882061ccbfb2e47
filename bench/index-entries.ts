// An index filled as the disk store fills it, for the index memory measures.

import { createHash } from 'node:crypto'
import { contentPath } from '../src/cache/content-file.ts'
import { ContentPaths, type ContentRecord, EntryIndex, StoredContent } from '../src/cache/entry-index.ts'
import type { EntryMeta } from '../src/cache/types.ts'
import { realisticEntry } from './realistic-entry.ts'

export { entryKeyOf, realisticEntry } from './realistic-entry.ts'

/** A sha512 integrity for entry `i` (not of any real body: the index never reads one). */
export function fakeIntegrity(i: number): string {
  return `sha512-${createHash('sha512').update(String(i)).digest('base64')}`
}

/**
 * Fills an index as the disk store fills it at start (disk-store.ts load): metadata as it
 * comes back from an index line's JSON, one content file per entry, pinned by integrity.
 */
export function fillIndex(count: number, now: number): { index: EntryIndex; contents: Map<string, ContentRecord> } {
  const index = new EntryIndex()
  const contents = new Map<string, ContentRecord>()
  const paths = new ContentPaths((integrity) => contentPath('/var/lib/caje/cache', integrity)!)
  for (let i = 0; i < count; i++) {
    const integrity = fakeIntegrity(i)
    const meta = JSON.parse(JSON.stringify({ ...realisticEntry(i, now), size: 32, integrity })) as EntryMeta
    const content = new StoredContent(paths, integrity, 32)
    content.refs = 1
    contents.set(integrity, content)
    index.add({ meta, content, committedAt: now + i, indexLines: 1, hot: false })
  }
  index.orderByCommitTime()
  return { index, contents }
}
