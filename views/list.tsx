import type { Child, FC } from 'hono/jsx'
import type { ClusterNodeView, DiskEntry, ManifestEntry, PopulateStatus } from '../src/admin/actions.ts'
import { ActionsCell, Badge, BytesCell, Csrf, DataTable, Empty, NumCell, Panel, StatusCell, TimeCell, UrlCell, type Flash } from './components.tsx'
import { formatBytes, formatCount, formatDuration, formatRelative, isoTime } from './format.ts'
import { Layout, type Chrome } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export interface Page<T> {
  total: number
  offset: number
  entries: T[]
  /** `total` is a count up to a cap (a filter matching very many entries): at least this many. */
  totalIsLowerBound?: boolean
  /**
   * The table pages by keyset (the manifest list): its links carry these cursors, as fast deep
   * in the list as on page 1, and `offset` only numbers the rows.
   */
  byCursor?: boolean
  /** The cursor this page was found by; links that page the other table keep it. */
  cursor?: string
  nextCursor?: string
  prevCursor?: string
  lastCursor?: string
}

export interface ListPageProps {
  chrome: Chrome
  flash?: Flash
  now: number
  filter: string
  limit: number
  disk: Page<DiskEntry>
  manifest: Page<ManifestEntry>
  populate: PopulateStatus | undefined
  /** Every node that announced itself (heartbeats), this one first. */
  nodes: ClusterNodeView[]
  /** False when the admin signed in with the password and has not registered a passkey. */
  hasPasskey: boolean
}

type Table = 'disk' | 'manifest'

/**
 * Query string for the list page with one table's offset changed. With a
 * cursor, the manifest page is found by keyset and the offset only numbers
 * the rows shown.
 */
function listHref(p: ListPageProps, table: Table, offset: number, cursor?: string): string {
  const q = new URLSearchParams()
  if (p.filter) q.set('filter', p.filter)
  const disk = table === 'disk' ? offset : p.disk.offset
  const manifest = table === 'manifest' ? offset : p.manifest.offset
  if (disk > 0) q.set('disk', String(disk))
  if (manifest > 0) q.set('manifest', String(manifest))
  // Paging one table keeps the other where it is: the manifest by its cursor, not by an offset it would have to walk.
  const manifestCursor = table === 'manifest' ? cursor : p.manifest.cursor
  if (manifestCursor !== undefined) q.set('manifest_cursor', manifestCursor)
  if (p.limit !== DEFAULT_LIMIT) q.set('limit', String(p.limit))
  const s = q.toString()
  return `${PATHS.list}${s ? `?${s}` : ''}#${table}`
}

export const DEFAULT_LIMIT = 50

const Pager: FC<{ props: ListPageProps; table: Table }> = ({ props, table }) => {
  const page = props[table]
  const { limit } = props
  const atLeast = page.totalIsLowerBound === true
  const from = page.entries.length === 0 ? 0 : page.offset + 1
  const to = page.offset + page.entries.length
  const lastOffset = Math.max(0, Math.floor((page.total - 1) / limit) * limit)
  const byCursor = page.byCursor === true
  const hasPrev = byCursor ? page.prevCursor !== undefined : page.offset > 0
  // Past a counted-up-to total, only the cursor says whether there is a next page.
  const hasNext = byCursor ? page.nextCursor !== undefined : page.offset + limit < page.total
  const link = (label: string, offset: number, enabled: boolean, rel?: string, cursor?: string) =>
    enabled ? (
      <a href={listHref(props, table, offset, cursor)} rel={rel} data-component="button-link">
        {label}
      </a>
    ) : (
      <span data-component="button-link" aria-disabled="true">
        {label}
      </span>
    )
  return (
    <nav data-component="pager" aria-label={`${table} pages`}>
      <span data-slot="range">{TEXT.list.range(from, to, page.total, atLeast)}</span>
      <span data-slot="links">
        {link(TEXT.list.first, 0, hasPrev)}
        {link(TEXT.list.prev, Math.max(0, page.offset - limit), hasPrev, 'prev', page.prevCursor)}
        {link(TEXT.list.next, page.offset + page.entries.length, hasNext, 'next', page.nextCursor)}
        {/* The last page of an uncounted list is unknown. */}
        {link(TEXT.list.last, lastOffset, hasNext && !atLeast && (!byCursor || page.lastCursor !== undefined), undefined, page.lastCursor)}
      </span>
    </nav>
  )
}

