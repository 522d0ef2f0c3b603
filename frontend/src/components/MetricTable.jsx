import { memo, useMemo, useState } from 'react'
import { formatCount, formatPercent, formatRate, formatStat } from '../lib/format.js'
import { pickStatField } from '../lib/latency.js'
import { metricColor } from './colors.js'
import { errorRateOf } from './StatCards.jsx'
import { TrendArrow } from './TrendArrow.jsx'

const COLUMNS = [
  { key: 'metric', label: 'Metric', numeric: false },
  { key: 'count', label: 'Count', numeric: true },
  { key: 'rate', label: 'Rate/s', numeric: true },
  { key: 'errorRate', label: 'Error rate', numeric: true },
  { key: 'avg', label: 'Avg', numeric: true },
  { key: 'p95', label: 'p95', numeric: true },
]

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

export function metricRows(aggregate) {
  const metrics = aggregate?.metrics && typeof aggregate.metrics === 'object' ? aggregate.metrics : {}
  return Object.entries(metrics).map(([metric, m]) => {
    const field = pickStatField(m?.fields)
    const stats = field ? m.fields[field] : null
    return {
      metric,
      field,
      count: num(m?.count),
      rate: num(m?.rate_per_sec),
      errorRate: errorRateOf(m),
      avg: num(stats?.avg),
      p95: num(stats?.p95),
    }
  })
}

export function sortRows(rows, { key, dir }) {
  const sign = dir === 'asc' ? 1 : -1
  return [...rows].sort((a, b) => {
    const x = a[key]
    const y = b[key]
    if (x === y) return a.metric < b.metric ? -1 : 1
    if (x === null) return 1 // unknowns last, whichever the direction
    if (y === null) return -1
    return (x < y ? -1 : 1) * sign
  })
}

/** `trends`: /api/metrics/trends' answer (or null); its arrows go next to the counts. */
export const MetricTable = memo(function MetricTable({ aggregate, trends = null, className = '' }) {
  const [sort, setSort] = useState({ key: 'count', dir: 'desc' })
  const rows = useMemo(() => sortRows(metricRows(aggregate), sort), [aggregate, sort])

  const onSort = (key, numeric) =>
    setSort((s) => (s.key === key ? { key, dir: s.dir === 'asc' ? 'desc' : 'asc' } : { key, dir: numeric ? 'desc' : 'asc' }))

  return (
    <section className={`card table-card ${className}`} aria-label="Per-metric breakdown">
      <header className="card-header">
        <h2 className="card-title">By metric</h2>
        <span className="card-subtitle">avg / p95 of each metric&apos;s latency field, else its first field</span>
      </header>
      <p className="scroll-hint" aria-hidden="true" data-testid="scroll-hint">
        Swipe the table sideways for more columns →
      </p>
      <div className="table-scroll">
        <table className="table metric-table" data-testid="metric-table">
          <thead>
            <tr>
              {COLUMNS.map((c) => {
                const active = sort.key === c.key
                return (
                  <th
                    key={c.key}
                    scope="col"
                    className={c.numeric ? 'num' : undefined}
                    aria-sort={active ? (sort.dir === 'asc' ? 'ascending' : 'descending') : 'none'}
                  >
                    <button type="button" className="sort-btn" onClick={() => onSort(c.key, c.numeric)}>
                      {c.label}
                      <span className="sort-arrow" aria-hidden="true">
                        {active ? (sort.dir === 'asc' ? '▲' : '▼') : ''}
                      </span>
                    </button>
                  </th>
                )
              })}
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.metric} data-testid="metric-row">
                <th scope="row" className="nowrap">
                  <span className="metric-name" style={{ '--dot': metricColor(r.metric) }}>
                    {r.metric}
                  </span>
                  {r.field && <span className="field-name">{r.field}</span>}
                </th>
                <td className="num">
                  {formatCount(r.count)}
                  <TrendArrow trend={trends?.trends?.[r.metric]} windowSec={trends?.window_seconds} />
                </td>
                <td className="num">{formatRate(r.rate)}</td>
                <td className={`num ${r.errorRate > 0.05 ? 'text-error' : ''}`}>{formatPercent(r.errorRate)}</td>
                <td className="num">{formatStat(r.avg, r.field)}</td>
                <td className="num">{formatStat(r.p95, r.field)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {!rows.length && <div className="empty">No events in this window.</div>}
      </div>
    </section>
  )
})
