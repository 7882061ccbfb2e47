// The admin list's filter and paging at scale, on real SQLite files.

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Kysely } from 'kysely'
import { sql } from 'kysely'
import { openDatabase } from './database.ts'
import type { Database } from './database.ts'
import { applyOps } from './ops.ts'
import type { ManifestOp } from './ops.ts'
import { FILTER_COUNT_CAP, InvalidCursorError, clearManifest, listManifest } from './repositories.ts'
import type { EntryRecord } from './repositories.ts'
import { indexQueued, indexedMatchesUpTo, queuedForIndex } from './search.ts'
import { entry, freshManifest } from './test-helpers.ts'

const T = 1_700_000_000_000

describe('URL filter and keyset paging', () => {
  let m: Awaited<ReturnType<typeof freshManifest>>
  let db: Kysely<Database>
  beforeEach(async () => {
    m = await freshManifest()
    db = m.db
  })
  afterEach(async () => {
    await m.cleanup()
  })

  const stored = (url: string, at: number, nodeId = 'n1'): ManifestOp => ({ type: 'stored', nodeId, entry: entry({ url, storedAt: at }) })
  const all = async (): Promise<Pick<EntryRecord, 'url' | 'key'>[]> =>
    db.selectFrom('entries').select(['url', 'key']).orderBy('stored_at', 'desc').orderBy('key', 'desc').orderBy('variant', 'desc').execute()
  /** What the filter must find: a case-insensitive substring of the URL (ASCII). */
  const expected = async (filter: string) => (await all()).filter((e) => e.url.toLowerCase().includes(filter.toLowerCase())).map((e) => e.url)
  const found = async (filter: string) => (await listManifest(db, { filter, limit: 1000 })).entries.map((e) => e.url)
  const integrityCheck = () => sql`insert into entries_search (entries_search) values ('integrity-check')`.execute(db)

  it('finds the same entries as a scan, before, during and after indexing, through updates, deletes, purges and clears', async () => {
    const filters = ['blog', 'BLOG/1', 'page-7', 'ex.com/shop', '/', 'zz', 'x', '"quoted"', '%', 'none-such']
    const check = async (when: string) => {
      for (const f of filters) expect(await found(f), `${when}: ${f}`).toEqual(await expected(f))
    }
    const ops: ManifestOp[] = []
    for (let i = 0; i < 120; i++) ops.push(stored(`https://ex.com/${['blog', 'shop', 'docs'][i % 3]}/${i}/page-${i}`, T + i))
    ops.push(stored('https://ex.com/"quoted"/a', T + 500))
    await applyOps(db, ops)
    expect(await queuedForIndex(db)).toBe(121)
    await check('nothing indexed yet')
    await indexQueued(db, 50)
    await check('half indexed')
    await indexQueued(db, 10_000)
    expect(await queuedForIndex(db)).toBe(0)
    await check('all indexed')

    // A URL change of an existing key, deletes through a purge, and rowid reuse after deleting the newest row.
    await applyOps(db, [
      stored('https://ex.com/blog/1/page-1', T + 1000),
      { type: 'stored', nodeId: 'n1', entry: { ...entry({ url: 'https://ex.com/moved/page-2', storedAt: T + 1001 }), key: 'https://ex.com/shop/2/page-2' } },
      { type: 'purge', purge: { requestId: 'p1', kind: 'prefix', value: 'https://ex.com/docs/', host: null, createdAt: T + 900, createdBy: 'x', nodeId: 'n1' } },
    ])
    await check('changed, not re-indexed')
    await indexQueued(db, 10_000)
    await check('changed and re-indexed')
    await db.deleteFrom('entries').where('url', '=', 'https://ex.com/"quoted"/a').execute()
    await applyOps(db, [stored('https://ex.com/blog/reused', T + 2000)])
    await check('rowid reused')
    await indexQueued(db, 10_000)
    await check('rowid reused, indexed')
    await integrityCheck()

    await clearManifest(db)
    expect(await queuedForIndex(db)).toBe(0)
    await applyOps(db, [stored('https://ex.com/blog/after-clear', T + 3000)])
    await indexQueued(db, 10_000)
    expect(await found('blog')).toEqual(['https://ex.com/blog/after-clear'])
    await integrityCheck()
  })

  it('asks the index for the rows holding the trigrams that cover the filter (of characters, not UTF-16 units); the row decides', async () => {
    await applyOps(db, [
      stored('https://ex.com/abc-only', T),
      stored('https://ex.com/abc-x-bcd', T + 1),
      stored('https://ex.com/abcd', T + 2),
      stored('https://ex.com/\u{1F600}ab', T + 3),
      stored(`https://ex.com/${'segment-'.repeat(12)}end`, T + 4),
    ])
    await indexQueued(db, 10_000)
    // Without positions the index cannot tell abc-x-bcd from abcd; the URL itself does.
    expect(await indexedMatchesUpTo(db, 'abcd', 10)).toBe(2)
    expect(await found('abcd')).toEqual(['https://ex.com/abcd'])
    expect(await indexedMatchesUpTo(db, '\u{1F600}ab', 10)).toBe(1)
    expect(await found('\u{1F600}ab')).toEqual(['https://ex.com/\u{1F600}ab'])
    // A long filter asks for some of its trigrams, spread over it.
    expect(await found(`${'segment-'.repeat(12)}end`)).toEqual([`https://ex.com/${'segment-'.repeat(12)}end`])
  })

  it('two writers indexing the same queue at once (nodes sharing the file without LiteFS) leave a sound index', async () => {
    const other = openDatabase({ path: m.path })
    try {
      const ops: ManifestOp[] = []
      for (let i = 0; i < 1500; i++) ops.push(stored(`https://ex.com/c/${i}`, T + i))
      await applyOps(db, ops)
      const run = async (d: Kysely<Database>) => {
        // Busy answers are expected: the other writer holds the lock; try again until the queue is empty.
        while ((await queuedForIndex(d)) > 0) await indexQueued(d, 300).catch(() => true)
      }
      await Promise.all([run(db), run(other.db)])
      await integrityCheck()
      expect(await found('c/149')).toEqual(await expected('c/149'))
    } finally {
      await other.db.destroy()
    }
  })

  it('pages with a cursor exactly as with offsets, and refuses a cursor it did not make', async () => {
    const ops: ManifestOp[] = []
    // Equal timestamps: the order falls back to key, then variant.
    for (let i = 0; i < 57; i++) ops.push(stored(`https://ex.com/k/${i}`, T + Math.floor(i / 5)))
    await applyOps(db, ops)
    const byOffset: string[] = []
    for (let offset = 0; ; offset += 10) {
      const page = await listManifest(db, { offset, limit: 10 })
      byOffset.push(...page.entries.map((e) => e.url))
      if (page.entries.length < 10) break
    }
    const byCursor: string[] = []
    let cursor: string | undefined
    do {
      const page = await listManifest(db, cursor ? { cursor, limit: 10, offset: 999 } : { limit: 10 })
      byCursor.push(...page.entries.map((e) => e.url))
      cursor = page.nextCursor
    } while (cursor)
    expect(byCursor).toEqual(byOffset)
    expect(byCursor).toHaveLength(57)
    await expect(listManifest(db, { cursor: 'not-a-cursor' })).rejects.toBeInstanceOf(InvalidCursorError)
    await expect(listManifest(db, { cursor: Buffer.from('[1,2,3]').toString('base64url') })).rejects.toBeInstanceOf(InvalidCursorError)
  })

  it(`counts a common filter's matches up to ${FILTER_COUNT_CAP} and says there are more`, async () => {
    const now = T
    m.sqlite.transaction(() => {
      const e = m.sqlite.prepare(
        `insert into entries (key, variant, host, url, status, size, content_type, stored_at, stale_at, delete_at, tags, vary_headers) values (?, '', 'ex.com', ?, 200, 1, '', ?, ?, ?, '[]', '{}')`,
      )
      for (let i = 0; i < FILTER_COUNT_CAP + 50; i++) e.run(`k${i}`, `https://ex.com/common/${i}`, now + i, now + 60_000, now + 120_000)
      for (let i = 0; i < 7; i++) e.run(`r${i}`, `https://ex.com/rare/${i}`, now + i, now + 60_000, now + 120_000)
    })()
    await indexQueued(db, 100_000)
    const common = await listManifest(db, { filter: '/common/', limit: 3 })
    expect(common).toMatchObject({ total: FILTER_COUNT_CAP, totalIsLowerBound: true })
    expect(common.entries.map((e) => e.url)).toEqual([2, 1, 0].map((d) => `https://ex.com/common/${FILTER_COUNT_CAP + 47 + d}`))
    const next = await listManifest(db, { filter: '/common/', limit: 3, cursor: common.nextCursor })
    expect(next.entries.map((e) => e.url)).toEqual([2, 1, 0].map((d) => `https://ex.com/common/${FILTER_COUNT_CAP + 44 + d}`))
    expect(await listManifest(db, { filter: '/RARE/', limit: 3 })).toMatchObject({ total: 7, totalIsLowerBound: false })
    // Narrowed by host, the index's count says nothing: matches are counted.
    expect(await listManifest(db, { filter: '/common/', host: 'other.test' })).toMatchObject({ total: 0, totalIsLowerBound: false, entries: [] })
    expect((await listManifest(db, {})).total).toBe(FILTER_COUNT_CAP + 57)
  })
})