/**
 * One display for every entry: a fresh one is served as is for the time
 * shown; a stale one is still served, after the origin confirms it (a 304
 * keeps the body), so it is not an error.
 */
const FreshnessCell: FC<{ staleAt: number; now: number }> = ({ staleAt, now }) => {
  const fresh = staleAt > now
  return (
    <td>
      <span data-component="freshness" data-state={fresh ? 'fresh' : 'stale'} title={`${fresh ? TEXT.list.freshUntil : TEXT.list.staleSince} ${isoTime(staleAt)}`}>
        <Badge kind={fresh ? 'fresh' : 'stale'}>{fresh ? TEXT.list.fresh : TEXT.list.stale}</Badge>
        <span data-slot="detail">{fresh ? TEXT.list.freshFor(formatDuration(staleAt - now)) : TEXT.list.revalidates}</span>
      </span>
    </td>
  )
}

/**
 * Purge this URL (all its variants, on every node), or soft-purge it (mark it stale: the next
 * request revalidates it); the form returns to the page it is on.
 */
const RowPurge: FC<{ url: string; csrf: string }> = ({ url, csrf }) => (
  <form method="post" action={PATHS.purge} data-component="inline-form">
    <Csrf token={csrf} />
    <input type="hidden" name="kind" value="url" />
    <input type="hidden" name="value" value={url} />
    <button type="submit" name="soft" value="yes" data-size="small" aria-label={`${TEXT.list.rowSoftPurgeLabel} ${url}`} title={TEXT.list.rowSoftPurgeTitle}>
      {TEXT.list.rowSoftPurge}
    </button>
    <button type="submit" name="soft" value="no" data-variant="danger" data-size="small" aria-label={`${TEXT.list.rowPurge} ${url}`}>
      {TEXT.list.rowPurge}
    </button>
  </form>
)

/** How this node got a copy: a client's request, or populate (from a peer or the origin). */
const Source: FC<{ via: DiskEntry['via'] }> = ({ via }) => {
  const t = TEXT.list.via
  if (via.kind === 'peer') return <Badge kind="peer" title={t.peerTitle(via.node)}>{t.peer(via.node)}</Badge>
  if (via.kind === 'populate') return <Badge kind="origin" title={t.populateTitle}>{t.populate}</Badge>
  return <span data-slot="muted">{t.request}</span>
}

/** Where this node keeps the body: the memory tier and disk, disk alone, or the memory tier alone (never announced to peers). */
const TierBadge: FC<{ entry: { inMemory: boolean; onDisk: boolean } }> = ({ entry }) => {
  const t = TEXT.list
  if (!entry.onDisk) {
    return (
      <Badge kind="memory-only" title={t.tierMemoryOnlyTitle}>
        {t.tierMemoryOnly}
      </Badge>
    )
  }
  return <Badge kind={entry.inMemory ? 'memory' : 'disk'}>{entry.inMemory ? t.tierMemory : t.tierDisk}</Badge>
}

const DiskTable: FC<{ props: ListPageProps }> = ({ props }) => {
  const t = TEXT.list
  if (props.disk.entries.length === 0) return <Empty text={props.filter ? t.noMatch : t.diskEmpty} />
  return (
    <DataTable name="disk" columns={[{ label: t.col.key }, { label: t.col.status, align: 'end' }, { label: t.col.size, align: 'end' }, { label: t.col.type }, { label: t.col.stored }, { label: t.col.expires }, { label: t.col.tier }, { label: t.col.source }, { label: t.col.actions, align: 'end', hidden: true }]}>
      {props.disk.entries.map((e) => (
        <tr>
          <UrlCell url={e.url} title={e.key}>
            {e.variant ? <small data-slot="variant">{e.variant}</small> : null}
          </UrlCell>
          <StatusCell status={e.status} />
          <BytesCell bytes={e.size} />
          <td data-slot="type" title={e.contentType ?? undefined}>
            {e.contentType?.split(';')[0] ?? '—'}
          </td>
          <TimeCell at={e.storedAt} />
          <FreshnessCell staleAt={e.staleAt} now={props.now} />
          <td>
            <TierBadge entry={e} />
          </td>
          <td data-slot="source">
            <Source via={e.via} />
          </td>
          <ActionsCell>
            <RowPurge url={e.url} csrf={props.chrome.csrfToken} />
          </ActionsCell>
        </tr>
      ))}
    </DataTable>
  )
}

