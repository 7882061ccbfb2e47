import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Kysely, SqliteDialect } from 'kysely'
import type SQLite from 'better-sqlite3'
import type { Database } from './database.ts'
import {
  DeepOffsetError,
  InvalidCursorError,
  MAX_LIST_OFFSET,
  OldCursorError,
  clearManifest,
  countEntries,
  entriesMissingOn,
  getNode,
  insertPurge,
  lastAppliedPurge,
  latestPurgeId,
  listManifest,
  listNodes,
  markPurgeApplied,
  matchesPurge,
  pruneExpired,
  purgesAfter,
  recordDeleted,
  recordNodeCleared,
  recordStored,
  upsertNode,
} from './repositories.ts'
import type { NewPurge } from './repositories.ts'
import { entry, freshManifest } from './test-helpers.ts'

const T = 1_700_000_000_000

describe('manifest repositories', () => {
  let db: Kysely<Database>
  let sqlite: SQLite.Database
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    const m = await freshManifest()
    db = m.db
    sqlite = m.sqlite
    cleanup = m.cleanup
  })
  afterEach(async () => {
    await cleanup()
  })

  const node = (id: string, startedAt = T) => ({ id, region: 'ams', internalUrl: `http://${id}:8080`, startedAt })

  it('upsertNode is idempotent, keeps last_seen_at monotonic and never resets purge progress', async () => {
    await upsertNode(db, node('a'), T + 10)
    await upsertNode(db, node('a'), T + 10)
    await markPurgeApplied(db, 'a', 7)
    await upsertNode(db, { ...node('a', T + 5), internalUrl: 'http://a2:8080' }, T + 5)
    expect(await listNodes(db)).toEqual([
      { id: 'a', region: 'ams', internalUrl: 'http://a2:8080', startedAt: T + 5, lastSeenAt: T + 10, lastPurgeId: 7 },
    ])
  })

  it('recordStored is an idempotent upsert of the entry and the holding', async () => {
    const e = entry({ url: 'https://ex.com/a', tags: ['t1'], varyHeaders: { 'accept-encoding': 'br' } })
    await recordStored(db, 'a', e)
    await recordStored(db, 'a', e)
    await recordStored(db, 'b', { ...e, storedAt: T + 1000, staleAt: T + 9000 })
    // An older copy arriving late does not roll the metadata back.
    await recordStored(db, 'c', { ...e, storedAt: T - 1000, staleAt: T })
    expect(await countEntries(db)).toBe(1)
    const { entries, total } = await listManifest(db)
    expect(total).toBe(1)
    expect(entries[0]).toMatchObject({ url: 'https://ex.com/a', storedAt: T + 1000, staleAt: T + 9000, tags: ['t1'], nodeIds: ['a', 'b', 'c'] })
    expect(entries[0]!.varyHeaders).toEqual({ 'accept-encoding': 'br' })
    expect(await countEntries(db, { nodeId: 'b' })).toBe(1)
  })

  it('recordDeleted drops only that node’s holding; the entry stays for populate', async () => {
    const e = entry({ url: 'https://ex.com/a' })
    await recordStored(db, 'a', e)
    await recordStored(db, 'b', e)
    expect(await recordDeleted(db, 'a', e.key, e.variant)).toBe(true)
    expect(await recordDeleted(db, 'a', e.key, e.variant)).toBe(false)
    expect((await listManifest(db)).entries[0]!.nodeIds).toEqual(['b'])
    expect(await recordNodeCleared(db, 'b')).toBe(1)
    expect((await listManifest(db)).entries[0]!.nodeIds).toEqual([])
    expect(await countEntries(db)).toBe(1)
  })

  it('listManifest pages newest first and filters by URL substring, host and node', async () => {
    for (let i = 0; i < 25; i++) {
      const host = i % 2 ? 'a.example' : 'b.example'
      await recordStored(db, i % 3 ? 'n1' : 'n2', entry({ url: `https://${host}/page/${i}_x`, storedAt: T + i }))
    }
    const first = await listManifest(db, { limit: 10 })
    expect(first.total).toBe(25)
    expect(first.entries.map((e) => e.storedAt)).toEqual(Array.from({ length: 10 }, (_, i) => T + 24 - i))
    const last = await listManifest(db, { limit: 10, offset: 20 })
    expect(last.entries.map((e) => e.storedAt)).toEqual([T + 4, T + 3, T + 2, T + 1, T])

    expect((await listManifest(db, { filter: 'PAGE/1' })).total).toBe(11) // 1, 10..19: case-insensitive
    expect((await listManifest(db, { filter: '/page/2', host: 'a.example' })).entries.map((e) => e.url)).toEqual([
      'https://a.example/page/23_x',
      'https://a.example/page/21_x',
    ])
    // % and _ are literal characters, not wildcards.
    expect((await listManifest(db, { filter: '%' })).total).toBe(0)
    expect((await listManifest(db, { filter: '1_x' })).total).toBe(3) // 1_x, 11_x, 21_x
    const onN2 = await listManifest(db, { nodeId: 'n2', limit: 100 })
    expect(onN2.total).toBe(9)
    expect(onN2.entries.every((e) => e.nodeIds.includes('n2'))).toBe(true)
  })

  it('listManifest pages by cursor both ways and to the last page, and skips at most MAX_LIST_OFFSET entries', async () => {
    for (let i = 0; i < 23; i++) await recordStored(db, 'n1', entry({ url: `https://ex.com/${i % 2 ? 'odd' : 'even'}/${i}`, storedAt: T + i }))
    const at = (page: { entries: Array<{ storedAt: number }> }) => page.entries.map((e) => e.storedAt - T)
    const range = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, i) => from - i)
    const first = await listManifest(db, { limit: 10 })
    expect({ at: at(first), offset: first.offset, prev: first.prevCursor }).toEqual({ at: range(22, 13), offset: 0, prev: undefined })
    const second = await listManifest(db, { limit: 10, cursor: first.nextCursor })
    expect(at(second)).toEqual(range(12, 3))
    const third = await listManifest(db, { limit: 10, cursor: second.nextCursor })
    // The last page says so: no cursor to an empty page after it.
    expect({ at: at(third), next: third.nextCursor }).toEqual({ at: [2, 1, 0], next: undefined })
    // Back from the third page to the second, and from there to the first.
    const back = await listManifest(db, { limit: 10, cursor: third.prevCursor })
    expect({ at: at(back), offset: back.offset }).toEqual({ at: range(12, 3), offset: undefined })
    const backToFirst = await listManifest(db, { limit: 10, cursor: back.prevCursor })
    expect({ at: at(backToFirst), offset: backToFirst.offset, prev: backToFirst.prevCursor }).toEqual({ at: range(22, 13), offset: 0, prev: undefined })
    // The last page lines up with the pages counted from the first: 23 entries, pages of 10, the last holds 3.
    const last = await listManifest(db, { limit: 10, cursor: first.lastCursor })
    expect({ at: at(last), offset: last.offset, next: last.nextCursor }).toEqual({ at: [2, 1, 0], offset: 20, next: undefined })
    expect(at(await listManifest(db, { limit: 10, cursor: last.prevCursor }))).toEqual(range(12, 3))
    // Walking back from a page that starts 4 entries in: the first page, whole.
    const fromFifth = await listManifest(db, { limit: 10, offset: 4 })
    const before = await listManifest(db, { limit: 10, cursor: fromFifth.prevCursor })
    expect({ at: at(before), offset: before.offset }).toEqual({ at: range(22, 13), offset: 0 })
    // With a filter, the same in both directions.
    const odd = await listManifest(db, { limit: 4, filter: '/odd/' })
    const oddLast = await listManifest(db, { limit: 4, filter: '/odd/', cursor: odd.lastCursor })
    expect({ total: odd.total, at: at(oddLast), offset: oddLast.offset }).toEqual({ total: 11, at: [5, 3, 1], offset: 8 })
    const oddBack = await listManifest(db, { limit: 4, filter: '/odd/', cursor: oddLast.prevCursor })
    expect(at(oddBack)).toEqual([13, 11, 9, 7])
    // A deep offset would walk every entry before it: refused, with what to do instead.
    expect((await listManifest(db, { offset: MAX_LIST_OFFSET, limit: 1 })).entries).toEqual([])
    await expect(listManifest(db, { offset: MAX_LIST_OFFSET + 1 })).rejects.toThrow(DeepOffsetError)
    await expect(listManifest(db, { offset: MAX_LIST_OFFSET + 1 })).rejects.toThrow(/by cursor/)
    for (const bad of ['nonsense', Buffer.from('["before",1,"k"]').toString('base64url'), Buffer.from('["first"]').toString('base64url'), Buffer.from('["after",1.5,2]').toString('base64url')]) {
      await expect(listManifest(db, { cursor: bad })).rejects.toThrow(InvalidCursorError)
    }
  })

  it('listManifest pages across entries stored at the same time, each once, both ways', async () => {
    // 23 entries, five per millisecond: every page edge falls inside a run of equal stored_at.
    for (let i = 0; i < 23; i++) await recordStored(db, 'n1', entry({ url: `https://ex.com/${(i * 7) % 23}`, storedAt: T + Math.floor(i / 5) }))
    const urls = (page: { entries: Array<{ url: string }> }) => page.entries.map((e) => e.url)
    const forward: string[] = []
    const pages: Array<Awaited<ReturnType<typeof listManifest>>> = []
    for (let page = await listManifest(db, { limit: 4 }); ; page = await listManifest(db, { limit: 4, cursor: page.nextCursor })) {
      pages.push(page)
      forward.push(...urls(page))
      if (!page.nextCursor) break
    }
    expect(pages).toHaveLength(6)
    expect(forward).toHaveLength(23)
    expect(new Set(forward).size).toBe(23)
    // Newest first; within one time, the later insert first.
    const stored = Array.from({ length: 23 }, (_, i) => ({ url: `https://ex.com/${(i * 7) % 23}`, at: Math.floor(i / 5), i }))
    expect(forward).toEqual(stored.sort((a, b) => b.at - a.at || b.i - a.i).map((e) => e.url))
    // Back from the last page, page by page: the same pages.
    const backward: string[][] = []
    for (let page = await listManifest(db, { limit: 4, cursor: pages[0]!.lastCursor }); ; page = await listManifest(db, { limit: 4, cursor: page.prevCursor })) {
      backward.unshift(urls(page))
      if (!page.prevCursor) break
    }
    expect(backward.flat()).toEqual(forward)
  })

  it('refuses a cursor of the list ordered by key, saying to start again from the first page', async () => {
    await recordStored(db, 'n1', entry({ url: 'https://ex.com/a', storedAt: T }))
    // As the list made them before it ordered equal times by id: [storedAt, key, variant] and ["before", storedAt, key, variant].
    for (const old of [[T, 'https://ex.com/a', ''], ['before', T, 'https://ex.com/a', '']]) {
      const cursor = Buffer.from(JSON.stringify(old)).toString('base64url')
      await expect(listManifest(db, { cursor })).rejects.toThrow(OldCursorError)
      await expect(listManifest(db, { cursor })).rejects.toThrow(/first page again/)
    }
  })

  it('entriesMissingOn lists fresh entries this node lacks, with the holders’ internal URLs', async () => {
    await upsertNode(db, node('a'), T)
    await upsertNode(db, node('b'), T + 50)
    const now = T + 1000
    const held = entry({ url: 'https://ex.com/held', staleAt: now + 10 })
    const lacked = entry({ url: 'https://ex.com/lacked', staleAt: now + 10, varyHeaders: { 'accept-language': 'fr' } })
    const stale = entry({ url: 'https://ex.com/stale', staleAt: now })
    const orphan = entry({ url: 'https://ex.com/orphan', staleAt: now + 10 })
    await recordStored(db, 'me', held)
    await recordStored(db, 'a', held)
    await recordStored(db, 'a', lacked)
    await recordStored(db, 'b', lacked)
    await recordStored(db, 'a', stale)
    await recordStored(db, 'x', orphan)
    await recordDeleted(db, 'x', orphan.key, '')

    const missing = await entriesMissingOn(db, 'me', now)
    expect(missing.map((m) => m.url)).toEqual(['https://ex.com/lacked', 'https://ex.com/orphan'])
    expect(missing[0]!.varyHeaders).toEqual({ 'accept-language': 'fr' })
    expect(missing[0]!.holders).toEqual([
      { nodeId: 'b', internalUrl: 'http://b:8080', lastSeenAt: T + 50 },
      { nodeId: 'a', internalUrl: 'http://a:8080', lastSeenAt: T },
    ])
    expect(missing[1]!.holders).toEqual([])

    const page1 = await entriesMissingOn(db, 'me', now, { limit: 1 })
    const page2 = await entriesMissingOn(db, 'me', now, { limit: 1, after: page1[0]! })
    expect([...page1, ...page2].map((m) => m.url)).toEqual(['https://ex.com/lacked', 'https://ex.com/orphan'])
  })

  it('records purges once per request id and drops the matching entries', async () => {
    const put = (url: string, tags: string[] = []) => recordStored(db, 'a', entry({ url, tags }))
    await put('https://ex.com/a')
    await put('https://ex.com/a?x=1')
    await put('https://ex.com/blog/1', ['blog'])
    await put('https://ex.com/blog/2', ['blog', 'home'])
    await put('https://other.com/blog/3', ['blog'])
    await recordStored(db, 'a', entry({ url: 'https://ex.com/a', variant: 'br' }))

    const purge = (p: Partial<NewPurge> & Pick<NewPurge, 'kind' | 'value'>): NewPurge => ({
      requestId: `${p.kind}:${p.value}:${p.host}`,
      host: null,
      createdAt: T,
      createdBy: 'test',
      nodeId: 'a',
      ...p,
    })
    const byUrl = await insertPurge(db, purge({ kind: 'url', value: 'https://ex.com/a' }))
    expect(byUrl).toMatchObject({ inserted: true, removed: 2 }) // both variants
    const byTag = await insertPurge(db, purge({ kind: 'tag', value: 'blog', host: 'ex.com' }))
    expect(byTag).toMatchObject({ inserted: true, removed: 2 })
    expect((await listManifest(db)).entries.map((e) => e.url).sort()).toEqual(['https://ex.com/a?x=1', 'https://other.com/blog/3'])

    // Redelivery of the same request changes nothing, even for entries stored since.
    await recordStored(db, 'a', entry({ url: 'https://ex.com/a', storedAt: T + 1 }))
    expect(await insertPurge(db, purge({ kind: 'url', value: 'https://ex.com/a' }))).toEqual({ id: byUrl.id, inserted: false, removed: 0 })
    expect(await countEntries(db)).toBe(3)

    // A purge covers only what was stored before it.
    expect(await insertPurge(db, purge({ kind: 'prefix', value: 'https://ex.com/', requestId: 'before' }))).toMatchObject({ removed: 1 })
    expect(await insertPurge(db, purge({ kind: 'prefix', value: 'https://EX.com/', createdAt: T + 2 }))).toMatchObject({ removed: 0 })
    expect(await insertPurge(db, purge({ kind: 'prefix', value: 'https://ex.com/', createdAt: T + 2 }))).toMatchObject({ removed: 1 })
    expect(await insertPurge(db, purge({ kind: 'all', value: '', createdAt: T + 2 }))).toMatchObject({ removed: 1 })

    const all = await purgesAfter(db, 0)
    expect(all.map((p) => p.kind)).toEqual(['url', 'tag', 'prefix', 'prefix', 'prefix', 'all'])
    expect(all[1]).toMatchObject({ host: 'ex.com', value: 'blog', createdBy: 'test', nodeId: 'a' })
    expect((await purgesAfter(db, all[3]!.id)).map((p) => p.id)).toEqual([all[4]!.id, all[5]!.id])
    expect(await latestPurgeId(db)).toBe(all[5]!.id)
  })

  it('markPurgeApplied never moves a node backwards', async () => {
    await upsertNode(db, node('a'), T)
    await markPurgeApplied(db, 'a', 5)
    await markPurgeApplied(db, 'a', 3)
    expect(await lastAppliedPurge(db, 'a')).toBe(5)
    expect((await getNode(db, 'a'))!.lastPurgeId).toBe(5)
    expect(await lastAppliedPurge(db, 'nobody')).toBe(0)
  })

  it('matchesPurge agrees with the SQL used on the manifest', async () => {
    const entries = [
      entry({ url: 'https://ex.com/a', tags: ['x'] }),
      entry({ url: 'https://ex.com/a/b', tags: ['y', 'x'] }),
      entry({ url: 'https://ex.com/A', tags: [] }),
      entry({ url: 'https://o.com/a', tags: ['x'] }),
      entry({ url: 'https://ex.com/c?x', key: 'https://ex.com/a', variant: 'v1' }),
    ]
    const purges: Pick<NewPurge, 'kind' | 'value' | 'host'>[] = [
      { kind: 'url', value: 'https://ex.com/a', host: null },
      { kind: 'prefix', value: 'https://ex.com/a', host: null },
      { kind: 'tag', value: 'x', host: null },
      { kind: 'tag', value: 'x', host: 'o.com' },
      { kind: 'all', value: '', host: 'ex.com' },
      { kind: 'all', value: '', host: null },
    ]
    for (const [i, p] of purges.entries()) {
      await clearManifest(db)
      // Stored after the previous rounds' purges, before this one's.
      const at = T + i * 10
      for (const e of entries) await recordStored(db, 'n', { ...e, storedAt: at + 1 })
      await insertPurge(db, { ...p, requestId: `r${i}`, createdAt: at + 2, createdBy: 't', nodeId: 'n' })
      const left = (await listManifest(db)).entries.map((e) => e.url).sort()
      const expected = entries.filter((e) => !matchesPurge(p, e)).map((e) => e.url).sort()
      expect(left, JSON.stringify(p)).toEqual(expected)
    }
  })

  it('clearManifest empties entries and holdings and says how many; pruneExpired drops dead entries', async () => {
    await recordStored(db, 'a', entry({ url: 'https://ex.com/1', deleteAt: T + 10 }))
    await recordStored(db, 'b', entry({ url: 'https://ex.com/1', deleteAt: T + 10 }))
    await recordStored(db, 'a', entry({ url: 'https://ex.com/2', deleteAt: T + 20 }))
    expect(await pruneExpired(db, T + 10)).toBe(1)
    expect(await db.selectFrom('entry_nodes').selectAll().execute()).toHaveLength(1) // cascaded
    expect(await clearManifest(db)).toBe(1)
    expect(await countEntries(db)).toBe(0)
    expect(await db.selectFrom('entry_nodes').selectAll().execute()).toHaveLength(0)
  })

  it('reads one page of 100,000 entries through indexes, never the whole table', async () => {
    // Bulk-load through one prepared statement: this test measures reads.
    const rows = Array.from({ length: 100_000 }, (_, i) => entry({ url: `https://ex.com/p/${i}`, storedAt: T + i, staleAt: T + i + 1000 }))
    await db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += 500) {
        const chunk = rows.slice(i, i + 500)
        const ids = await trx
          .insertInto('entries')
          .values(
            chunk.map((e) => ({
              key: e.key,
              variant: e.variant,
              host: e.host,
              url: e.url,
              status: e.status,
              size: e.size,
              content_type: e.contentType,
              stored_at: e.storedAt,
              stale_at: e.staleAt,
              delete_at: e.deleteAt,
              tags: '[]',
              vary_headers: '{}',
            })),
          )
          .returning(['id', 'stored_at'])
          .execute()
        await trx
          .insertInto('entry_nodes')
          .values(ids.map((r) => ({ entry_id: r.id, node_id: 'n1', stored_at: r.stored_at })))
          .execute()
      }
    })
    // What SQLite does for each query, not how long it took (speed belongs to bench/): every query
    // the repositories run goes through a logging handle on the same file, and its plan is read back.
    const queries: Array<{ sql: string; parameters: readonly unknown[] }> = []
    const logged = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }), log: (e) => void queries.push(e.query) })
    const plans = async <R>(fn: (db: Kysely<Database>) => Promise<R>): Promise<[R, string[]]> => {
      queries.length = 0
      const r = await fn(logged)
      const details = queries.flatMap((q) => (sqlite.prepare(`EXPLAIN QUERY PLAN ${q.sql}`).all(...q.parameters) as Array<{ detail: string }>).map((p) => p.detail))
      return [r, details]
    }
    const [firstPage, pFirst] = await plans((d) => listManifest(d, { limit: 50 }))
    expect(firstPage.total).toBe(100_000)
    expect(firstPage.entries).toHaveLength(50)
    expect(firstPage.entries[0]).toMatchObject({ url: 'https://ex.com/p/99999', nodeIds: ['n1'] })
    const [lastPage, pLast] = await plans((d) => listManifest(d, { limit: 50, cursor: firstPage.lastCursor }))
    expect(lastPage.entries).toHaveLength(50)
    expect(lastPage.entries.at(-1)!.url).toBe('https://ex.com/p/0')
    const [beforeLast, pBefore] = await plans((d) => listManifest(d, { limit: 50, cursor: lastPage.prevCursor }))
    expect(beforeLast.entries.map((e) => e.url)).toEqual(Array.from({ length: 50 }, (_, i) => `https://ex.com/p/${99 - i}`))
    const [filtered, pFilter] = await plans((d) => listManifest(d, { filter: '/p/4242', limit: 50 }))
    expect(filtered.total).toBe(11)
    const [missing, pMissing] = await plans((d) => entriesMissingOn(d, 'n2', T, { limit: 1000 }))
    expect(missing).toHaveLength(1000)
    // A page walks an index in the page's order and fetches its rows by rowid: no query reads a
    // table row by row without an index (a bare "SCAN entries" would read and sort all 100,000
    // rows for 50). The filter finds its candidates in the trigram index (entries_search).
    for (const [what, details] of Object.entries({ pFirst, pLast, pBefore, pFilter, pMissing })) {
      expect(details.filter((d) => /^SCAN (e|en|n|mine|entries|entry_nodes|nodes)$/.test(d)), what).toEqual([])
    }
    expect(pFirst).toContain('SCAN e USING COVERING INDEX entries_stored_at')
    expect(pFirst).toContain('SEARCH e USING INTEGER PRIMARY KEY (rowid=?)')
    // The last page and the page before a cursor walk the same index from the other end.
    expect(pLast).toContain('SCAN e USING COVERING INDEX entries_stored_at')
    expect(pBefore).toContain('SEARCH e USING COVERING INDEX entries_stored_at (stored_at>?)')
    expect(pFilter.some((d) => d.startsWith('SCAN entries_search VIRTUAL TABLE'))).toBe(true)
    expect(pMissing.some((d) => /^SCAN e USING INDEX entries_key/.test(d))).toBe(true)
  })
})
