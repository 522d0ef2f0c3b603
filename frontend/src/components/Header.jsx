import { WINDOWS } from '../lib/prefs.js'
import { formatRate } from '../lib/format.js'

export function statusText(status, attempt) {
  if (status === 'connected') return 'Connected'
  if (status === 'reconnecting') return `Reconnecting… (attempt ${Math.max(1, attempt)})`
  if (status === 'offline') return 'Offline'
  return 'Connecting…'
}

const hms = (ms) => {
  const d = new Date(ms)
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':')
}

/** "Redis down since 12:00:04" from the server's `status` push; null while all is up. */
export function serverStatusText(serverStatus) {
  if (!serverStatus) return null
  const what = serverStatus.redis === 'down' ? 'Redis down' : serverStatus.worker === 'down' ? 'Worker down' : null
  if (!what) return null
  const since = Date.parse(serverStatus.since ?? '')
  return Number.isFinite(since) ? `${what} since ${hms(since)}` : what
}

export function ConnectionStatus({ status, attempt, serverStatus = null }) {
  const degraded = status === 'connected' ? serverStatusText(serverStatus) : null
  return (
    <span className={`status-pill status-${degraded ? 'degraded' : status}`} role="status" aria-live="polite">
      <span className="status-dot" aria-hidden="true" />
      <span data-testid="connection-status">{statusText(status, attempt)}</span>
      {degraded && (
        <span className="server-status" data-testid="server-status">
          {' · '}
          {degraded}
        </span>
      )}
    </span>
  )
}

function Logo() {
  return (
    <svg className="logo" viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="7" fill="var(--accent)" />
      <path
        d="M4 17h6l3-8 5 15 3-7h7"
        fill="none"
        stroke="#fff"
        strokeWidth="2.6"
        strokeLinecap="round"
        strokeLinejoin="round"
      />
    </svg>
  )
}

export function Header({
  status,
  attempt,
  ratePerSec,
  redisDown,
  serverStatus = null,
  openAlerts = null,
  windowSec,
  onWindowChange,
  paused,
  onTogglePause,
  theme,
  onToggleTheme,
}) {
  const other = theme === 'dark' ? 'light' : 'dark'
  return (
    <header className="topbar">
      <div className="topbar-left">
        <h1 className="brand">
          <Logo />
          Pulseboard
        </h1>
        <ConnectionStatus status={status} attempt={attempt} serverStatus={serverStatus} />
        {redisDown && !serverStatus && (
          <span className="badge badge-error" title="The server reports that Redis is unreachable">
            Redis down
          </span>
        )}
        {openAlerts?.open > 0 && (
          // The feed may be scrolled out of view: this is the always-visible hint, and the way there.
          <a
            className={`badge alert-count ${openAlerts.critical ? 'sev-critical' : 'sev-warning'}`}
            href="#alerts"
            data-testid="header-open-alerts"
            title="Go to the alert feed"
          >
            {openAlerts.open} open alert{openAlerts.open === 1 ? '' : 's'}
            {openAlerts.critical ? ` · ${openAlerts.critical} critical` : ''}
          </a>
        )}
        <span className="live-rate" title="Events received by this page in the last 2 seconds">
          <span className="live-rate-value" data-testid="events-per-sec">
            {formatRate(ratePerSec)}
          </span>
          <span className="live-rate-unit">events/s</span>
        </span>
      </div>
      <div className="topbar-right">
        <label className="select-field">
          <span className="select-label">Window</span>
          <select data-testid="window-select" value={windowSec} onChange={(e) => onWindowChange(Number(e.target.value))}>
            {WINDOWS.map((w) => (
              <option key={w.value} value={w.value}>
                {w.label}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          className={`btn ${paused ? 'btn-primary' : ''}`}
          data-testid="pause-toggle"
          aria-pressed={paused}
          title={paused ? 'Resume the live log and charts' : 'Freeze the log and charts to read them (counters stay live)'}
          onClick={onTogglePause}
        >
          <span aria-hidden="true" className="btn-icon">
            {paused ? '▶' : '❚❚'}
          </span>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <button
          type="button"
          className="btn btn-icon-only"
          data-testid="theme-toggle"
          aria-label={`Switch to ${other} theme`}
          title={`Switch to ${other} theme`}
          onClick={onToggleTheme}
        >
          <span aria-hidden="true">{theme === 'dark' ? '☀' : '☾'}</span>
        </button>
      </div>
    </header>
  )
}