const ManifestTable: FC<{ props: ListPageProps }> = ({ props }) => {
  const t = TEXT.list
  const self = props.chrome.status.nodeId
  const byId = new Map(props.nodes.map((n) => [n.id, n]))
  if (props.manifest.entries.length === 0) return <Empty text={props.filter ? t.noMatch : t.manifestEmpty} />
  return (
    <DataTable name="manifest" columns={[{ label: t.col.url }, { label: t.col.status, align: 'end' }, { label: t.col.variants, align: 'end' }, { label: t.col.size, align: 'end' }, { label: t.col.stored }, { label: t.col.expires }, { label: t.col.nodes }, { label: t.col.actions, align: 'end', hidden: true }]}>
      {props.manifest.entries.map((e) => (
        <tr>
          <UrlCell url={e.url} title={e.key} />
          <StatusCell status={e.status} />
          <NumCell>{e.variants}</NumCell>
          <BytesCell bytes={e.size} />
          <TimeCell at={e.storedAt} />
          <FreshnessCell staleAt={e.staleAt} now={props.now} />
          <td data-slot="nodes">
            {e.nodes.map((n) => {
              const node = byId.get(n)
              const offline = node !== undefined && !node.online
              return (
                <Badge kind={n === self ? 'self' : offline ? 'offline' : 'node'} title={offline ? t.nodeOfflineTitle(formatRelative(node.lastSeenAt, props.now)) : undefined}>
                  {n}
                </Badge>
              )
            })}
          </td>
          <ActionsCell>
            {!e.nodes.includes(self) && e.staleAt > props.now ? (
              <form method="post" action={PATHS.populate} data-component="inline-form">
                <Csrf token={props.chrome.csrfToken} />
                <input type="hidden" name="key" value={e.key} />
                <button type="submit" data-size="small" aria-label={`${t.rowPopulate} ${e.url}`} disabled={props.populate?.running}>
                  {t.rowPopulate}
                </button>
              </form>
            ) : null}
            <RowPurge url={e.url} csrf={props.chrome.csrfToken} />
          </ActionsCell>
        </tr>
      ))}
    </DataTable>
  )
}

/** One line about the running or last populate run; also sent to the page script while it polls. */
export function populateSummary(status: PopulateStatus | undefined, now: number): string {
  const t = TEXT.actions
  if (!status) return t.populateNever
  const when = status.running ? `started ${formatRelative(status.startedAt, now)}` : `finished ${formatRelative(status.finishedAt, now)}`
  const what = status.key === null ? '' : ` (${status.key.replace(/^GET /, '')})`
  return `${status.running ? t.populateRunning : t.populateFinished}${what} · ${t.populateCounts(status)} · ${formatBytes(status.bytes)}${status.diskFull ? ` · ${t.populateDiskFull}` : ''} · ${when}`
}

const PopulateState: FC<{ status: PopulateStatus | undefined; now: number }> = ({ status, now }) => (
  <p data-slot="populate-state" data-running={status?.running ? 'true' : 'false'}>
    {status?.running ? <span data-component="spinner" aria-hidden="true"></span> : null}
    <span data-slot="summary">{populateSummary(status, now)}</span>
  </p>
)

const Actions: FC<{ props: ListPageProps }> = ({ props }) => {
  const t = TEXT.actions
  const csrf = props.chrome.csrfToken
  return (
    <section data-component="actions" aria-label={t.heading}>
      <div data-component="card">
        <h2>{t.purgeHeading}</h2>
        <p>{t.purgeLead}</p>
        <form method="post" action={PATHS.purge} data-component="form" data-layout="row">
          <Csrf token={csrf} />
          <select name="kind" aria-label="What to purge">
            <option value="url">{t.purgeKind.url}</option>
            <option value="prefix">{t.purgeKind.prefix}</option>
            <option value="tag">{t.purgeKind.tag}</option>
            <option value="all">{t.purgeKind.all}</option>
          </select>
          <input type="text" name="value" aria-label={t.purgeValueLabel} placeholder={t.purgeValuePlaceholder} spellcheck={false} />
          <label data-slot="check" title={t.purgeSoftTitle}>
            <input type="checkbox" name="soft" value="yes" />
            {t.purgeSoft}
          </label>
          <button type="submit" data-variant="danger">
            {t.purgeButton}
          </button>
        </form>
      </div>
      <div data-component="card">
        <h2>{t.populateHeading}</h2>
        <p>{t.populateLead}</p>
        <div data-component="populate" data-poll={props.populate?.running ? 'true' : 'false'}>
          <PopulateState status={props.populate} now={props.now} />
        </div>
        <div data-slot="row">
          <form method="post" action={PATHS.populate} data-component="inline-form">
            <Csrf token={csrf} />
            <button type="submit" data-variant="primary" disabled={props.populate?.running}>
              {t.populateButton}
            </button>
          </form>
        </div>
      </div>
      <div data-component="card">
        <h2>{t.clearHeading}</h2>
        <p>{t.clearLead}</p>
        <div data-slot="row">
          <a href={PATHS.confirm('clear_fs')} data-component="button-link" data-variant="danger">
            {t.clearFsButton}
          </a>
          <a href={PATHS.confirm('clear_db')} data-component="button-link" data-variant="danger">
            {t.clearDbButton}
          </a>
        </div>
      </div>
    </section>
  )
}

