import { windowLabel } from '../lib/prefs.js'

const ARROWS = { rising: '▲', falling: '▼', stable: '▶' }

/** "+35%": the fitted change over the window, relative to the mean rate (what the server judges). */
export function trendChange(t, windowSec) {
  const rel = t?.relative_slope
  if (typeof rel !== 'number' || !Number.isFinite(rel) || !windowSec) return null
  const pct = Math.round(rel * windowSec * 100)
  return `${pct > 0 ? '+' : pct < 0 ? '−' : '±'}${Math.abs(pct)}%`
}

/** ▲/▼/▶ for a metric's rate trend; nothing when the server gave none. */
export function TrendArrow({ trend, windowSec }) {
  const kind = trend?.trend
  if (!ARROWS[kind]) return null
  const change = trendChange(trend, windowSec)
  const over = windowSec ? ` over the last ${windowLabel(windowSec)}` : ''
  const title = `Rate ${kind}${change ? `: ${change}${over} (least-squares fit)` : ''}`
  return (
    <span className={`trend trend-${kind}`} role="img" aria-label={kind} title={title} data-testid="trend">
      {ARROWS[kind]}
    </span>
  )
}
