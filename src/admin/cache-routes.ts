// The cache and cluster actions: list, purge, populate, clear. Each answers a
// form post with 303 + message and a script (Accept: application/json or a
// bearer token) with JSON.

import type { Context, Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { canonicalUrl, canonicalUrlPrefix } from '../canonical-url.ts'
import { CONFIRM_ACTIONS, ConfirmPage, type ConfirmAction } from '../../views/confirm.tsx'
import { DEFAULT_LIMIT, ListPage, populateSummary } from '../../views/list.tsx'
import type { Chrome } from '../../views/layout.tsx'
import { PurgeConfirmPage, PurgeHistoryPage } from '../../views/purges.tsx'
import { PERIODS, TrafficPage, type TrafficPeriod } from '../../views/traffic.tsx'
import { PATHS } from '../../views/paths.ts'
import { TEXT } from '../../views/text.ts'
import type { PurgeRequest } from './actions.ts'
import { actor, formPage, requireAdmin } from './auth.ts'
import type { AdminEnv, Auth, Shared } from './context.ts'
import { field, finish, readBody, renderPage, takeFlash, wantsJson, type Body } from './http.ts'
import * as repo from './repo.ts'
import { DeepOffsetError, InvalidCursorError } from '../manifest/repositories.ts'

export const MAX_LIMIT = 500

/**
 * Actions that act on the node they are asked on (populate warms it, Clear FS empties its disk,
 * purge applies here first); their manifest writes go through the writer. A replica keeps them
 * instead of relaying them to the primary like other admin writes.
 */
export const NODE_LOCAL_PATHS = ['/_caje/populate', '/_caje/purge', '/_caje/clear_fs'] as const
const MAX_OFFSET = 1_000_000_000

function intParam(raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || !/^\d+$/.test(raw)) return fallback
  return Math.min(max, Math.max(min, Number(raw)))
}

export async function chrome(c: Context, shared: Shared, auth: Auth, current: Chrome['current']): Promise<Chrome | undefined> {
  if (auth.kind !== 'session') return undefined
  return { adminName: auth.adminName, csrfToken: auth.csrfToken, status: shared.actions.status(), current }
}

/** Machine-readable reasons a cache action was refused, for scripts (the sentence is for people). */
export type ActionErrorCode = 'purge_needs_value' | 'purge_bad_url' | 'purge_bad_soft' | 'action_failed' | 'node_self' | 'node_online' | 'node_unknown'

type PurgeParse = { ok: true; request: PurgeRequest; label: string } | { ok: false; code: ActionErrorCode; message: string }

/** Form and JSON spellings of `soft`: a checkbox or a button sends `yes`, a script `true`. */
const SOFT_YES = new Set<unknown>([true, 'true', 'yes', 'on', '1'])
const SOFT_NO = new Set<unknown>([undefined, null, false, 'false', 'no', '', '0'])

/**
 * `{"url":…}|{"prefix":…}|{"tag":…}|{"all":true}` from scripts, `kind` + `value` from the form;
 * `soft` (true, or the form's `yes`) marks what it covers stale instead of removing it.
 */
export function parsePurge(body: Body): PurgeParse {
  const soft = SOFT_YES.has(body.soft)
  if (!soft && !SOFT_NO.has(body.soft)) return { ok: false, code: 'purge_bad_soft', message: TEXT.flash.purgeBadSoft }
  const parsed = parsePurgeTarget(body)
  if (!parsed.ok || !soft) return parsed
  return { ok: true, request: { ...parsed.request, soft: true }, label: parsed.label }
}

