// Alert open/close markers for the time charts: which alerts go on which chart, and a small
// Chart.js plugin that draws them as vertical lines (no annotation plugin needed).

/** The chart an alert belongs on: error rates on the error chart, field values on latency. */
export function chartOf(alert) {
  if (alert.signal === 'error_rate') return 'errors'
  if (alert.signal === 'rate' || alert.signal == null) return 'throughput'
  return 'latency'
}

/**
 * Markers of `alerts` for `chart` between `from` and `to` (ms): [{x, kind: 'open'|'close',
 * severity, label}], oldest first. Bounded by the alerts the page keeps (ALERTS_LIMIT + open ones).
 */
export function alertMarkers(alerts, chart, from, to) {
  const out = []
  for (const a of alerts ?? []) {
    if (chartOf(a) !== chart) continue
    const label = `${a.metric}${a.field ? `.${a.field}` : ''}`
    for (const [kind, iso] of [
      ['open', a.opened_at],
      ['close', a.state === 'closed' ? a.closed_at : null],
    ]) {
      const x = Date.parse(iso ?? '')
      if (Number.isFinite(x) && x >= from && x <= to) out.push({ x, kind, severity: a.severity, label })
    }
  }
  return out.sort((p, q) => p.x - q.x)
}

const COLORS = { critical: '#ef4444', warning: '#f59e0b' }

/** Chart.js plugin `alertMarkers`: options.plugins.alertMarkers.markers = alertMarkers(...). */
export const alertMarkerPlugin = {
  id: 'alertMarkers',
  afterDatasetsDraw(chart, _args, opts) {
    const markers = opts?.markers
    if (!markers?.length) return
    const { ctx, chartArea, scales } = chart
    ctx.save()
    ctx.lineWidth = 1.5
    for (const m of markers) {
      const x = scales.x.getPixelForValue(m.x)
      if (!(x >= chartArea.left && x <= chartArea.right)) continue
      ctx.strokeStyle = m.kind === 'open' ? COLORS[m.severity] ?? COLORS.warning : '#94a3b8'
      ctx.setLineDash(m.kind === 'open' ? [] : [4, 3])
      ctx.beginPath()
      ctx.moveTo(x, chartArea.top)
      ctx.lineTo(x, chartArea.bottom)
      ctx.stroke()
      // a small flag at the top: ▼ opened, ▽ closed
      ctx.fillStyle = ctx.strokeStyle
      ctx.beginPath()
      ctx.moveTo(x - 4, chartArea.top)
      ctx.lineTo(x + 4, chartArea.top)
      ctx.lineTo(x, chartArea.top + 6)
      ctx.closePath()
      if (m.kind === 'open') ctx.fill()
      else ctx.stroke()
    }
    ctx.restore()
  },
}
