// The rules file in the admin: /_caje/explain (page, and JSON for scripts) and
// POST /_caje/rules/reload (the same reload as SIGHUP).

import type { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { ExplainPage } from '../../views/explain.tsx'
import { ExplainInputError, type Explanation } from '../rules/explain.ts'
import type { ReloadOutcome, RulesStatus } from '../rules/runtime.ts'
import { actor, requireAdmin } from './auth.ts'
import { chrome } from './cache-routes.ts'
import type { AdminEnv, Shared } from './context.ts'
import { finish, renderPage, wantsJson } from './http.ts'

/** What the admin needs from the rules runtime. */
export interface RulesAdmin {
  explain(url: string): Promise<Explanation>
  reload(): ReloadOutcome
  status(): RulesStatus
}

export function registerRulesRoutes(app: Hono<AdminEnv>, shared: Shared, rules: RulesAdmin): void {
  const admin = requireAdmin(shared)

  app.get('/explain', admin, async (c) => {
    const url = (c.req.query('url') ?? '').trim().slice(0, 8192)
    let explanation: Explanation | undefined
    let error: string | undefined
    if (url) {
      try {
        explanation = await rules.explain(url)
      } catch (err) {
        if (!(err instanceof ExplainInputError)) throw err
        error = err.message
      }
    }
    const ui = await chrome(c, shared, c.get('auth'), 'list')
    if (wantsJson(c) || !ui) {
      if (!url) throw new HTTPException(400, { message: 'give the URL to explain as ?url=https://host/path' })
      if (error) throw new HTTPException(400, { message: error })
      return c.json({ ...explanation, rules: rules.status() })
    }
    return renderPage(c, ExplainPage, { chrome: ui, url, explanation, error, rules: rules.status() })
  })

  app.post('/rules/reload', admin, (c) => {
    const outcome = rules.reload()
    shared.log({ event: 'admin.rules_reload', by: actor(c.get('auth')), ok: outcome.ok })
    return finish(c, shared, {
      ok: outcome.ok,
      message: outcome.ok ? `Rules reloaded: ${outcome.ruleCount} rules in force.` : `Rules not reloaded; the previous rules stay in force. ${outcome.error}`,
      data: outcome.ok ? { ruleCount: outcome.ruleCount } : { error: outcome.error },
      status: outcome.ok ? 200 : 422,
      redirect: '/_caje/explain',
    })
  })
}
