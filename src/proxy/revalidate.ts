// Revalidation of one stored response (RFC 9111 §4.3), as undici keeps it in
// cache-revalidation-handler.js: a conditional GET with the stored validators;
// a 304 that matches refreshes the stored headers and keeps the stored body
// (§4.3.4), a full response replaces the entry through a fill (fill.ts), and a
// failure or 5xx is reported so the caller can serve stale-if-error
// (RFC 5861 §4). Background refreshes (stale-while-revalidate, RFC 5861 §3)
// run at most once per stored variant.

import type { EntryMeta } from '../cache/types.ts'
import { OncePerKey } from './coalesce.ts'
import { entryTags, startFill, type Fill, type FillDeps } from './fill.ts'
import type { RuleMatch } from '../rules/match.ts'
import { cleanResponseHeaders, storedHeaders, withoutConditionals } from './forward.ts'
import type { FlatHeaders, HeaderBag } from './headers.ts'
import type { AbortSource, OriginClient, OriginResponse } from './origin.ts'
import { decideStore, mergeNotModified, notModifiedMatches, validatorsFor, type FreshnessPolicy } from './policy.ts'

export interface RevalidateDeps extends FillDeps {
  /** The one origin sender (it counts every exchange, revalidations included). */
  origin: OriginClient
}

/** One revalidation: the stored response and the request that found it stale. */
export interface Revalidation {
  meta: EntryMeta
  policy: FreshnessPolicy
  originUrl: URL
  /** The client's request fields (lower-case): they decide storing and the variant of a replacement. */
  clientHeaders: FlatHeaders
  /** The fields to forward to the origin (forward.ts); their conditionals are replaced by the stored validators. */
  forwardHeaders: Record<string, string>
  /** Absent for a background refresh: nobody is waiting, so nobody can cancel it or see interim responses. */
  signal?: AbortSource
  onInterim?: (status: number, headers: HeaderBag) => void
  /** The rules file's answer for the request (store overrides, tags), if any. */
  rules?: RuleMatch
}

export type RevalidationOutcome =
  /**
   * 304 that matched: the stored body with merged headers, and the 304's Set-Cookie for this
   * client. The entry is updated; or, when this answer may not be stored, left as it was (the
   * refusal is this request's: its Authorization, Cookie or no-store) or to be dropped once
   * served (`dropAfterServing`: the merged headers now forbid storing it for anyone).
   */
  | { kind: 'refreshed'; meta: EntryMeta; policy: FreshnessPolicy; originMs: number; setCookie: string[]; dropAfterServing: boolean }
  /** A full response that is not a 5xx: it replaces the entry as it streams. */
  | { kind: 'replaced'; response: OriginResponse; fill: Fill }
  /** No response (error), a 5xx (`response`, body unread), or a 304 that matched nothing (entry dropped). */
  | { kind: 'failed'; error?: unknown; status?: number; response?: OriginResponse }

