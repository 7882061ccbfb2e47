// The cache and cluster actions: list, purge, populate, clear. Each answers a
// form post with 303 + message and a script (Accept: application/json or a
// bearer token) with JSON.

import type { Context, Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { canonicalUrl, canonicalUrlPrefix } from '../canonical-url.ts'
import { CONFIRM_ACTIONS, ConfirmPage, type ConfirmAction } from '../../views/confirm.tsx'
import { DEFAULT_LIMIT, ListPage, populateSummary } from '../../views/list.tsx'
import type { Chrome } from '../../views/layout.tsx'
import { PATHS } from '../../views/paths.ts'
import { TEXT } from '../../views/text.ts'
import type { PurgeRequest } from './actions.ts'
import { actor, requireAdmin } from './auth.ts'
import type { AdminEnv, Auth, Shared } from './context.ts'
import { field, finish, readBody, renderPage, takeFlash, wantsJson, type Body } from './http.ts'
import * as repo from './repo.ts'
import { InvalidCursorError } from '../manifest/repositories.ts'

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

type PurgeParse = { ok: true; request: PurgeRequest; label: string } | { ok: false; message: string } | { ok: 'confirm' }

/** `{"url":…}|{"prefix":…}|{"tag":…}|{"all":true}` from scripts, `kind` + `value` from the form. */
export function parsePurge(body: Body, fromForm: boolean): PurgeParse {
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
      if (fromForm && body.confirm !== 'yes') return { ok: 'confirm' }
      return { ok: true, request: { kind: 'all' }, label: 'everything' }
    case 'url': {
      if (!value) return { ok: false, message: TEXT.flash.purgeNeedsValue }
      let url: URL
      try {
        url = new URL(value)
      } catch {
        return { ok: false, message: TEXT.flash.purgeBadUrl }
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, message: TEXT.flash.purgeBadUrl }
      // Spelled as the proxy keys it, so `/docs/%2e%2e/a` and `/a` name one entry (RFC 3986 §6.2.2).
      const canonical = canonicalUrl(url, value)
      return { ok: true, request: { kind: 'url', value: canonical }, label: canonical }
    }
    case 'prefix': {
      if (!value) return { ok: false, message: TEXT.flash.purgeNeedsValue }
      const prefix = canonicalUrlPrefix(value)
      return { ok: true, request: { kind, value: prefix }, label: `${kind} ${prefix}` }
    }
    case 'tag':
      if (!value) return { ok: false, message: TEXT.flash.purgeNeedsValue }
      return { ok: true, request: { kind, value }, label: `${kind} ${value}` }
    default:
      return { ok: false, message: TEXT.flash.purgeNeedsValue }
  }
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
      return { ok: false, response: finish(c, shared, { ok: false, message: TEXT.flash.actionFailed, status: 500, redirect: PATHS.list }) }
    }
  }

  app.get('/', (c) => c.redirect(PATHS.list, 303))

  app.get('/list', admin, async (c) => {
    const auth = c.get('auth')
    const filter = (c.req.query('filter') ?? '').trim().slice(0, 2048)
    const limit = intParam(c.req.query('limit'), DEFAULT_LIMIT, 1, MAX_LIMIT)
    const diskOffset = intParam(c.req.query('disk') ?? c.req.query('offset'), 0, 0, MAX_OFFSET)
    const manifestOffset = intParam(c.req.query('manifest') ?? c.req.query('offset'), 0, 0, MAX_OFFSET)
    // Keyset paging through the manifest: as fast on page 20,000 as on page 1.
    const manifestCursor = c.req.query('manifest_cursor') || undefined
    const [disk, manifest] = await Promise.all([
      shared.actions.listDisk({ filter, offset: diskOffset, limit }),
      shared.actions.listManifest({ filter, offset: manifestOffset, limit, cursor: manifestCursor }).catch((err: unknown) => {
        if (err instanceof InvalidCursorError) throw new HTTPException(400, { message: err.message })
        throw err
      }),
    ])
    const populate = shared.actions.populateStatus()
    const ui = await chrome(c, shared, auth, 'list')
    if (wantsJson(c) || !ui) {
      return c.json({
        status: shared.actions.status(),
        filter,
        limit,
        disk: { total: disk.total, offset: diskOffset, entries: disk.entries },
        manifest: {
          total: manifest.total,
          totalIsLowerBound: manifest.totalIsLowerBound ?? false,
          offset: manifestOffset,
          nextCursor: manifest.nextCursor ?? null,
          entries: manifest.entries,
        },
        populate: populate ?? null,
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
      manifest: { total: manifest.total, offset: manifestOffset, entries: manifest.entries },
      populate,
      hasPasskey,
    })
  })

  app.get('/status', admin, (c) => c.json({ status: shared.actions.status(), populate: shared.actions.populateStatus() ?? null }))

  app.get('/confirm/:action', admin, async (c) => {
    const action = c.req.param('action') as ConfirmAction
    if (!CONFIRM_ACTIONS.includes(action)) return c.notFound()
    const ui = await chrome(c, shared, c.get('auth'), 'list')
    if (!ui) return c.notFound()
    return renderPage(c, ConfirmPage, { chrome: ui, action })
  })

  app.post('/purge', admin, async (c) => {
    const auth = c.get('auth')
    const parsed = parsePurge(await readBody(c), isForm(c))
    if (parsed.ok === 'confirm') return c.redirect(PATHS.confirm('purge_all'), 303)
    if (!parsed.ok) return finish(c, shared, { ok: false, message: parsed.message, status: 400, redirect: PATHS.list })
    const r = await attempt(c, 'purge', () => shared.actions.purge(parsed.request))
    if (!r.ok) return r.response
    shared.log({ event: 'admin.purge', by: actor(auth), ...parsed.request, removed: r.value.removed })
    return finish(c, shared, {
      ok: true,
      message: TEXT.flash.purged(r.value.removed, parsed.label),
      data: { removed: r.value.removed },
      redirect: PATHS.list,
    })
  })

  app.post('/populate', admin, async (c) => {
    const auth = c.get('auth')
    const r = await attempt(c, 'populate', () => shared.actions.populate())
    if (!r.ok) return r.response
    shared.log({ event: 'admin.populate', by: actor(auth), started: r.value.started })
    return finish(c, shared, {
      ok: true,
      message: r.value.started ? TEXT.flash.populateStarted : TEXT.flash.populateAlreadyRunning,
      data: { started: r.value.started },
      status: r.value.started ? 202 : 200,
      redirect: PATHS.list,
    })
  })

  app.get('/populate', admin, (c) => {
    const status = shared.actions.populateStatus()
    return c.json({ populate: status ?? null, summary: populateSummary(status, shared.now()) })
  })

  app.post('/clear_fs', admin, async (c) => {
    const auth = c.get('auth')
    const body = await readBody(c)
    if (isForm(c) && body.confirm !== 'yes') return c.redirect(PATHS.confirm('clear_fs'), 303)
    const r = await attempt(c, 'clear_fs', () => shared.actions.clearFs())
    if (!r.ok) return r.response
    shared.log({ event: 'admin.clear_fs', by: actor(auth), removed: r.value })
    return finish(c, shared, { ok: true, message: TEXT.flash.clearedFs(r.value), data: { removed: r.value }, redirect: PATHS.list })
  })

  app.post('/clear_db', admin, async (c) => {
    const auth = c.get('auth')
    const body = await readBody(c)
    if (isForm(c) && body.confirm !== 'yes') return c.redirect(PATHS.confirm('clear_db'), 303)
    const r = await attempt(c, 'clear_db', () => shared.actions.clearDb())
    if (!r.ok) return r.response
    shared.log({ event: 'admin.clear_db', by: actor(auth), removed: r.value })
    return finish(c, shared, { ok: true, message: TEXT.flash.clearedDb(r.value), data: { removed: r.value }, redirect: PATHS.list })
  })
}
