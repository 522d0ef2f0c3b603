import { memo, useCallback, useState } from 'react'
import { usePoll } from '../hooks/usePoll.js'
import { formatCount, formatMs, formatPercent, formatRate } from '../lib/format.js'
import { windowLabel } from '../lib/prefs.js'
import { defaultTag, tagKeysFor } from '../lib/tags.js'

export const TOP_POLL_MS = 3000
export const TOP_N = 10

export const ORDERS = [
  { value: 'count', label: 'Most events' },
  { value: 'errors', label: 'Most errors' },
  { value: 'p95', label: 'Slowest p95' },
]

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

function emptyText(order) {
  if (order === 'errors') return 'No errors with this tag in the window.'
  if (order === 'p95') return 'No latency (ms) values with this tag in the window.'
  return 'No events with this tag in the window.'
}

function TopRow({ row, max, total, other = false }) {
  const count = num(row.count) ?? 0
  const width = max > 0 ? Math.max(1, Math.round((count / max) * 100)) : 0
  const share = total > 0 ? `${formatPercent(count / total)} of the events in these rows` : undefined
  return (
    <tr data-testid={other ? 'top-other' : 'top-row'} className={other ? 'top-other' : undefined}>
      <th scope="row" className="top-value" title={other ? 'Values past the per-tag limit, counted together' : row.value}>
        {other ? 'other values' : String(row.value)}
      </th>
      <td className="num top-count" title={share}>
        <div className="share">
          <span className="share-track" aria-hidden="true">
            <span className="share-bar" style={{ '--share': `${width}%` }} />
          </span>
          <span className="share-value">{formatCount(count)}</span>
        </div>
      </td>
      <td className={`num ${num(row.error_rate) > 0.05 ? 'text-error' : ''}`}>
        {formatCount(num(row.errors))} <span className="muted">({formatPercent(num(row.error_rate))})</span>
      </td>
      <td className="num">{formatRate(num(row.rate_per_sec))}</td>
      <td className="num">{formatMs(num(row.p95))}</td>
    </tr>
  )
}

/**
 * The values of one tag with the most events or errors, or the slowest, over the dashboard's
 * window (/api/metrics/top, polled). `catalog`: the tag keys seen per metric (useTagCatalog).
 */
export const TopPanel = memo(function TopPanel({ api, windowSec, catalog, className = '', pollMs = TOP_POLL_MS }) {
  const [metric, setMetric] = useState('')
  const [picked, setPicked] = useState('')
  const [order, setOrder] = useState('count')
  const keys = tagKeysFor(catalog, metric)
  // The picked tag may not exist on the metric picked afterwards: show a fitting one meanwhile,
  // and the picked one again when it fits.
  const by = keys.includes(picked) ? picked : defaultTag(keys)

  const fetcher = useCallback(
    (signal) => api.top({ by, window: windowSec, metric, n: TOP_N, order }, { signal }),
    [api, by, windowSec, metric, order],
  )
  const { data, error } = usePoll(fetcher, pollMs, by ? JSON.stringify([by, windowSec, metric, order]) : null)

  const rows = Array.isArray(data?.top) ? data.top : []
  const other = data?.other && typeof data.other === 'object' ? data.other : null
  const max = rows.reduce((m, r) => Math.max(m, num(r.count) ?? 0), num(other?.count) ?? 0)
  const total = rows.reduce((s, r) => s + (num(r.count) ?? 0), num(other?.count) ?? 0)
  const off = error?.status === 409

  return (
    <section className={`card table-card top-card ${className}`} aria-label="Top tag values" data-testid="top-panel">
      <header className="card-header top-header">
        <div>
          <h2 className="card-title">Top {by ? <code className="tag-name">{by}</code> : 'tag values'}</h2>
          <span className="card-subtitle">
            last {windowLabel(windowSec)}
            {data && num(data.distinct) !== null ? ` · ${formatCount(data.distinct)} distinct values` : ''}
          </span>
        </div>
        <div className="top-filters">
          <label className="select-field">
            <span className="select-label">Tag</span>
            <select data-testid="top-tag" value={by} disabled={!keys.length} onChange={(e) => setPicked(e.target.value)}>
              {!keys.length && <option value="">—</option>}
              {keys.map((k) => (
                <option key={k} value={k}>
                  {k}
                </option>
              ))}
            </select>
          </label>
          <label className="select-field">
            <span className="select-label">Metric</span>
            <select data-testid="top-metric" value={metric} onChange={(e) => setMetric(e.target.value)}>
              <option value="">All metrics</option>
              {catalog.metrics.map((m) => (
                <option key={m} value={m}>
                  {m}
                </option>
              ))}
            </select>
          </label>
          <label className="select-field">
            <span className="select-label">Rank by</span>
            <select data-testid="top-order" value={order} onChange={(e) => setOrder(e.target.value)}>
              {ORDERS.map((o) => (
                <option key={o.value} value={o.value}>
                  {o.label}
                </option>
              ))}
            </select>
          </label>
        </div>
      </header>
      {error && (
        <div className={`top-error ${off ? 'is-off' : ''}`} role={off ? 'status' : 'alert'} data-testid="top-error">
          {off ? `Top-N is turned off on this server: ${error.message}.` : `Could not load the top values: ${error.message}`}
        </div>
      )}
      <p className="scroll-hint" aria-hidden="true" data-testid="scroll-hint">
        Swipe the table sideways for more columns →
      </p>
      <div className="table-scroll">
        {(rows.length > 0 || other) && (
          <table className="table top-table" data-testid="top-table">
            <thead>
              <tr>
                <th scope="col">Value</th>
                <th scope="col" className="num">
                  Events
                </th>
                <th scope="col" className="num">
                  Errors
                </th>
                <th scope="col" className="num">
                  Rate/s
                </th>
                <th scope="col" className="num">
                  p95
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <TopRow key={r.value} row={r} max={max} total={total} />
              ))}
              {other && <TopRow row={other} max={max} total={total} other />}
            </tbody>
          </table>
        )}
        {!rows.length && !other && !off && (data || !error) && (
          <div className="empty">
            {!keys.length
              ? 'No tagged events yet: this panel ranks the values of event tags (endpoint, region, …).'
              : data
                ? emptyText(order)
                : 'Loading…'}
          </div>
        )}
      </div>
    </section>
  )
})
