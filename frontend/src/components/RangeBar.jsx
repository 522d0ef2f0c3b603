import { memo, useEffect, useState } from 'react'
import { fromLocalInput, toLocalInput } from '../lib/urlstate.js'

/** "12:00:00 – 12:05:00" (with dates when not today). */
export function rangeLabel(range) {
  const day = (ms) => new Date(ms).toDateString()
  const fmt = (ms) => (day(ms) === day(Date.now()) ? toLocalInput(ms).slice(11) : toLocalInput(ms).replace('T', ' '))
  return `${fmt(range.from)} – ${fmt(range.to)}`
}

/**
 * The view's time and filters: live (the header's window presets) or an absolute from/to range
 * (typed here, or dragged on any chart), a tag filter for the charts, and the latency log scale.
 */
export const RangeBar = memo(function RangeBar({ range, windowSec, onRange, tag, onTag, logScale, onLogScale, tagSuggestions = [], onSuggest }) {
  const [from, setFrom] = useState('')
  const [to, setTo] = useState('')
  const [tagText, setTagText] = useState(tag ?? '')
  const [error, setError] = useState(null)
  useEffect(() => {
    const end = range ? range.to : Date.now()
    const start = range ? range.from : end - windowSec * 1000
    setFrom(toLocalInput(start))
    setTo(toLocalInput(end))
  }, [range, windowSec])
  useEffect(() => setTagText(tag ?? ''), [tag])

  const apply = (e) => {
    e.preventDefault()
    const a = fromLocalInput(from)
    const b = fromLocalInput(to)
    if (a === null || b === null) return setError('Enter both times.')
    if (a >= b) return setError('"From" must be before "to".')
    setError(null)
    onRange({ from: a, to: Math.min(b, Date.now()) })
  }

  return (
    <section className="card range-bar" aria-label="Time range and filters" data-testid="range-bar">
      <form className="range-form" onSubmit={apply}>
        <span className="range-mode" data-testid="range-label">
          {range ? rangeLabel(range) : 'Live'}
        </span>
        <label className="range-field">
          <span>From</span>
          <input type="datetime-local" step="1" data-testid="range-from" value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label className="range-field">
          <span>To</span>
          <input type="datetime-local" step="1" data-testid="range-to" value={to} onChange={(e) => setTo(e.target.value)} />
        </label>
        <button type="submit" className="btn btn-small" data-testid="range-apply">
          Show range
        </button>
        {range && (
          <button type="button" className="btn btn-small btn-primary" data-testid="range-live" onClick={() => onRange(null)}>
            Back to live
          </button>
        )}
        {error && (
          <span className="rule-error" role="alert">
            {error}
          </span>
        )}
      </form>
      <form
        className="range-form"
        onSubmit={(e) => {
          e.preventDefault()
          const t = tagText.trim()
          onTag(t && /^[A-Za-z0-9_.:-]{1,64}=.+$/.test(t) ? t : null)
        }}
      >
        <label className="range-field">
          <span>Charts for</span>
          <input
            type="search"
            list="tag-suggestions"
            data-testid="chart-tag"
            placeholder="endpoint=/api/orders"
            value={tagText}
            onFocus={onSuggest}
            onChange={(e) => setTagText(e.target.value)}
          />
          <datalist id="tag-suggestions">
            {tagSuggestions.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </label>
        <button type="submit" className="btn btn-small" data-testid="chart-tag-apply">
          Filter
        </button>
        {tag && (
          <button type="button" className="btn btn-small" data-testid="chart-tag-clear" onClick={() => onTag(null)}>
            All events
          </button>
        )}
        <label className="range-check">
          <input type="checkbox" data-testid="latency-log" checked={logScale} onChange={(e) => onLogScale(e.target.checked)} />
          <span>Latency log scale</span>
        </label>
        <span className="range-hint">Drag across a chart to zoom in.</span>
      </form>
    </section>
  )
})

/** Up to `max` "key=value" pairs seen in the log's events, most frequent first. */
export function tagPairs(events, max = 30) {
  const counts = new Map()
  for (let i = 0; i < events.length && i < 500; i += 1) {
    const tags = events[i].tags
    if (!tags) continue
    for (const [k, v] of Object.entries(tags)) {
      const pair = `${k}=${v}`
      counts.set(pair, (counts.get(pair) ?? 0) + 1)
    }
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, max)
    .map(([p]) => p)
}