/** The cluster as heartbeats describe it: when each node was last heard from, and a way to forget one that is gone. */
const NodesPanel: FC<{ props: ListPageProps }> = ({ props }) => {
  const t = TEXT.nodes
  return (
    <Panel id="nodes" title={t.heading} lead={t.lead}>
      <DataTable name="nodes" columns={[{ label: t.col.node }, { label: t.col.region }, { label: t.col.heartbeat }, { label: t.col.state }, { label: t.col.holds, align: 'end' }, { label: TEXT.list.col.actions, align: 'end', hidden: true }]}>
        {props.nodes.map((n) => (
          <tr data-node={n.id}>
            <td data-slot="node">
              <Badge kind={n.self ? 'self' : n.online ? 'node' : 'offline'}>{n.id}</Badge>
              {n.self ? <small data-slot="muted"> {t.thisNode}</small> : null}
            </td>
            <td>{n.region}</td>
            <TimeCell at={n.lastSeenAt} now={props.now} />
            <td>
              <Badge kind={n.online ? 'fresh' : 'offline'}>{n.online ? t.online : t.offline}</Badge>
            </td>
            <NumCell>{formatCount(n.holds)}</NumCell>
            <ActionsCell>
              {n.self || n.online ? null : (
                <form method="post" action={PATHS.nodeForget(n.id)} data-component="inline-form">
                  <Csrf token={props.chrome.csrfToken} />
                  <button type="submit" data-variant="danger" data-size="small" aria-label={`${t.forget} ${n.id}`}>
                    {t.forget}
                  </button>
                </form>
              )}
            </ActionsCell>
          </tr>
        ))}
      </DataTable>
    </Panel>
  )
}

/** One of the two entry tables, with its pager above it and, when it has rows, below it too. */
const PagedPanel: FC<{ props: ListPageProps; table: Table; title: string; children?: Child }> = ({ props, table, title, children }) => (
  <section data-component="panel" id={table}>
    <header data-slot="panel-head">
      <h2>{title}</h2>
      <Pager props={props} table={table} />
    </header>
    {children}
    {props[table].entries.length > 0 ? (
      <footer data-slot="panel-foot">
        <Pager props={props} table={table} />
      </footer>
    ) : null}
  </section>
)

export const ListPage: FC<ListPageProps> = (props) => {
  const t = TEXT.list
  return (
    <Layout title={t.title} chrome={props.chrome} flash={props.flash} scripts={['list.js']}>
      {props.hasPasskey ? null : (
        <div data-component="flash" data-kind="warn" role="status">
          <p data-slot="text">
            {t.noPasskeyBanner} <a href={PATHS.access}>{t.noPasskeyLink}</a>
          </p>
        </div>
      )}
      <Actions props={props} />
      <NodesPanel props={props} />
      <form method="get" action={PATHS.list} data-component="filter" role="search">
        <label for="filter">{t.filterLabel}</label>
        <input id="filter" type="search" name="filter" value={props.filter} placeholder={t.filterPlaceholder} spellcheck={false} />
        {props.limit !== DEFAULT_LIMIT ? <input type="hidden" name="limit" value={String(props.limit)} /> : null}
        <button type="submit" data-variant="primary">
          {t.filterButton}
        </button>
        {props.filter ? (
          <a href={PATHS.list} data-component="button-link">
            {t.filterClear}
          </a>
        ) : null}
      </form>
      <PagedPanel props={props} table="disk" title={t.diskHeading}>
        <DiskTable props={props} />
      </PagedPanel>
      <PagedPanel props={props} table="manifest" title={t.manifestHeading}>
        <ManifestTable props={props} />
      </PagedPanel>
    </Layout>
  )
}
