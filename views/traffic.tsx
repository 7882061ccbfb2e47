import type { FC } from 'hono/jsx'
import type { PathMisses, TrafficMinute } from '../src/admin/actions.ts'
import { Badge, BytesCell, DataTable, NumCell, Panel, UrlCell } from './components.tsx'
import { LineChart } from './charts.tsx'
import { formatBytes, formatCount, formatRatio, formatTime } from './format.ts'
import { Layout, type Chrome } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export type TrafficPeriod = 'hour' | 'day'

/** Minutes per point: an hour minute by minute, a day in ten-minute steps. */
export const PERIODS: Record<TrafficPeriod, { ms: number; bucketMinutes: number }> = {
  hour: { ms: 3600_000, bucketMinutes: 1 },
  day: { ms: 24 * 3600_000, bucketMinutes: 10 },
}

export interface TrafficPageProps {
  chrome: Chrome
  now: number
  period: TrafficPeriod
  /** A node id, or null for all nodes. */
  node: string | null
  nodes: string[]
  minutes: TrafficMinute[]
  /** Paths that went to the origin in the period on the chosen node(s), by misses and by origin bytes. */
  topByMisses: PathMisses[]
  topByBytes: PathMisses[]
}

const TopMisses: FC<{ id: string; title: string; rows: PathMisses[] }> = ({ id, title, rows }) => {
  const t = TEXT.traffic
  return (
    <Panel id={id} title={title} lead={t.topLead}>
      {rows.length === 0 ? (
        <p data-component="empty">{t.topEmpty}</p>
      ) : (
        <DataTable name={id} columns={[{ label: t.col.path }, { label: t.col.misses, align: 'end' }, { label: t.col.originBytes, align: 'end' }, { label: t.col.why }]}>
          {rows.map((r) => (
            <tr>
              <UrlCell url={r.path} />
              <NumCell>{formatCount(r.misses)}</NumCell>
              <BytesCell bytes={r.originBytes} />
              <td data-slot="reasons">
                {Object.entries(r.reasons)
                  .sort((a, b) => b[1] - a[1])
                  .map(([reason, n]) => (
                    <Badge kind="stale" title={t.reasonTitle(reason)}>
                      {reason} × {formatCount(n)}
                    </Badge>
                  ))}
              </td>
            </tr>
          ))}
        </DataTable>
      )}
    </Panel>
  )
}

interface Bucket {
  requests: number
  hits: number
  misses: number
  bytesCache: number
  bytesOrigin: number
  minutes: number
}

/** Sum the chosen nodes' minutes into the period's buckets, oldest first. */
export function bucketTraffic(minutes: TrafficMinute[], opts: { now: number; period: TrafficPeriod; node: string | null }): Bucket[] {
  const { ms, bucketMinutes } = PERIODS[opts.period]
  const size = bucketMinutes * 60_000
  const end = Math.floor(opts.now / size) * size + size
  const count = Math.round(ms / size)
  const start = end - count * size
  const buckets: Bucket[] = Array.from({ length: count }, () => ({ requests: 0, hits: 0, misses: 0, bytesCache: 0, bytesOrigin: 0, minutes: bucketMinutes }))
  for (const m of minutes) {
    if (opts.node !== null && m.nodeId !== opts.node) continue
    const i = Math.floor((m.minute - start) / size)
    if (i < 0 || i >= count) continue
    const b = buckets[i]!
    b.requests += m.requests
    b.hits += m.hits
    b.misses += m.misses
    b.bytesCache += m.bytesCache
    b.bytesOrigin += m.bytesOrigin
  }
  return buckets
}

const hhmm = (ms: number) => formatTime(ms).slice(11)

