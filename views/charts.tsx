// Inline SVG charts, drawn on the server from plain numbers: no client
// library, no CDN, nothing for the Content-Security-Policy to allow. Styled
// from admin.css through data attributes.

import type { FC } from 'hono/jsx'

export interface Series {
  label: string
  /** Colour and line style, from admin.css: `data-series="…"`. */
  kind: string
  /** One value per bucket; null where there is nothing to show. */
  values: Array<number | null>
}

export interface LineChartProps {
  title: string
  series: Series[]
  /** Label under the first, middle and last bucket. */
  xLabels: [string, string, string]
  /** Top of the y axis; default: the largest value, rounded up. */
  yMax?: number
  yFormat: (v: number) => string
}

const W = 480
const H = 180
const PAD = { left: 56, right: 8, top: 10, bottom: 24 }

/** 1, 2 or 5 times a power of ten, at least v (so the axis reads well). */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}

/** Polyline points, broken into runs where values are missing. */
function runs(values: Array<number | null>, x: (i: number) => number, y: (v: number) => number): string[] {
  const out: string[] = []
  let cur: string[] = []
  values.forEach((v, i) => {
    if (v === null) {
      if (cur.length) out.push(cur.join(' '))
      cur = []
    } else cur.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`)
  })
  if (cur.length) out.push(cur.join(' '))
  return out
}

export const LineChart: FC<LineChartProps> = ({ title, series, xLabels, yMax, yFormat }) => {
  const n = Math.max(1, ...series.map((s) => s.values.length))
  const largest = Math.max(0, ...series.flatMap((s) => s.values.filter((v): v is number => v !== null)))
  const top = yMax ?? niceCeil(largest)
  const plotW = W - PAD.left - PAD.right
  const plotH = H - PAD.top - PAD.bottom
  const x = (i: number) => PAD.left + (n === 1 ? plotW / 2 : (i / (n - 1)) * plotW)
  const y = (v: number) => PAD.top + plotH - (Math.min(v, top) / top) * plotH
  const grid = [0, 0.5, 1].map((f) => ({ v: top * f, y: y(top * f) }))
  return (
    <figure data-component="chart">
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title} data-slot="plot">
        {grid.map((g) => (
          <>
            <line x1={PAD.left} x2={W - PAD.right} y1={g.y} y2={g.y} data-slot="grid" />
            <text x={PAD.left - 6} y={g.y + 4} text-anchor="end" data-slot="axis">
              {yFormat(g.v)}
            </text>
          </>
        ))}
        {xLabels.map((label, i) => (
          <text x={i === 0 ? PAD.left : i === 1 ? PAD.left + plotW / 2 : W - PAD.right} y={H - 6} text-anchor={i === 0 ? 'start' : i === 1 ? 'middle' : 'end'} data-slot="axis">
            {label}
          </text>
        ))}
        {series.map((s) =>
          runs(s.values, x, y).map((points) =>
            points.includes(' ') ? (
              <polyline points={points} data-series={s.kind} />
            ) : (
              <circle cx={points.split(',')[0]} cy={points.split(',')[1]} r="2" data-series={s.kind} />
            ),
          ),
        )}
      </svg>
      <ul data-slot="legend">
        {series.map((s) => (
          <li data-series={s.kind}>{s.label}</li>
        ))}
      </ul>
    </figure>
  )
}
