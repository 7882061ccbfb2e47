import type { FC } from 'hono/jsx'
import type { PurgePreview, PurgeRecord, PurgeRequest } from '../src/admin/actions.ts'
import { Badge, Csrf, DataTable, Empty, Panel, TimeCell, UrlCell, type Flash } from './components.tsx'
import { formatBytes, formatCount, formatClock, formatLag, isoTime } from './format.ts'
import { Layout, type Chrome } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

/** `prefix https://…`, `tag product-7`, `everything`, or the URL (hard or soft is shown beside it). */
export function purgeLabel(r: PurgeRequest): string {
  return r.kind === 'all' ? TEXT.purges.everything : r.kind === 'url' ? r.value : `${r.kind} ${r.value}`
}

export interface PurgeConfirmPageProps {
  chrome: Chrome
  request: PurgeRequest
  preview: PurgePreview
}

/** Hard or soft, as a badge (the history's Mode column, the confirmation's preview). */
const PurgeMode: FC<{ soft: boolean }> = ({ soft }) => (
  <span data-component="badge" data-kind={soft ? 'soft' : 'hard'} data-slot="mode" title={soft ? TEXT.purges.softTitle : TEXT.purges.hardTitle}>
    {soft ? TEXT.purges.soft : TEXT.purges.hard}
  </span>
)

/** Before a prefix, tag or everything purge: what it covers, hard or soft, and a button to go ahead. */
export const PurgeConfirmPage: FC<PurgeConfirmPageProps> = ({ chrome, request, preview }) => {
  const t = TEXT.purges
  const soft = request.soft === true
  return (
    <Layout title={TEXT.confirm.title} chrome={chrome} narrow>
      <section data-component="card" data-kind="danger">
        <h1>{soft ? t.confirmSoftHeading(purgeLabel(request)) : t.confirmHeading(purgeLabel(request))}</h1>
        <dl data-component="preview">
          <div>
            <dt>{t.previewMode}</dt>
            <dd data-slot="mode">{soft ? t.previewSoft : t.previewHard}</dd>
          </div>
          <div>
            <dt>{t.previewEntries}</dt>
            <dd data-slot="entries">{formatCount(preview.entries)}</dd>
          </div>
          <div>
            <dt>{t.previewBytes}</dt>
            <dd data-slot="bytes">{formatBytes(preview.bytes)}</dd>
          </div>
          <div>
            <dt>{t.previewNodes}</dt>
            <dd data-slot="nodes">{preview.nodes.length === 0 ? '—' : preview.nodes.join(', ')}</dd>
          </div>
        </dl>
        <p>{soft ? t.confirmSoftBody : request.kind === 'all' ? TEXT.confirm.purge_all.body() : t.confirmBody}</p>
        <form method="post" action={PATHS.purge} data-component="form">
          <Csrf token={chrome.csrfToken} />
          <input type="hidden" name="confirm" value="yes" />
          <input type="hidden" name="kind" value={request.kind} />
          {request.kind === 'all' ? null : <input type="hidden" name="value" value={request.value} />}
          {soft ? <input type="hidden" name="soft" value="yes" /> : null}
          <div data-slot="actions">
            <a href={PATHS.list} data-component="button-link">
              {TEXT.confirm.cancel}
            </a>
            <button type="submit" data-variant="danger">
              {soft ? t.confirmSoftButton : t.confirmButton}
            </button>
          </div>
        </form>
      </section>
    </Layout>
  )
}

export interface PurgeHistoryPageProps {
  chrome: Chrome
  flash?: Flash
  now: number
  purges: PurgeRecord[]
}

/** Every recent purge and how far the cluster got with it ("applied on 2 of 3 nodes"). */
export const PurgeHistoryPage: FC<PurgeHistoryPageProps> = ({ chrome, flash, now, purges }) => {
  const t = TEXT.purges
  return (
    <Layout title={t.title} chrome={chrome} flash={flash}>
      <Panel id="purges" title={t.heading} lead={t.lead}>
        {purges.length === 0 ? (
          <Empty text={t.empty} />
        ) : (
          <DataTable name="purges" columns={[{ label: t.col.what }, { label: t.col.mode }, { label: t.col.when }, { label: t.col.by }, { label: t.col.applied }]}>
            {purges.map((p) => {
              const total = p.appliedOn.length + p.pendingOn.length
              const done = p.pendingOn.length === 0
              return (
                <tr data-purge={String(p.id)}>
                  <UrlCell url={purgeLabel(p.request)} />
                  <td data-label={t.col.mode}>
                    <PurgeMode soft={p.request.soft === true} />
                  </td>
                  <TimeCell at={p.createdAt} now={now} label={t.col.when} />
                  <td data-slot="by" data-label={t.col.by}>
                    {p.createdBy}
                  </td>
                  <td data-slot="applied" data-label={t.col.applied}>
                    <Badge kind={done ? 'fresh' : 'stale'} title={done ? undefined : t.pendingTitle(p.pendingOn)}>
                      {t.appliedOn(p.appliedOn.length, total)}
                    </Badge>
                    <ul data-slot="per-node">
                      {[...p.appliedOn.map((id) => ({ id, done: true })), ...p.pendingOn.map((id) => ({ id, done: false }))].map((n) => {
                        const at = p.appliedAt[n.id]
                        return (
                          <li data-node={n.id} data-state={n.done ? 'applied' : 'pending'}>
                            <span data-slot="node">{n.id}</span>{' '}
                            {n.done ? (
                              at === undefined ? (
                                <span data-slot="at">{t.nodeApplied}</span>
                              ) : (
                                <time data-slot="at" datetime={isoTime(at)} title={t.nodeAppliedTitle(isoTime(at) ?? '')}>
                                  {formatClock(at)} <span data-slot="muted">{t.after(formatLag(at - p.createdAt))}</span>
                                </time>
                              )
                            ) : (
                              <span data-slot="at">{t.nodePending}</span>
                            )}
                          </li>
                        )
                      })}
                    </ul>
                  </td>
                </tr>
              )
            })}
          </DataTable>
        )}
      </Panel>
    </Layout>
  )
}