function parsePurgeTarget(body: Body): PurgeParse {
  let kind: string
  let value: string
  if (typeof body.kind === 'string') {
    kind = body.kind
    value = field(body, 'value', 4096)
  } else if (body.all === true || body.all === 'true') {
    kind = 'all'
    value = ''
  } else {
    kind = ['url', 'prefix', 'tag'].find((k) => typeof body[k] === 'string') ?? ''
    value = kind ? field(body, kind, 4096) : ''
  }
  switch (kind) {
    case 'all':
      return { ok: true, request: { kind: 'all' }, label: 'everything' }
    case 'url': {
      if (!value) return { ok: false, code: 'purge_needs_value', message: TEXT.flash.purgeNeedsValue }
      let url: URL
      try {
        url = new URL(value)
      } catch {
        return { ok: false, code: 'purge_bad_url', message: TEXT.flash.purgeBadUrl }
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, code: 'purge_bad_url', message: TEXT.flash.purgeBadUrl }
      // Spelled as the proxy keys it, so `/docs/%2e%2e/a` and `/a` name one entry (RFC 3986 §6.2.2).
      const canonical = canonicalUrl(url, value)
      return { ok: true, request: { kind: 'url', value: canonical }, label: canonical }
    }
    case 'prefix': {
      if (!value) return { ok: false, code: 'purge_needs_value', message: TEXT.flash.purgeNeedsValue }
      // Stored URLs are absolute: a prefix such as `/blog/` or `example.com/blog/` could never match
      // one, and the purge would be recorded and applied everywhere, removing nothing.
      if (!/^https?:\/\/[^/?#\\]+/i.test(value) || !URL.canParse(value)) return { ok: false, code: 'purge_bad_url', message: TEXT.flash.purgeBadPrefix }
      const prefix = canonicalUrlPrefix(value)
      return { ok: true, request: { kind, value: prefix }, label: `${kind} ${prefix}` }
    }
    case 'tag':
      if (!value) return { ok: false, code: 'purge_needs_value', message: TEXT.flash.purgeNeedsValue }
      return { ok: true, request: { kind, value }, label: `${kind} ${value}` }
    default:
      return { ok: false, code: 'purge_needs_value', message: TEXT.flash.purgeNeedsValue }
  }
}

/**
 * Finish a cache action: scripts get machine fields (`json`, or `code` on a
 * failure, with the sentence as `error`), forms a 303 back with the sentence.
 */
function done(
  c: Context,
  shared: Shared,
  o: { ok: true; message: string; json: Record<string, unknown>; status?: 200 | 202 } | { ok: false; code: ActionErrorCode; message: string; status: 400 | 404 | 409 | 500 },
): Response {
  if (wantsJson(c)) return o.ok ? c.json({ ok: true, ...o.json }, o.status ?? 200) : c.json({ ok: false, code: o.code, error: o.message }, o.status)
  // Back to the page the form was on (a filtered list stays filtered); a confirmation page has done its job.
  const from = formPage(c, shared)
  return finish(c, shared, { ok: o.ok, message: o.message, redirect: from.startsWith(PATHS.confirm('')) ? PATHS.list : from })
}

export function registerCacheRoutes(app: Hono<AdminEnv>, shared: Shared): void {
  const admin = requireAdmin(shared)
  const isForm = (c: Context) => !wantsJson(c)

  /** Run an action; a failure is logged in full and reported without details. */
  async function attempt<T>(c: Context, what: string, run: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; response: Response }> {
    try {
      return { ok: true, value: await run() }
    } catch (err) {
      shared.log({ event: 'admin.action_failed', action: what, error: err instanceof Error ? (err.stack ?? err.message) : String(err) })
      return { ok: false, response: done(c, shared, { ok: false, code: 'action_failed', message: TEXT.flash.actionFailed, status: 500 }) }
    }
  }

  app.get('/', (c) => c.redirect(PATHS.list, 303))

  app.get('/list', admin, async (c) => {
    const auth = c.get('auth')
    const filter = (c.req.query('filter') ?? '').trim().slice(0, 2048)
    const limit = intParam(c.req.query('limit'), DEFAULT_LIMIT, 1, MAX_LIMIT)
    const diskOffset = intParam(c.req.query('disk') ?? c.req.query('offset'), 0, 0, MAX_OFFSET)
    // With a cursor, `manifest` only numbers the rows shown: the page is found by keyset, as fast
    // on page 20,000 as on page 1. Without one it is an offset, read only up to MAX_LIST_OFFSET.
    const manifestCursor = c.req.query('manifest_cursor') || undefined
    const askedOffset = intParam(c.req.query('manifest') ?? c.req.query('offset'), 0, 0, MAX_OFFSET)
    // The populate state first, then the tables: the manifest is read on a thread of its own,
    // and a run may end while the page waits for it. Read the other way round, the page could
    // say the run has ended above tables from before its last copies, and would never refresh
    // them (list.js refreshes when a run it saw running ends).
    const populate = shared.actions.populateStatus()
    const [disk, manifest] = await Promise.all([
      shared.actions.listDisk({ filter, offset: diskOffset, limit }),
      shared.actions.listManifest({ filter, offset: askedOffset, limit, cursor: manifestCursor }).catch((err: unknown) => {
        if (err instanceof InvalidCursorError || err instanceof DeepOffsetError) throw new HTTPException(400, { message: err.message })
        throw err
      }),
    ])
    const manifestOffset = manifest.offset ?? askedOffset
    const manifestPage = {
      total: manifest.total,
      totalIsLowerBound: manifest.totalIsLowerBound ?? false,
      offset: manifestOffset,
      nextCursor: manifest.nextCursor,
      prevCursor: manifest.prevCursor,
      lastCursor: manifest.lastCursor,
      entries: manifest.entries,
    }
    const nodes = await shared.actions.listNodes()
    const ui = await chrome(c, shared, auth, 'list')
    if (wantsJson(c) || !ui) {
      return c.json({
        status: shared.actions.status(),
        filter,
        limit,
        disk: { total: disk.total, offset: diskOffset, entries: disk.entries },
        manifest: { ...manifestPage, nextCursor: manifestPage.nextCursor ?? null, prevCursor: manifestPage.prevCursor ?? null, lastCursor: manifestPage.lastCursor ?? null },
        populate: populate ?? null,
        nodes,
      })
    }
    const hasPasskey = auth.kind !== 'session' || (await repo.countPasskeys(shared.db, auth.adminId)) > 0
    return renderPage(c, ListPage, {
      chrome: ui,
      flash: takeFlash(c, shared),
      now: shared.now(),
      filter,
      limit,
      disk: { total: disk.total, offset: diskOffset, entries: disk.entries },
      manifest: { ...manifestPage, byCursor: true, cursor: manifestCursor },
      populate,
      nodes,
      hasPasskey,
    })
  })

  app.get('/status', admin, (c) => c.json({ status: shared.actions.status(), populate: shared.actions.populateStatus() ?? null }))

  /** What a purge would cover: `?kind=prefix&value=…` (or url, tag, all). */
  const previewOf = async (c: Context) => {
    const parsed = parsePurge({ kind: c.req.query('kind') ?? '', value: c.req.query('value') ?? '', soft: c.req.query('soft') })
    if (!parsed.ok) return parsed
    return { ok: true as const, request: parsed.request, preview: await shared.actions.purgePreview(parsed.request) }
  }

  app.get('/purge/preview', admin, async (c) => {
    const p = await previewOf(c)
    if (!p.ok) return c.json({ ok: false, code: p.code, error: p.message }, 400)
    return c.json({ ok: true, purge: p.request, ...p.preview })
  })

  app.get('/confirm/purge', admin, async (c) => {
    const p = await previewOf(c)
    const ui = await chrome(c, shared, c.get('auth'), 'list')
    if (!ui) return c.notFound()
    if (!p.ok) return done(c, shared, { ok: false, code: p.code, message: p.message, status: 400 })
    return renderPage(c, PurgeConfirmPage, { chrome: ui, request: p.request, preview: p.preview })
  })

  app.get('/traffic', admin, async (c) => {
    const period: TrafficPeriod = c.req.query('period') === 'day' ? 'day' : 'hour'
    const now = shared.now()
    const [minutes, nodes] = await Promise.all([shared.actions.traffic(now - PERIODS[period].ms - 600_000), shared.actions.listNodes()])
    const ids = [...new Set([...nodes.map((n) => n.id), ...minutes.map((m) => m.nodeId)])]
    const asked = c.req.query('node')
    const node = asked !== undefined && ids.includes(asked) ? asked : null
    const ui = await chrome(c, shared, c.get('auth'), 'traffic')
    const since = now - PERIODS[period].ms
    const [topByMisses, topByBytes] = await Promise.all([shared.actions.topMisses({ since, limit: 10, by: 'misses', node }), shared.actions.topMisses({ since, limit: 10, by: 'bytes', node })])
    if (wantsJson(c) || !ui) return c.json({ period, node, minutes, topByMisses, topByBytes })
    return renderPage(c, TrafficPage, { chrome: ui, now, period, node, nodes: ids, minutes, topByMisses, topByBytes })
  })

  app.get('/purges', admin, async (c) => {
    const purges = await shared.actions.purgeHistory(50)
    const ui = await chrome(c, shared, c.get('auth'), 'purges')
    if (wantsJson(c) || !ui) return c.json({ purges })
    return renderPage(c, PurgeHistoryPage, { chrome: ui, flash: takeFlash(c, shared), now: shared.now(), purges })
  })

  app.get('/confirm/:action', admin, async (c) => {
    const action = c.req.param('action') as ConfirmAction
    if (!CONFIRM_ACTIONS.includes(action)) return c.notFound()
    const ui = await chrome(c, shared, c.get('auth'), 'list')
    if (!ui) return c.notFound()
    return renderPage(c, ConfirmPage, { chrome: ui, action })
  })

  app.post('/purge', admin, async (c) => {
    const auth = c.get('auth')
    const body = await readBody(c)
    const parsed = parsePurge(body)
    if (!parsed.ok) return done(c, shared, { ok: false, code: parsed.code, message: parsed.message, status: 400 })
    // From the form, a purge wider than one URL first shows what it covers and asks to confirm.
    if (isForm(c) && parsed.request.kind !== 'url' && body.confirm !== 'yes') {
      return c.redirect(PATHS.purgeConfirm(parsed.request.kind, parsed.request.kind === 'all' ? '' : parsed.request.value, parsed.request.soft === true), 303)
    }
    const r = await attempt(c, 'purge', () => shared.actions.purge(parsed.request, actor(auth)))
    if (!r.ok) return r.response
    const soft = parsed.request.soft === true
    shared.log({ event: 'admin.purge', by: actor(auth), ...parsed.request, soft, removed: r.value.removed })
    // `removed` counts the entries this node dropped, or (soft) marked stale; `marked` says which for scripts.
    return done(c, shared, {
      ok: true,
      message: soft ? TEXT.flash.softPurged(r.value.removed, parsed.label) : TEXT.flash.purged(r.value.removed, parsed.label),
      json: { purge: { ...parsed.request, soft }, removed: soft ? 0 : r.value.removed, ...(soft ? { marked: r.value.removed } : {}) },
    })
  })

  app.post('/populate', admin, async (c) => {
    const auth = c.get('auth')
    // A row's Populate button sends its cache key: fetch that entry's variants, and those of every
    // other key of its URL (a rule keyed on a request header or cookie value makes one per value).
    const key = field(await readBody(c), 'key', 4096) || undefined
    const r = await attempt(c, 'populate', () => shared.actions.populate(key === undefined ? {} : { key }))
    if (!r.ok) return r.response
    shared.log({ event: 'admin.populate', by: actor(auth), started: r.value.started, key: key ?? null })
    return done(c, shared, {
      ok: true,
      message: r.value.started ? TEXT.flash.populateStarted : TEXT.flash.populateAlreadyRunning,
      json: { started: r.value.started, populate: shared.actions.populateStatus() ?? null },
      status: r.value.started ? 202 : 200,
    })
  })

  app.get('/populate', admin, (c) => {
    const status = shared.actions.populateStatus()
    return c.json({ populate: status ?? null, summary: populateSummary(status, shared.now()) })
  })

  app.post('/nodes/:id/forget', admin, async (c) => {
    const auth = c.get('auth')
    const id = c.req.param('id')
    const r = await attempt(c, 'forget_node', () => shared.actions.forgetNode(id))
    if (!r.ok) return r.response
    const result = r.value
    shared.log({ event: 'admin.forget_node', by: actor(auth), node: id, ...result })
    if (!result.forgotten) {
      return done(c, shared, { ok: false, code: `node_${result.reason}`, message: TEXT.flash.nodeForgetRefused[result.reason], status: result.reason === 'unknown' ? 404 : 409 })
    }
    return done(c, shared, { ok: true, message: TEXT.flash.nodeForgotten(id, result.dropped), json: { node: id, dropped: result.dropped } })
  })

  app.post('/clear_fs', admin, async (c) => {
    const auth = c.get('auth')
    const body = await readBody(c)
    if (isForm(c) && body.confirm !== 'yes') return c.redirect(PATHS.confirm('clear_fs'), 303)
    const r = await attempt(c, 'clear_fs', () => shared.actions.clearFs())
    if (!r.ok) return r.response
    shared.log({ event: 'admin.clear_fs', by: actor(auth), removed: r.value })
    return done(c, shared, { ok: true, message: TEXT.flash.clearedFs(r.value), json: { removed: r.value } })
  })

  app.post('/clear_db', admin, async (c) => {
    const auth = c.get('auth')
    const body = await readBody(c)
    if (isForm(c) && body.confirm !== 'yes') return c.redirect(PATHS.confirm('clear_db'), 303)
    const r = await attempt(c, 'clear_db', () => shared.actions.clearDb())
    if (!r.ok) return r.response
    shared.log({ event: 'admin.clear_db', by: actor(auth), removed: r.value })
    return done(c, shared, { ok: true, message: TEXT.flash.clearedDb(r.value), json: { removed: r.value } })
  })
}
