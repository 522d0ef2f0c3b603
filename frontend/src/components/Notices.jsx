export function GapNotice({ gap, error, onDismiss }) {
  if (!gap && !error) return null
  return (
    <div className="notice notice-warn" role="alert" data-testid="gap-notice">
      <span className="notice-icon" aria-hidden="true">
        ⚠
      </span>
      <div className="notice-body">
        {gap && (
          <p>
            <strong>Missed ~{gap.missed} events while disconnected.</strong> The server keeps only its newest 500
            events, so the event log has a hole there. Counters and charts come from server-side aggregates and are
            complete.
          </p>
        )}
        {error && <p>{error}</p>}
      </div>
      <button type="button" className="btn btn-small" onClick={onDismiss}>
        Dismiss
      </button>
    </div>
  )
}
