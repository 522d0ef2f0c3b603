import { sameField } from './latency.js'

// Chart data for one window: ~60 buckets of `step` seconds on a fixed time grid.
//
// History comes from /api/metrics/timeseries (one request per series); live batches are then
// bucketed here on the same grid, so the live edge of a chart means exactly what the history
// means (events per bucket), not a sliding-window average glued onto bucketed history.

export const POINTS_PER_VIEW = 60
export const MAX_CHART_METRICS = 10
const RESERVOIR = 256 // latency samples kept per bucket (uniform reservoir sample)
const MAX_METRICS_PER_BUCKET = 64 // metric names are untrusted: bound the per-bucket map
const MAX_PENDING = 200_000 // events held while history loads (a few seconds at 20k/s)

/**
 * Seconds per bucket for a window: about window/60, at least 1 s (the server's resolution), and
 * a divisor of the window (the timeseries API requires that).
 */
export function stepFor(windowSec) {
  let step = Math.max(1, Math.round(windowSec / POINTS_PER_VIEW))
  while (windowSec % step) step -= 1
  return step
}

/** Linear-interpolated percentile of an ascending array, p in 0..1. */
export function percentile(sorted, p) {
  if (!sorted.length) return null
  const idx = (sorted.length - 1) * p
  const lo = Math.floor(idx)
  const hi = Math.ceil(idx)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (idx - lo)
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
const numOrNull = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

function newBucket() {
  return { count: 0, errors: 0, metrics: new Map(), samples: [], seen: 0, sortedSeen: -1, pcts: null, hist: null }
}

export class SeriesStore {
  constructor({ windowSec, latency = null, maxMetrics = MAX_CHART_METRICS, random = Math.random }) {
    this.windowSec = windowSec
    this.windowMs = windowSec * 1000
    this.stepMs = stepFor(windowSec) * 1000
    this.latency = latency
    this.maxMetrics = maxMetrics
    this.random = random
    this.buckets = new Map()
    this.firstKey = null
    this.ready = false
    this.pending = []
    // Events with seq <= cutoffSeq had been delivered when the history was answered, so the
    // history already counts them. (seq, not time: the client's clock is not the server's.)
    this.cutoffSeq = -Infinity
  }

  keyOf(ms) {
    return Math.floor(ms / this.stepMs) * this.stepMs
  }

  bucket(key) {
    let b = this.buckets.get(key)
    if (!b) {
      b = newBucket()
      this.buckets.set(key, b)
      if (this.firstKey === null || key < this.firstKey) this.firstKey = key
    }
    return b
  }

  /** Changes the latency field (e.g. http_request appears after load); its samples start over. */
  setLatency(sel) {
    if (sameField(sel, this.latency)) return
    this.latency = sel
    for (const b of this.buckets.values()) {
      b.samples = []
      b.seen = 0
      b.sortedSeen = -1
      b.pcts = null
      b.hist = null
    }
  }

  /**
   * total: timeseries points without a metric; perMetric: {metric: points};
   * latency: {metric, field, points}; cutoffSeq: the newest seq delivered live by the time the
   * history arrived (null: none yet).
   */
  loadHistory({ total = [], perMetric = {}, latency = null, cutoffSeq = null }) {
    const place = (p) => {
      const t = Date.parse(p?.t)
      return Number.isFinite(t) ? this.bucket(this.keyOf(t)) : null
    }
    for (const p of total ?? []) {
      const b = place(p)
      if (!b) continue
      b.count = num(p.count)
      b.errors = num(p.errors)
    }
    for (const [metric, points] of Object.entries(perMetric ?? {})) {
      for (const p of points ?? []) {
        const b = place(p)
        if (b && num(p.count) > 0) b.metrics.set(metric, num(p.count))
      }
    }
    if (latency && sameField(latency, this.latency)) {
      for (const p of latency.points ?? []) {
        const b = place(p)
        if (b && [p.p50, p.p95, p.p99].some((v) => numOrNull(v) !== null)) {
          b.hist = { p50: numOrNull(p.p50), p95: numOrNull(p.p95), p99: numOrNull(p.p99) }
        }
      }
    }
    this.cutoffSeq = cutoffSeq ?? -Infinity
    this.finishLoading()
  }

  /** History could not be loaded: plot live data only. */
  giveUp() {
    this.finishLoading()
  }

  finishLoading() {
    this.ready = true
    const pending = this.pending
    this.pending = []
    this.ingest(pending)
  }

  ingest(events) {
    if (!this.ready) {
      for (const ev of events) if (this.pending.length < MAX_PENDING) this.pending.push(ev)
      return
    }
    const lat = this.latency
    for (const ev of events) {
      if (ev.seq <= this.cutoffSeq) continue
      const t = Date.parse(ev.ts)
      if (!Number.isFinite(t)) continue
      const b = this.bucket(this.keyOf(t))
      b.count += 1
      if (ev.status === 'error') b.errors += 1
      const m = b.metrics
      if (m.has(ev.metric)) m.set(ev.metric, m.get(ev.metric) + 1)
      else if (m.size < MAX_METRICS_PER_BUCKET) m.set(ev.metric, 1)
      if (lat && ev.metric === lat.metric) {
        // A bare number is the field `value`; in an object, number fields are series.
        const v = typeof ev.value === 'number' ? (lat.field === 'value' ? ev.value : null) : ev.value?.[lat.field]
        if (typeof v === 'number' && Number.isFinite(v)) {
          b.seen += 1
          if (b.samples.length < RESERVOIR) b.samples.push(v)
          else {
            const j = Math.floor(this.random() * b.seen)
            if (j < RESERVOIR) b.samples[j] = v
          }
        }
      }
    }
  }

  latencyOf(b) {
    if (b.hist) return b.hist
    if (!b.samples.length) return null
    if (b.sortedSeen !== b.seen) {
      const sorted = [...b.samples].sort((x, y) => x - y)
      b.pcts = { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), p99: percentile(sorted, 0.99) }
      b.sortedSeen = b.seen
    }
    return b.pcts
  }

  /** Plot-ready series for the window ending at `now` (unix ms points {x, y}). */
  snapshot(now = Date.now()) {
    const step = this.stepMs
    const newest = this.keyOf(now)
    const oldest = newest - (Math.round(this.windowMs / step) - 1) * step
    for (const key of this.buckets.keys()) if (key < oldest) this.buckets.delete(key)
    if (this.firstKey !== null && this.firstKey < oldest) this.firstKey = oldest

    // Busiest metrics in view get a line; labels are sorted so datasets keep their identity.
    const totals = new Map()
    for (const b of this.buckets.values()) for (const [m, c] of b.metrics) totals.set(m, (totals.get(m) ?? 0) + c)
    const metrics = [...totals.entries()]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, this.maxMetrics)
      .map(([m]) => m)
      .sort()

    const throughput = Object.fromEntries(metrics.map((m) => [m, []]))
    const errors = []
    const latency = { p50: [], p95: [], p99: [] }
    if (this.firstKey !== null) {
      for (let key = Math.max(oldest, this.firstKey); key <= newest; key += step) {
        const elapsed = Math.min(step, now - key)
        if (elapsed < Math.min(step, 1000)) continue // a bucket that just began would read as a dip
        const b = this.buckets.get(key)
        const seconds = elapsed / 1000
        for (const m of metrics) throughput[m].push({ x: key, y: (b?.metrics.get(m) ?? 0) / seconds })
        errors.push({ x: key, y: b && b.count ? (b.errors / b.count) * 100 : null })
        const l = b ? this.latencyOf(b) : null
        latency.p50.push({ x: key, y: l?.p50 ?? null })
        latency.p95.push({ x: key, y: l?.p95 ?? null })
        latency.p99.push({ x: key, y: l?.p99 ?? null })
      }
    }
    return {
      from: now - this.windowMs,
      to: now,
      stepMs: step,
      windowSec: this.windowSec,
      metrics,
      throughput,
      errors,
      latency,
      latencyField: this.latency,
      ready: this.ready,
    }
  }
}
