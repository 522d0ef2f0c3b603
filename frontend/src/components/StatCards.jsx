import { memo } from 'react'
import { formatCount, formatMs, formatPercent, formatRate } from '../lib/format.js'
import { windowLabel } from '../lib/prefs.js'

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

/** errors/count when both are known (unambiguous), else the server's error_rate (0..1). */
export function errorRateOf(stats) {
  const count = num(stats?.count)
  const errors = num(stats?.errors)
  if (count !== null && errors !== null) return count > 0 ? errors / count : 0
  return num(stats?.error_rate)
}

const hms = (ms) =>
  [new Date(ms).getHours(), new Date(ms).getMinutes(), new Date(ms).getSeconds()]
    .map((n) => String(n).padStart(2, '0'))
    .join(':')

/** "as of 12:00:03 · Redis down since 12:00:04": why the numbers are old and since when. */
export function staleText(stale) {
  if (!stale) return null
  const asOf = `as of ${hms(stale.asOf)}`
  if (stale.reason === 'no update') return `${asOf} · no update since`
  return `${asOf} · ${stale.reason} since ${hms(stale.since)}`
}

function Card({ label, value, testId, hint, tone, stale }) {
  return (
    <div className={`card stat-card ${tone && !stale ? `tone-${tone}` : ''} ${stale ? 'is-stale' : ''}`}>
      <div className="stat-label">{label}</div>
      <div className="stat-value" data-testid={testId}>
        {value}
      </div>
      <div className="stat-hint">{stale ?? hint}</div>
    </div>
  )
}

export const StatCards = memo(function StatCards({ aggregate, latency, windowSec, stale = null }) {
  const old = staleText(stale)
  const total = aggregate?.total
  const errorRate = errorRateOf(total)
  const field = latency ? aggregate?.metrics?.[latency.metric]?.fields?.[latency.field] : null
  const latencyHint = latency ? `${latency.metric}.${latency.field}` : 'no latency field yet'
  const win = `last ${windowLabel(windowSec)}`
  const errorTone = errorRate === null ? null : errorRate >= 0.05 ? 'bad' : errorRate >= 0.01 ? 'warn' : 'good'
  return (
    <section
      className="stat-grid"
      aria-label={`Totals for the ${win}`}
      data-testid="stat-cards"
      data-stale={old ? 'true' : 'false'}
      title={old ? `These numbers are old: ${old}` : undefined}
    >
      <Card stale={old} label="Total events" value={formatCount(num(total?.count))} testId="total-events" hint={win} />
      <Card
        stale={old}
        label="Events / s"
        value={formatRate(num(total?.rate_per_sec))}
        testId="window-events-per-sec"
        hint={`average, ${win}`}
      />
      <Card
        stale={old}
        label="Error rate"
        value={formatPercent(errorRate)}
        testId="error-rate"
        hint={`${formatCount(num(total?.errors))} errors`}
        tone={errorTone}
      />
      <Card stale={old} label="Latency p50" value={formatMs(num(field?.p50))} testId="p50" hint={latencyHint} />
      <Card stale={old} label="Latency p95" value={formatMs(num(field?.p95))} testId="p95" hint={latencyHint} />
      <Card stale={old} label="Latency p99" value={formatMs(num(field?.p99))} testId="p99" hint={latencyHint} />
    </section>
  )
})
