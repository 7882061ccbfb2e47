import { describe, expect, it } from 'vitest'
import { ContentPaths, EntryIndex, type Handle, StoredContent, entryId } from './entry-index.ts'
import { type EntryMeta, memoryOnlyIntegrity } from './types.ts'

const paths = new ContentPaths((integrity) => `/nowhere/${integrity}`)

function meta(i: number, opts: { host?: string; variant?: string; vary?: string; key?: string } = {}): EntryMeta {
  const host = opts.host ?? 'example.com'
  const url = opts.key ?? `https://${host}/item/${i}`
  return {
    key: url,
    variant: opts.variant ?? '',
    url,
    host,
    status: 200,
    headers: { 'content-type': 'text/plain', ...(opts.vary ? { vary: opts.vary } : {}) },
    varyHeaders: {},
    policy: undefined,
    storedAt: i,
    staleAt: i + 1000,
    deleteAt: i + 2000,
    tags: [],
    contentType: 'text/plain',
    size: 10,
    integrity: `sha512-${i}`,
  }
}

function add(index: EntryIndex, m: EntryMeta, committedAt = m.storedAt): Handle {
  const content = new StoredContent(paths, m.integrity, m.size)
  content.refs = 1
  return index.add({ meta: m, content, committedAt, indexLines: 1 }).handle
}

