import { memo, useCallback, useState } from 'react'
import { formatAlertTime, formatDuration, isActive, openCounts } from '../lib/alerts.js'
import { ApiKeyPrompt } from './ApiKeyPrompt.jsx'

export const CLOSED_SHOWN = 20 // recent closed alerts under the open ones

/** What went wrong, in words an operator can act on. */
export function ackErrorText(err) {
  if (err?.status === 401) return `Not acknowledged: this server requires an API key for changes (${err.message}).`
  if (err?.status === 404) return 'Not acknowledged: the server no longer has this alert.'
  return `Not acknowledged: ${err?.message ?? err}`
}

const fmt = (v) => (v == null ? '—' : String(Math.round(v * 1000) / 1000))

// The message already says what and how much; this says why it fired.
function detail(a) {
  if (a.kind === 'rule') {
    const what = a.rule_id?.startsWith('builtin-') ? 'built-in rule' : 'rule'
    return `${what} · threshold ${fmt(a.threshold)}${a.baseline != null ? ` · baseline ${fmt(a.baseline)}` : ''}`
  }
  const z = a.zscore != null ? ` · z ${a.zscore.toFixed(1)}` : ''
  return `anomaly${z}${a.baseline != null ? ` · baseline ${fmt(a.baseline)}` : ''}`
}

const AlertItem = memo(function AlertItem({ alert: a, busy, error, needsKey = false, onAck }) {
  const open = isActive(a)
  const lasted = open ? null : formatDuration(a.opened_at, a.closed_at)
  return (
    <li
      className={`alert-item sev-${a.severity} ${open ? 'is-open' : 'is-closed'}`}
      data-testid="alert-item"
      data-severity={a.severity}
      data-state={a.state}
    >
      <div className="alert-head">
        <span className="badge alert-severity" data-testid="alert-severity">
          {a.severity}
        </span>
        {a.state === 'nodata' ? (
          <span className="badge alert-nodata" data-testid="alert-nodata" title="Still open: its metric stopped reporting">
            no data
          </span>
        ) : open ? (
          <span className="sr-only">open alert on</span>
        ) : (
          <span className="badge alert-closed">closed</span>
        )}
        <span className="alert-metric">{a.metric}</span>
        {a.tags &&
          Object.entries(a.tags).map(([k, v]) => (
            <span key={k} className="alert-tag" data-testid="alert-tag">
              {k}={v}
            </span>
          ))}
        {a.acked && (
          <span className="badge alert-acked" data-testid="alert-acked">
            ✓ acknowledged
          </span>
        )}
        <time className="alert-time" dateTime={a.opened_at ?? undefined} title="Opened (data time)">
          {formatAlertTime(a.opened_at)}
        </time>
      </div>
      <p className="alert-message">{a.message}</p>
      <div className="alert-foot">
        <span className="alert-detail">
          {detail(a)}
          {!open && ` · closed ${formatAlertTime(a.closed_at)}${lasted ? ` after ${lasted}` : ''}`}
        </span>
        {!a.acked && (
          <button
            type="button"
            className="btn btn-small"
            data-testid="alert-ack"
            disabled={busy}
            aria-label={`Acknowledge: ${a.message}`}
            onClick={() => onAck(a.id)}
          >
            Acknowledge
          </button>
        )}
      </div>
      {error && (
        <div className="alert-error" role="alert">
          {error}
        </div>
      )}
      {error && needsKey && <ApiKeyPrompt onSaved={() => onAck(a.id)} />}
    </li>
  )
})

/**
 * Open alerts (critical first), then the most recently closed. `alerts` comes from usePulse and
 * changes only when an alert does; `onUpdate` applies an ack's answer before its socket echo.
 */
export const AlertFeed = memo(function AlertFeed({ alerts, api, onUpdate, className = '' }) {
  const [busy, setBusy] = useState({})
  const [errors, setErrors] = useState({})
  const [needsKey, setNeedsKey] = useState({})
  const items = alerts?.items ?? []
  const { open, critical } = openCounts(items)
  const shown = items.slice(0, open + CLOSED_SHOWN)

  const ack = useCallback(
    async (id) => {
      setBusy((b) => ({ ...b, [id]: true }))
      try {
        const next = await api.ackAlert(id)
        setErrors(({ [id]: _, ...rest }) => rest)
        if (next && typeof next === 'object') onUpdate?.(next)
      } catch (err) {
        setErrors((e) => ({ ...e, [id]: ackErrorText(err) }))
        setNeedsKey((k) => ({ ...k, [id]: err?.status === 401 }))
      } finally {
        setBusy(({ [id]: _, ...rest }) => rest)
      }
    },
    [api, onUpdate],
  )

  const tone = critical ? 'sev-critical' : open ? 'sev-warning' : 'none'
  return (
    <section className={`card alert-card ${className}`} id="alerts" aria-label="Alerts" data-testid="alert-feed">
      <header className="card-header">
        <h2 className="card-title">
          Alerts{' '}
          <span
            className={`badge alert-count ${tone}`}
            data-testid="open-alert-count"
            role="status"
            aria-label={`${open} open alert${open === 1 ? '' : 's'}${critical ? `, ${critical} critical` : ''}`}
          >
            {open} open
          </span>
        </h2>
        <span className="card-subtitle">open first, then recently closed</span>
      </header>
      {alerts?.error && (
        <div className="alert-load-error" role="alert">
          {alerts.error}
        </div>
      )}
      <div className="alert-scroll">
        {shown.length > 0 && (
          // role="list": `list-style: none` drops the implicit role in some screen readers.
          <ul className="alert-list" role="list" aria-label="Alerts, open first">
            {/* An ack from elsewhere (another tab, curl) makes an earlier failure here moot. */}
            {shown.map((a) => (
              <AlertItem
                key={a.id}
                alert={a}
                busy={Boolean(busy[a.id])}
                error={a.acked ? null : errors[a.id]}
                needsKey={Boolean(needsKey[a.id])}
                onAck={ack}
              />
            ))}
          </ul>
        )}
        {!shown.length && (
          <div className="empty">
            {alerts?.loaded ? 'No alerts. Rules and anomaly detection are watching.' : 'Loading alerts…'}
          </div>
        )}
      </div>
    </section>
  )
})