export const TrafficPage: FC<TrafficPageProps> = (props) => {
  const t = TEXT.traffic
  const buckets = bucketTraffic(props.minutes, props)
  const { ms } = PERIODS[props.period]
  const xLabels: [string, string, string] = [hhmm(props.now - ms), hhmm(props.now - ms / 2), hhmm(props.now)]
  const total = buckets.reduce(
    (a, b) => ({ requests: a.requests + b.requests, hits: a.hits + b.hits, misses: a.misses + b.misses, bytesCache: a.bytesCache + b.bytesCache, bytesOrigin: a.bytesOrigin + b.bytesOrigin }),
    { requests: 0, hits: 0, misses: 0, bytesCache: 0, bytesOrigin: 0 },
  )
  const bytes = total.bytesCache + total.bytesOrigin
  const href = (period: TrafficPeriod, node: string | null) => `${PATHS.traffic}?period=${period}${node === null ? '' : `&node=${encodeURIComponent(node)}`}`
  const perMinute = (v: number, b: Bucket) => v / b.minutes
  return (
    <Layout title={t.title} chrome={props.chrome}>
      <Panel
        id="traffic"
        title={t.heading(props.node)}
        lead={t.lead}
        actions={
          <nav data-component="tabs" aria-label={t.periodLabel}>
            {(['hour', 'day'] as const).map((p) => (
              <a href={href(p, props.node)} data-component="button-link" aria-current={p === props.period ? 'page' : undefined}>
                {t.period[p]}
              </a>
            ))}
          </nav>
        }
      >
        <nav data-component="tabs" data-slot="nodes" aria-label={t.nodesLabel}>
          <a href={href(props.period, null)} data-component="button-link" aria-current={props.node === null ? 'page' : undefined}>
            {t.allNodes}
          </a>
          {props.nodes.map((n) => (
            <a href={href(props.period, n)} data-component="button-link" aria-current={props.node === n ? 'page' : undefined}>
              {n}
            </a>
          ))}
        </nav>
        <dl data-component="preview" data-slot="totals">
          <div>
            <dt>{t.requests}</dt>
            <dd data-slot="requests">{formatCount(total.requests)}</dd>
          </div>
          <div>
            <dt>{t.hitRatio}</dt>
            <dd data-slot="hit-ratio">{formatRatio(total.hits + total.misses === 0 ? null : total.hits / (total.hits + total.misses)) ?? '—'}</dd>
          </div>
          <div>
            <dt>{t.fromCache}</dt>
            <dd data-slot="bytes-cache">{formatBytes(total.bytesCache)}</dd>
          </div>
          <div>
            <dt>{t.saved}</dt>
            <dd data-slot="saved">{bytes === 0 ? '—' : formatRatio(total.bytesCache / bytes)}</dd>
          </div>
        </dl>
        {total.requests === 0 ? (
          <p data-component="empty">{t.empty}</p>
        ) : (
          <div data-component="charts">
            <LineChart
              title={t.requestsChart}
              series={[{ label: t.requestsSeries, kind: 'requests', values: buckets.map((b) => perMinute(b.requests, b)) }]}
              xLabels={xLabels}
              yFormat={(v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k` : String(Math.round(v)))}
            />
            <LineChart
              title={t.hitRatioChart}
              series={[{ label: t.hitRatioSeries, kind: 'hits', values: buckets.map((b) => (b.hits + b.misses === 0 ? null : (100 * b.hits) / (b.hits + b.misses))) }]}
              xLabels={xLabels}
              yMax={100}
              yFormat={(v) => `${Math.round(v)}%`}
            />
            <LineChart
              title={t.bytesChart}
              series={[
                { label: t.fromCacheSeries, kind: 'cache', values: buckets.map((b) => perMinute(b.bytesCache, b)) },
                { label: t.fromOriginSeries, kind: 'origin', values: buckets.map((b) => perMinute(b.bytesOrigin, b)) },
              ]}
              xLabels={xLabels}
              yFormat={(v) => formatBytes(v)}
            />
          </div>
        )}
      </Panel>
      <TopMisses id="top-misses" title={t.topByMisses(props.node, t.period[props.period])} rows={props.topByMisses} />
      <TopMisses id="top-origin-bytes" title={t.topByBytes(props.node, t.period[props.period])} rows={props.topByBytes} />
    </Layout>
  )
}