/** Conditional request for a stored entry (RFC 9111 §4.3); refreshes it on 304, replaces it on 200. */
export async function revalidate(deps: RevalidateDeps, r: Revalidation): Promise<RevalidationOutcome> {
  const { store } = deps
  const { meta, policy } = r
  const headers = { ...withoutConditionals(r.forwardHeaders), ...validatorsFor(meta.headers) }
  const requestTime = deps.now()
  const url = new URL(meta.url)
  let res: OriginResponse
  try {
    res = await deps.origin.send({ origin: r.originUrl, method: 'GET', path: url.pathname + url.search, headers, signal: r.signal, onInterim: r.onInterim })
  } catch (error) {
    return { kind: 'failed', error }
  }
  if (res.status === 304) {
    res.body.resume()
    const { headers: notModified, setCookie } = cleanResponseHeaders(res.headers)
    if (!notModifiedMatches(meta.headers, notModified)) {
      // §4.3.4: a 304 that selects no stored response cannot update it; drop it and fetch afresh.
      await store.delete(meta.key, meta.variant)
      return { kind: 'failed', status: 304 }
    }
    const merged = mergeNotModified(meta.headers, storedHeaders(notModified))
    const responseTime = deps.now()
    const rules = r.rules?.response(meta.status, merged['content-type'])
    const decision = decideStore(
      { method: 'GET', url: meta.url, headers: r.clientHeaders, requestTime },
      { status: meta.status, headers: merged, hasSetCookie: setCookie.length > 0, responseTime },
      deps.storeRules,
      rules?.store,
    )
    if (!decision.store) {
      // Served this once, from the stored body (the caller takes it before anything is dropped).
      // Whether the merged headers would be stored for a request without credentials and a
      // Set-Cookie says whose the refusal is: this exchange's (a signed-in user's request must
      // not take the shared copy away from everyone), or the response's (now no-store: §4.3.4
      // updates the stored response with them, and it may no longer be kept).
      const forAnyone = decideStore({ method: 'GET', url: meta.url, headers: {}, requestTime }, { status: meta.status, headers: merged, hasSetCookie: false, responseTime }, deps.storeRules, rules?.store)
      const fresh: FreshnessPolicy = { ...policy, lifetime: 0, responseTime, initialAge: 0 }
      return { kind: 'refreshed', meta: { ...meta, headers: merged }, policy: fresh, originMs: res.headersMs, setCookie, dropAfterServing: !forAnyone.store }
    }
    // The origin confirmed the stored body: whatever a soft purge marked, it is fresh again.
    const updated: EntryMeta = { ...meta, headers: merged, policy: decision.policy, staleAt: decision.staleAt, deleteAt: decision.deleteAt, tags: entryTags(merged, rules?.tags), softPurgedAt: undefined }
    try {
      await store.updateMeta(updated)
    } catch (err) {
      deps.log({ level: 'error', msg: 'cache metadata update failed', key: meta.key, error: (err as Error).message })
    }
    return { kind: 'refreshed', meta: updated, policy: decision.policy, originMs: res.headersMs, setCookie, dropAfterServing: false }
  }
  if (res.status >= 500) return { kind: 'failed', status: res.status, response: res }
  const fill = startFill(deps, { key: meta.key, url: meta.url, host: meta.host, origin: r.originUrl }, { method: 'GET', headers: r.clientHeaders, requestTime, rules: r.rules }, res)
  return { kind: 'replaced', response: res, fill }
}

/**
 * Drops a variant a revalidation found may no longer be kept (`dropAfterServing`), once whoever
 * waited for it has its body; a failure is logged, as a metadata update's is.
 */
export async function dropAfterServing(deps: Pick<RevalidateDeps, 'store' | 'log'>, meta: EntryMeta): Promise<void> {
  try {
    await deps.store.delete(meta.key, meta.variant)
  } catch (err) {
    deps.log({ level: 'error', msg: 'dropping a stored response failed', key: meta.key, error: (err as Error).message })
  }
}

/** Background refreshes (stale-while-revalidate): at most one per stored variant at a time. */
export class BackgroundRevalidator {
  private readonly running = new OncePerKey()

  constructor(private readonly deps: RevalidateDeps) {}

  /** Start refreshing `r.meta` unless a refresh of it is already running; nobody waits for the answer. */
  start(r: Revalidation): void {
    const { meta } = r
    this.running.run(`${meta.key}\0${meta.variant}`, async () => {
      const outcome = await revalidate(this.deps, { ...r, signal: undefined, onInterim: undefined })
      if (outcome.kind === 'replaced') {
        // Drain the new body into the cache; nobody is waiting for it.
        const stream = outcome.fill.body
        if (Buffer.isBuffer(stream)) await outcome.fill.outcome
        else {
          await new Promise<void>((resolve) => {
            stream.on('end', resolve).on('error', resolve).on('close', resolve)
            stream.resume()
          })
        }
      } else if (outcome.kind === 'refreshed' && outcome.dropAfterServing) {
        await dropAfterServing(this.deps, meta)
      } else if (outcome.kind === 'failed') {
        outcome.response?.body.resume()
        this.deps.log({ level: 'warn', msg: 'background revalidation failed', key: meta.key, status: outcome.status, error: (outcome.error as Error | undefined)?.message })
      }
    })
  }

  /** Resolves when no refresh is running (graceful shutdown). */
  idle(): Promise<void> {
    return this.running.idle()
  }
}
