import { memo, useDeferredValue, useMemo, useState } from 'react'
import { formatClock, formatCount, formatValue } from '../lib/format.js'
import { metricColor } from './colors.js'

export const LOG_ROWS = 200 // never more rows than this in the DOM

// Lower-cased text each event is searched by, computed once per event (lazily: only while a text
// filter is set). Only what a row shows: metric, source, value, tag chips, status.
const searchText = new WeakMap()
const tagChips = (ev) => (ev.tags ? Object.entries(ev.tags).map(([k, v]) => `${k}=${v}`) : [])
function textOf(ev) {
  let t = searchText.get(ev)
  if (t === undefined) {
    t = `${ev.metric} ${ev.source ?? ''} ${ev.status} ${formatValue(ev.value)} ${tagChips(ev).join(' ')}`.toLowerCase()
    searchText.set(ev, t)
  }
  return t
}

export function filterEvents(events, metric, text, limit = LOG_ROWS) {
  const needle = text.trim().toLowerCase()
  const out = []
  for (const ev of events) {
    if (metric && ev.metric !== metric) continue
    if (needle && !textOf(ev).includes(needle)) continue
    out.push(ev)
    if (out.length >= limit) break
  }
  return out
}

const EventRow = memo(function EventRow({ ev }) {
  const value = formatValue(ev.value)
  const chips = tagChips(ev)
  return (
    <tr data-testid="event-row" className={ev.status === 'error' ? 'row-error' : undefined}>
      <td className="mono nowrap muted">{formatClock(ev.ts)}</td>
      <td className="nowrap">
        <span className="metric-name" style={{ '--dot': metricColor(ev.metric) }}>
          {ev.metric}
        </span>
      </td>
      <td className="nowrap cell-source">{ev.source ?? '—'}</td>
      <td className="mono cell-value" title={chips.length ? `${value}\n${chips.join(', ')}` : value}>
        <span className="cell-value-text">{value}</span>
        {chips.map((c) => (
          <span key={c} className="tag-chip" data-testid="tag-chip">
            {c}
          </span>
        ))}
      </td>
      <td>
        <span className={`badge ${ev.status === 'error' ? 'badge-error' : 'badge-ok'}`}>{ev.status}</span>
      </td>
    </tr>
  )
})

export function EventLog({ events, metrics = [], paused, newCount = 0, onResume, initialMetric = '', initialText = '', onFiltersChange }) {
  const [metric, setMetricState] = useState(initialMetric)
  const [text, setTextState] = useState(initialText)
  const setMetric = (m) => {
    setMetricState(m)
    onFiltersChange?.({ metric: m, text })
  }
  const setText = (t) => {
    setTextState(t)
    onFiltersChange?.({ metric, text: t })
  }
  const query = useDeferredValue(text)
  const rows = useMemo(() => filterEvents(events, metric, query), [events, metric, query])
  const options = useMemo(() => {
    const names = new Set(metrics)
    for (const ev of events) {
      if (names.size >= 100) break
      names.add(ev.metric)
    }
    if (metric) names.add(metric)
    return [...names].sort()
  }, [events, metrics, metric])
  const filtered = Boolean(metric || query.trim())

  return (
    <section className="card log-card" aria-label="Event log">
      <header className="card-header log-header">
        <div>
          <h2 className="card-title">Event log</h2>
          <span className="card-subtitle">
            {filtered ? `${rows.length} matching` : `newest ${Math.min(rows.length, LOG_ROWS)}`} · {formatCount(events.length)}{' '}
            buffered
          </span>
        </div>
        <div className="log-filters">
          <select
            data-testid="log-filter-metric"
            aria-label="Filter by metric"
            value={metric}
            onChange={(e) => setMetric(e.target.value)}
          >
            <option value="">All metrics</option>
            {options.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
          <input
            type="search"
            data-testid="log-filter-text"
            aria-label="Filter by text"
            placeholder="Filter…"
            value={text}
            onChange={(e) => setText(e.target.value)}
          />
        </div>
      </header>
      {paused && (
        <div className="log-paused" role="status">
          <span>
            <strong>Paused</strong> ·{' '}
            <span data-testid="new-events">
              {newCount} new {newCount === 1 ? 'event' : 'events'}
            </span>{' '}
            since
          </span>
          <button type="button" className="btn btn-small btn-primary" onClick={onResume}>
            Resume
          </button>
        </div>
      )}
      <div className="table-scroll log-scroll">
        <table className="table log-table" data-testid="event-log">
          {/* Fixed layout: column widths don't depend on 200 rows' content, so a commit that
              replaces every row doesn't re-measure them all. */}
          <colgroup>
            <col className="col-time" />
            <col className="col-metric" />
            <col className="col-source" />
            <col />
            <col className="col-status" />
          </colgroup>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Metric</th>
              <th scope="col">Source</th>
              <th scope="col">Value · tags</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody>
            {/* Keyed by position: when a commit brings 200 new events (20k/s), React rewrites the
                text of the existing rows instead of destroying and creating 200 of them. */}
            {rows.map((ev, i) => (
              <EventRow key={i} ev={ev} />
            ))}
          </tbody>
        </table>
        {!rows.length && <div className="empty">{filtered ? 'No events match the filter.' : 'No events yet.'}</div>}
      </div>
    </section>
  )
}
