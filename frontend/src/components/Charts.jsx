import { memo, useMemo, useRef, useState } from 'react'
import { Line } from 'react-chartjs-2'
import '../lib/chartSetup.js'
import { formatClock, formatMs, formatRate, formatTick } from '../lib/format.js'
import { alertMarkers } from '../lib/markers.js'
import { CHART_THEME, metricColor } from './colors.js'

const LATENCY_COLORS = { p50: '#10b981', p95: '#f59e0b', p99: '#ef4444' }

function options({ series, windowSec, theme, yFormat, yMax, stacked = false, markers = [], logScale = false }) {
  const c = CHART_THEME[theme] ?? CHART_THEME.light
  const now = series?.to ?? Date.now()
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    parsing: false,
    normalized: true,
    spanGaps: false,
    interaction: { mode: 'index', intersect: false },
    elements: { point: { radius: 0, hoverRadius: 3 }, line: { borderWidth: 1.75, tension: 0.25 } },
    plugins: {
      alertMarkers: { markers },
      legend: {
        position: 'bottom',
        labels: { color: c.text, boxWidth: 10, boxHeight: 10, usePointStyle: true, pointStyle: 'rectRounded', padding: 12 },
      },
      tooltip: {
        backgroundColor: c.tooltipBg,
        callbacks: {
          title: (items) => (items.length ? formatClock(items[0].parsed.x) : ''),
          label: (ctx) => `${ctx.dataset.label}: ${ctx.parsed.y == null ? '—' : yFormat(ctx.parsed.y)}`,
        },
      },
    },
    scales: {
      x: {
        type: 'linear',
        min: series?.from ?? now - windowSec * 1000,
        max: now,
        grid: { color: c.grid },
        border: { display: false },
        ticks: { color: c.text, maxRotation: 0, autoSkipPadding: 16, maxTicksLimit: 7, callback: (v) => formatTick(v, windowSec) },
      },
      y: {
        // log: one 26 s timeout no longer flattens p50/p95 into the floor
        ...(logScale ? { type: 'logarithmic' } : {}),
        stacked,
        beginAtZero: !logScale,
        suggestedMax: yMax,
        grid: { color: c.grid },
        border: { display: false },
        ticks: { color: c.text, maxTicksLimit: 5, callback: (v) => yFormat(v) },
      },
    },
  }
}

/** Markers of the alerts that opened or closed in the chart's time range. */
function useMarkers(alerts, chart, series, windowSec) {
  const to = series?.to ?? null
  const from = series?.from ?? null
  return useMemo(
    () => (to == null ? [] : alertMarkers(alerts, chart, from ?? to - windowSec * 1000, to)),
    [alerts, chart, from, to, windowSec],
  )
}

function MarkerLegend({ markers }) {
  if (!markers.length) return null
  const opened = markers.filter((m) => m.kind === 'open').length
  const closed = markers.length - opened
  return (
    <span
      className="chart-markers"
      data-testid="chart-markers"
      data-open={opened}
      data-close={closed}
      title="Vertical lines: alerts opened (solid) and closed (dashed) in this range"
    >
      {opened > 0 && `▼ ${opened} opened`}
      {opened > 0 && closed > 0 && ' · '}
      {closed > 0 && `▽ ${closed} closed`}
    </span>
  )
}

const MIN_DRAG_PX = 6

/**
 * Drag across a chart to zoom: the pixels between press and release, read back through the
 * chart's x scale, become an absolute range. A click (a short drag) does nothing, so tooltips
 * and legend clicks keep working.
 */
function useDragZoom(chartRef, onZoom) {
  const [sel, setSel] = useState(null) // {x0, x1} in px within the box
  const start = useRef(null)
  if (!onZoom) return { handlers: {}, sel: null }
  const local = (e) => {
    const chart = chartRef.current
    if (!chart?.canvas) return null
    const rect = chart.canvas.getBoundingClientRect()
    const area = chart.chartArea
    const x = Math.min(Math.max(e.clientX - rect.left, area.left), area.right)
    return { x, offset: chart.canvas.offsetLeft }
  }
  const handlers = {
    onPointerDown: (e) => {
      if (e.button !== 0) return
      const p = local(e)
      if (!p) return
      start.current = p
      setSel({ x0: p.x + p.offset, x1: p.x + p.offset })
    },
    onPointerMove: (e) => {
      if (!start.current) return
      const p = local(e)
      if (p) setSel({ x0: start.current.x + p.offset, x1: p.x + p.offset })
    },
    onPointerUp: (e) => {
      const s = start.current
      start.current = null
      setSel(null)
      const p = s && local(e)
      const chart = chartRef.current
      if (!p || !chart || Math.abs(p.x - s.x) < MIN_DRAG_PX) return
      const a = chart.scales.x.getValueForPixel(Math.min(s.x, p.x))
      const b = chart.scales.x.getValueForPixel(Math.max(s.x, p.x))
      if (Number.isFinite(a) && Number.isFinite(b) && b > a) onZoom({ from: Math.round(a), to: Math.round(b) })
    },
    onPointerLeave: () => {
      start.current = null
      setSel(null)
    },
  }
  return { handlers, sel }
}