describe('entry index', () => {
  it('lists 100,000 entries newest first with paging and a case-insensitive filter', () => {
    const index = new EntryIndex()
    const count = 100_000
    for (let i = 0; i < count; i++) add(index, meta(i, { host: i % 10 === 0 ? 'Img.Example.com' : 'example.com' }))
    expect(index.size).toBe(count)

    const committed = (handles: Handle[]) => handles.map((h) => index.committedAt(h))
    const first = index.list({ limit: 3 })
    expect(first.total).toBe(count)
    expect(committed(first.records)).toEqual([99_999, 99_998, 99_997])

    const deep = index.list({ offset: 50_000, limit: 2 })
    expect(committed(deep.records)).toEqual([49_999, 49_998])

    const filtered = index.list({ filter: 'IMG.example', offset: 1, limit: 2 })
    expect(filtered.total).toBe(10_000)
    expect(committed(filtered.records)).toEqual([99_980, 99_970])

    const narrow = index.list({ filter: '/item/12345' })
    expect(narrow.total).toBe(1)
    expect(index.meta(narrow.records[0]!).url).toBe('https://example.com/item/12345')

    expect(index.list({ offset: count, limit: 10 }).records).toEqual([])
    expect(index.list({ filter: 'no-such-thing' })).toEqual({ total: 0, records: [] })
  })

  it('lists in steps as in one go, while variants are removed and added between the steps', () => {
    const index = new EntryIndex()
    const count = 100
    const handles = Array.from({ length: count }, (_, i) => add(index, meta(i, { host: i % 3 === 0 ? 'Img.Example.com' : 'example.com' })))
    const scan = index.listScan({ filter: 'img.EXAMPLE', offset: 2, limit: 5 })
    let steps = 1
    // Visits 99 down to 93.
    expect(scan.step(7)).toBe(false)
    // The variant the scan visits next, one it has not reached (a match), and one it has passed.
    index.remove(handles[92]!)
    index.remove(handles[51]!)
    index.remove(handles[99]!)
    // Newer than the scan (it takes the slot just freed): not visited.
    add(index, meta(100, { host: 'img.example.com' }), 100)
    while (!scan.step(7)) steps++
    steps++
    const matched = Array.from({ length: count }, (_, i) => i).filter((i) => i % 3 === 0 && i !== 51)
    const { total, records } = scan.page()
    expect(total).toBe(matched.length)
    // Newest first from the scan's start: 99 (removed since), 96, then the page.
    expect(records.map((h) => index.committedAt(h))).toEqual([93, 90, 87, 84, 81])
    expect(steps).toBe(Math.ceil((count - 2) / 7))
    // A scan that is done no longer follows removals; nor does one closed early.
    const early = index.listScan()
    early.step(3)
    early.close()
    index.remove(handles[96]!)
    // 99 and 96 gone, 100 added.
    expect(index.list({ filter: 'img.example' }).total).toBe(matched.length - 1)
  })

  it('filters case-insensitively on the bytes of a one-byte url as on a string, and on a two-byte url', () => {
    const index = new EntryIndex()
    const urls = ['https://example.com/Ça/VA?x=ÀB', 'https://example.com/ça/va', 'https://example.com/日本/ÀB', 'https://example.com/plain']
    for (const [i, url] of urls.entries()) add(index, { ...meta(i), key: url, url })
    const matching = (filter: string) => index.list({ filter, limit: 10 }).records.map((h) => index.meta(h).url)
    const byString = (filter: string) => [...urls].reverse().filter((u) => u.toLowerCase().includes(filter.toLowerCase()))
    for (const filter of ['ÇA/va', 'àb', 'ÀB', '日本/à', 'A?X=', 'PLAIN', 'plainer', 'https://example.com/plain', '/', 'é']) expect(matching(filter)).toEqual(byString(filter))
  })

  it('filters on the url when it differs from the key', () => {
    const index = new EntryIndex()
    add(index, { ...meta(1), key: 'https://example.com/a?x=1', url: 'https://example.com/A?X=1&utm=2' })
    expect(index.list({ filter: 'utm=' }).total).toBe(1)
  })

  it('keeps eviction order by reads and listing order by commits', () => {
    const index = new EntryIndex()
    for (let i = 0; i < 3; i++) add(index, meta(i))
    index.touch('https://example.com/item/0', '', 100)
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([1, 2, 0])
    expect(index.list().records.map((h) => index.committedAt(h))).toEqual([2, 1, 0])
    expect(index.lastAccess(index.find('https://example.com/item/0', '')!)).toBe(100)
    expect(index.recency(index.find('https://example.com/item/0', '')!)).toBeGreaterThan(index.recency(index.find('https://example.com/item/2', '')!))
  })

  it('puts entries added out of order in commit order, as a store loading its index does', () => {
    const index = new EntryIndex()
    for (const i of [5, 1, 3, 2, 4]) index.add({ meta: meta(i), content: new StoredContent(paths, `sha512-${i}`, 10), committedAt: i, indexLines: 1, hot: false })
    index.orderByCommitTime()
    expect(index.list().records.map((h) => index.committedAt(h))).toEqual([5, 4, 3, 2, 1])
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([1, 2, 3, 4, 5])
  })

  it('evicts in least-recently-read order while entries are removed during the walk', () => {
    const index = new EntryIndex()
    for (let i = 0; i < 10; i++) add(index, meta(i))
    for (const i of [3, 7]) index.touch(`https://example.com/item/${i}`, '', 50)
    const evicted: number[] = []
    for (const h of index.leastRecentlyUsed()) {
      if (evicted.length === 4) break
      evicted.push(index.committedAt(h))
      index.remove(h)
    }
    expect(evicted).toEqual([0, 1, 2, 4])
    expect(index.size).toBe(6)
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([5, 6, 8, 9, 3, 7])
  })

  it('leaves entries kept in memory only out of the disk eviction order, and still finds, touches, lists and removes them', () => {
    const index = new EntryIndex()
    const memoryOnly = (i: number): Handle => {
      const m = { ...meta(i), integrity: memoryOnlyIntegrity(i) }
      return index.add({ meta: m, content: new StoredContent(paths, m.integrity, m.size), committedAt: i, indexLines: 0 }).handle
    }
    // A full disk whose least recently read end is thousands of memory-only entries.
    for (let i = 0; i < 5000; i++) memoryOnly(i)
    for (let i = 5000; i < 5003; i++) add(index, meta(i))
    memoryOnly(5003)
    expect(index.size).toBe(5004)
    // The entries a disk's entry limit counts: those on disk only.
    expect(index.onDiskCount).toBe(3)
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([5000, 5001, 5002])
    // A read moves it within its own order.
    index.touch('https://example.com/item/0', '', 9000)
    index.touch('https://example.com/item/5000', '', 9000)
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([5001, 5002, 5000])
    const all = index.handles().map((h) => index.committedAt(h))
    expect(all.slice(0, 4)).toEqual([5001, 5002, 5000, 1])
    expect(all.slice(-2)).toEqual([5003, 0])
    expect(new Set(all).size).toBe(5004)
    expect(index.list({ limit: 1 }).records.map((h) => index.committedAt(h))).toEqual([5003])
    expect(index.onDiskCount).toBe(3)
    // Replaced by a body on disk: the entry joins the disk's order.
    add(index, meta(7))
    expect([...index.leastRecentlyUsed()].map((h) => index.committedAt(h))).toEqual([5001, 5002, 5000, 7])
    expect(index.onDiskCount).toBe(4)
    index.remove(index.find('https://example.com/item/0', '')!)
    expect(index.size).toBe(5003)
    expect(index.handles()).toHaveLength(5003)
    expect(index.onDiskCount).toBe(4)
    // Its body written at last (a new content record): counted on disk from then on.
    const eight = index.find('https://example.com/item/8', '')!
    index.setContent(eight, new StoredContent(paths, 'sha512-8', 10))
    expect(index.onDiskCount).toBe(5)
    index.remove(index.find('https://example.com/item/5000', '')!)
    expect(index.onDiskCount).toBe(4)
    index.orderByCommitTime()
    expect(index.onDiskCount).toBe(4)
    expect([...index.leastRecentlyUsed()]).toHaveLength(4)
  })

  it('groups variants by key, answers their Vary values, and forgets empty keys', () => {
    const index = new EntryIndex()
    const key = 'https://example.com/page'
    const a = add(index, meta(1, { key, variant: '', vary: 'Accept-Encoding' }))
    const b = add(index, meta(2, { key, variant: 'gzip', vary: 'Accept-Encoding' }))
    // A key that is a prefix of another is not its variant.
    add(index, meta(3, { key: `${key}x` }))
    expect(index.variantsOf(key).map((h) => index.meta(h).variant).sort()).toEqual(['', 'gzip'])
    expect(index.varyOf(key)).toEqual(['Accept-Encoding'])
    const c = add(index, meta(4, { key, variant: 'lang-fr', vary: 'Accept-Language' }))
    expect([...index.varyOf(key)].sort()).toEqual(['Accept-Encoding', 'Accept-Language'])
    expect(index.find(key, 'gzip')).toBe(b)
    expect(index.find(key, 'gzi')).toBeUndefined()
    index.remove(a)
    index.remove(b)
    index.remove(c)
    expect(index.variantsOf(key)).toEqual([])
    expect(index.varyOf(key)).toEqual([])
    expect(index.size).toBe(1)
  })

  it('replaces a variant with the same id and knows the old handle is stale, even when its slot is reused', () => {
    const index = new EntryIndex()
    const first = add(index, meta(1))
    const { handle: second, replaced } = index.add({ meta: { ...meta(1), storedAt: 9 }, content: new StoredContent(paths, 'sha512-9', 10), committedAt: 9, indexLines: 2 })
    expect(replaced).toMatchObject({ id: entryId('https://example.com/item/1', ''), key: 'https://example.com/item/1', variant: '' })
    expect(replaced!.content.integrity).toBe('sha512-1')
    expect(index.live(first)).toBe(false)
    expect(index.live(second)).toBe(true)
    expect(index.meta(second).storedAt).toBe(9)
    expect(() => index.meta(first)).toThrow(/no longer in the index/)
    expect(index.size).toBe(1)
  })

  it('grows past its first capacity and keeps every entry findable', () => {
    const index = new EntryIndex({ hotEntries: 8 })
    for (let i = 0; i < 5000; i++) add(index, meta(i))
    for (let i = 0; i < 5000; i += 2) index.remove(index.find(`https://example.com/item/${i}`, '')!)
    for (let i = 5000; i < 7000; i++) add(index, meta(i))
    expect(index.size).toBe(4500)
    for (let i = 1; i < 7000; i += i < 5000 ? 2 : 1) expect(index.meta(index.find(`https://example.com/item/${i}`, '')!).storedAt).toBe(i)
    expect(index.find('https://example.com/item/0', '')).toBeUndefined()
  })

  it('keeps the packed metadata outside the heap in chunks it compacts, every entry still found and decoded after most are removed', () => {
    const index = new EntryIndex({ hotEntries: 1, arenaChunkBytes: 4096 })
    // Every fifth key has a character above 255 (packed two bytes per character).
    const keyOf = (i: number) => (i % 5 === 0 ? `https://example.com/\u65e5/${i}` : `https://example.com/item/${i}`)
    for (let i = 0; i < 3000; i++) add(index, meta(i, { key: keyOf(i), variant: `v${i % 3}` }))
    const filled = index.packedBytes
    expect(filled.held).toBeGreaterThanOrEqual(filled.live)
    // Removed in an order that leaves a few entries in every chunk: only compaction frees them.
    for (let i = 0; i < 3000; i++) if (i % 4 !== 0) index.remove(index.find(keyOf(i), `v${i % 3}`)!)
    expect(index.size).toBe(750)
    expect(index.packedBytes.held).toBeLessThan(filled.held / 2)
    for (let i = 0; i < 3000; i++) {
      const handle = index.find(keyOf(i), `v${i % 3}`)
      if (i % 4 !== 0) {
        expect(handle).toBeUndefined()
        continue
      }
      expect(index.id(handle!)).toBe(entryId(keyOf(i), `v${i % 3}`))
      expect(index.key(handle!)).toBe(keyOf(i))
      expect(index.meta(handle!)).toEqual(meta(i, { key: keyOf(i), variant: `v${i % 3}` }))
      expect(index.purgeFields(handle!)).toMatchObject({ key: keyOf(i), variant: `v${i % 3}`, storedAt: i })
    }
    expect(index.find(keyOf(4), 'v0')).toBeUndefined()
    expect(index.list({ filter: '\u65e5/2980' }).total).toBe(1)
  })

  it('grows its slots by an eighth, in place, within the address space it reserved', () => {
    const index = new EntryIndex()
    for (let i = 0; i < 1024; i++) add(index, meta(i))
    expect(index.capacity).toBe(1024)
    const reserved = index.reservedSlots
    expect(reserved).toBe(2 ** 20)
    add(index, meta(1024))
    expect(index.capacity).toBe(1152)
    for (let i = 1025; i < 1153; i++) add(index, meta(i))
    expect(index.capacity).toBe(1296)
    // No copy: the same reservation, and the arrays only as long as the slots (17 arrays, 85 bytes a slot).
    expect(index.reservedSlots).toBe(reserved)
    expect(index.slotCopies).toBe(1)
    expect(index.slotBytes).toBe(1296 * 85)
    for (let i = 0; i < 1153; i++) expect(index.find(`https://example.com/item/${i}`, '')).toBeDefined()
  })

  it('uses a removed slot again before it grows', () => {
    const index = new EntryIndex()
    for (let i = 0; i < 1024; i++) add(index, meta(i))
    for (let i = 0; i < 10; i++) index.remove(index.find(`https://example.com/item/${i}`, '')!)
    for (let i = 1024; i < 1034; i++) add(index, meta(i))
    expect(index.capacity).toBe(1024)
    for (let i = 10; i < 1034; i++) expect(index.meta(index.find(`https://example.com/item/${i}`, '')!).storedAt).toBe(i)
  })

  it('decodes metadata equal to what was added, and keeps the hottest decoded as the same object', () => {
    const index = new EntryIndex({ hotEntries: 2 })
    const m = { ...meta(1), origin: 'https://origin.example/', via: 'peer:node-2' }
    const h = add(index, m)
    expect(index.meta(h)).toBe(m)
    for (let i = 2; i < 5; i++) add(index, meta(i))
    // Pushed out of the decoded set: decoded again from the packed form, equal but new.
    const again = index.meta(h)
    expect(again).not.toBe(m)
    expect(again).toEqual(m)
    expect(Object.isFrozen(again) && Object.isFrozen(again.headers)).toBe(true)
    expect(index.meta(h)).toBe(again)
  })

  it('keeps an entry asked for again decoded when another is decoded, dropping one not asked for since', () => {
    const index = new EntryIndex({ hotEntries: 3 })
    const handles = [1, 2, 3].map((i) => add(index, meta(i)))
    const first = index.meta(handles[0]!)
    const third = index.meta(handles[2]!)
    add(index, meta(4))
    // The second, not asked for, made room; the first and third are the same objects still.
    expect(index.meta(handles[0]!)).toBe(first)
    expect(index.meta(handles[2]!)).toBe(third)
    const second = index.meta(handles[1]!)
    expect(second).toEqual(meta(2))
    expect(index.meta(handles[1]!)).toBe(second)
  })

  it('keeps an entry decoded when its content changes, with the new content\'s size and digest', () => {
    const index = new EntryIndex({ hotEntries: 2 })
    const h = add(index, meta(1))
    const before = index.meta(h)
    const written = new StoredContent(paths, 'sha256-written', 12)
    written.refs = 1
    index.setContent(h, written)
    const after = index.meta(h)
    expect(after).toEqual({ ...meta(1), size: 12, integrity: 'sha256-written' })
    expect(Object.isFrozen(after)).toBe(true)
    // Not decoded again from the packed form: the decoded fields are the same objects.
    expect(after.headers).toBe(before.headers)
    expect(index.meta(h)).toBe(after)
  })

  it('gives a purge the fields it matches on without decoding an entry or changing which stay decoded', () => {
    const index = new EntryIndex({ hotEntries: 2 })
    const handles = [1, 2, 3, 4].map((i) => add(index, { ...meta(i), tags: [`t${i}`] }))
    // The last two added are the decoded ones.
    const hot = [index.meta(handles[2]!), index.meta(handles[3]!)]
    const fields = handles.map((h) => index.purgeFields(h))
    expect(fields.map((f) => [f.url, f.tags, f.storedAt])).toEqual([1, 2, 3, 4].map((i) => [`https://example.com/item/${i}`, [`t${i}`], i]))
    // A pass over every entry left the same two decoded, as the same objects.
    expect(index.meta(handles[2]!)).toBe(hot[0])
    expect(index.meta(handles[3]!)).toBe(hot[1])
  })

  it('updates metadata, Vary and deleteAt in place', () => {
    const index = new EntryIndex()
    const h = add(index, meta(1))
    index.updateMeta(h, { ...meta(1), deleteAt: 77, headers: { vary: 'Accept' } })
    expect(index.deleteAt(h)).toBe(77)
    expect(index.varyOf('https://example.com/item/1')).toEqual(['Accept'])
    expect(index.meta(h).deleteAt).toBe(77)
  })
})
