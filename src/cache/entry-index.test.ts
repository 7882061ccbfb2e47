import { describe, expect, it } from 'vitest'
import { EntryIndex, type IndexRecord, entryId } from './entry-index.ts'
import type { EntryMeta } from './types.ts'

function record(i: number, host = 'example.com'): IndexRecord {
  const url = `https://${host}/item/${i}`
  const meta = { key: url, variant: '', url, host, headers: {}, size: 10, integrity: 'sha512-x' } as unknown as EntryMeta
  return {
    id: entryId(url, ''),
    meta,
    content: { integrity: 'sha512-x', path: '/nowhere', size: 10, refs: 1 },
    committedAt: i,
    lastAccess: i,
    urlLower: url.toLowerCase(),
    indexLines: 1,
  }
}

describe('entry index', () => {
  it('lists 100,000 entries newest first with paging and a case-insensitive filter', () => {
    const index = new EntryIndex()
    const count = 100_000
    for (let i = 0; i < count; i++) index.set(record(i, i % 10 === 0 ? 'Img.Example.com' : 'example.com'))
    expect(index.size).toBe(count)

    const first = index.list({ limit: 3 })
    expect(first.total).toBe(count)
    expect(first.records.map((r) => r.committedAt)).toEqual([99_999, 99_998, 99_997])

    const deep = index.list({ offset: 50_000, limit: 2 })
    expect(deep.records.map((r) => r.committedAt)).toEqual([49_999, 49_998])

    const filtered = index.list({ filter: 'IMG.example', offset: 1, limit: 2 })
    expect(filtered.total).toBe(10_000)
    expect(filtered.records.map((r) => r.committedAt)).toEqual([99_980, 99_970])

    const narrow = index.list({ filter: '/item/12345' })
    expect(narrow.total).toBe(1)
    expect(narrow.records[0].meta.url).toBe('https://example.com/item/12345')

    expect(index.list({ offset: count, limit: 10 }).records).toEqual([])
    expect(index.list({ filter: 'no-such-thing' })).toEqual({ total: 0, records: [] })
  })

  it('keeps eviction order by reads and listing order by commits', () => {
    const index = new EntryIndex()
    for (let i = 0; i < 3; i++) index.set(record(i))
    index.touch(entryId('https://example.com/item/0', ''), 100)
    expect([...index.leastRecentlyUsed()].map((r) => r.committedAt)).toEqual([1, 2, 0])
    expect(index.list().records.map((r) => r.committedAt)).toEqual([2, 1, 0])
    expect(index.get(entryId('https://example.com/item/0', ''))?.lastAccess).toBe(100)
  })

  it('groups variants by key and forgets empty keys', () => {
    const index = new EntryIndex()
    const a = record(1)
    const b = { ...record(2), meta: { ...a.meta, variant: 'gzip' } as EntryMeta, id: entryId(a.meta.key, 'gzip') }
    index.set(a)
    index.set(b)
    expect(index.variantsOf(a.meta.key).map((r) => r.meta.variant).sort()).toEqual(['', 'gzip'])
    index.delete(a.id)
    index.delete(b.id)
    expect(index.variantsOf(a.meta.key)).toEqual([])
    expect(index.size).toBe(0)
  })
})