export function ChartPanel({ title, subtitle, testId, empty, className = '', markers = [], chartRef = null, onZoom = null, children }) {
  const { handlers, sel } = useDragZoom(chartRef ?? { current: null }, chartRef ? onZoom : null)
  return (
    <section className={`card chart-card ${className}`} data-testid={testId}>
      <header className="card-header">
        <h2 className="card-title">{title}</h2>
        {subtitle && <span className="card-subtitle">{subtitle}</span>}
        <MarkerLegend markers={markers} />
      </header>
      <div className={`chart-box ${onZoom ? 'zoomable' : ''}`} data-testid={testId ? `${testId}-box` : undefined} {...handlers}>
        {sel && (
          <div
            className="zoom-selection"
            data-testid="zoom-selection"
            style={{ left: Math.min(sel.x0, sel.x1), width: Math.abs(sel.x1 - sel.x0) }}
          />
        )}
        {children}
        {empty && <div className="chart-empty">Waiting for data…</div>}
      </div>
    </section>
  )
}

const hasPoints = (lists) => lists.some((l) => l?.some((p) => p.y !== null))

export const ThroughputChart = memo(function ThroughputChart({ series, windowSec, theme, className, alerts = null, onZoom = null }) {
  const chartRef = useRef(null)
  const data = useMemo(
    () => ({
      datasets: (series?.metrics ?? []).map((m) => ({
        label: m,
        data: series.throughput[m],
        borderColor: metricColor(m),
        backgroundColor: metricColor(m),
      })),
    }),
    [series],
  )
  const markers = useMarkers(alerts, 'throughput', series, windowSec)
  const opts = useMemo(
    () => options({ series, windowSec, theme, yFormat: formatRate, markers }),
    [series, windowSec, theme, markers],
  )
  const step = series ? `${series.stepMs / 1000} s buckets` : null
  return (
    <ChartPanel
      title="Throughput by metric"
      subtitle={step ? `events/s · ${step}` : 'events/s'}
      testId="chart-throughput"
      className={className}
      markers={markers}
      chartRef={chartRef}
      onZoom={onZoom}
      empty={!hasPoints(data.datasets.map((d) => d.data))}
    >
      <Line ref={chartRef} data={data} options={opts} aria-label="Throughput by metric, events per second" role="img" />
    </ChartPanel>
  )
})

export const LatencyChart = memo(function LatencyChart({ series, windowSec, theme, className, alerts = null, onZoom = null, logScale = false }) {
  const chartRef = useRef(null)
  const data = useMemo(
    () => ({
      datasets: ['p50', 'p95', 'p99'].map((p) => ({
        label: p,
        data: series?.latency[p] ?? [],
        borderColor: LATENCY_COLORS[p],
        backgroundColor: LATENCY_COLORS[p],
      })),
    }),
    [series],
  )
  const markers = useMarkers(alerts, 'latency', series, windowSec)
  const opts = useMemo(
    () => options({ series, windowSec, theme, yFormat: formatMs, markers, logScale }),
    [series, windowSec, theme, markers, logScale],
  )
  const field = series?.latencyField
  return (
    <ChartPanel
      title="Latency"
      subtitle={`${field ? `${field.metric}.${field.field}` : 'no latency-like field'}${logScale ? ' · log scale' : ''}`}
      testId="chart-latency"
      className={className}
      markers={markers}
      chartRef={chartRef}
      onZoom={onZoom}
      empty={!hasPoints(data.datasets.map((d) => d.data))}
    >
      <Line ref={chartRef} data={data} options={opts} aria-label="Latency percentiles p50, p95 and p99" role="img" />
    </ChartPanel>
  )
})

const pct = (v) => `${Number(v.toFixed(2))}%`

export const ErrorChart = memo(function ErrorChart({ series, windowSec, theme, className, alerts = null, onZoom = null }) {
  const chartRef = useRef(null)
  const data = useMemo(
    () => ({
      datasets: [
        {
          label: 'Error rate',
          data: series?.errors ?? [],
          borderColor: '#ef4444',
          backgroundColor: 'rgba(239, 68, 68, 0.15)',
          fill: 'origin',
        },
      ],
    }),
    [series],
  )
  const markers = useMarkers(alerts, 'errors', series, windowSec)
  const opts = useMemo(() => {
    const o = options({ series, windowSec, theme, yFormat: pct, yMax: 1, markers })
    o.plugins.legend.display = false
    return o
  }, [series, windowSec, theme, markers])
  return (
    <ChartPanel
      title="Error rate"
      subtitle="% of events with status error"
      testId="chart-errors"
      className={className}
      markers={markers}
      chartRef={chartRef}
      onZoom={onZoom}
      empty={!hasPoints([data.datasets[0].data])}
    >
      <Line ref={chartRef} data={data} options={opts} aria-label="Error rate, percent" role="img" />
    </ChartPanel>
  )
})
