import { sameField } from './latency.js'

// Chart data for one window: ~60 buckets of `step` seconds on a fixed time grid.
//
// History comes from /api/metrics/timeseries (one request per series); live batches are bucketed
// here on the same grid (the server aligns buckets to multiples of the step, as we do), so the
// live edge of a chart means exactly what the history means: events per bucket.
//
// Each bucket keeps the two sources apart and plots the larger of them. Both are lower bounds of
// the truth: the history misses what was aggregated after it was computed, the live count misses
// what came before the subscription. Taking the max never counts an event twice and needs no
// agreement between client and server clocks; a history refresh (after a reconnect, or once a
// step after loading) settles the buckets that neither source saw whole.

export const POINTS_PER_VIEW = 60
export const MAX_CHART_METRICS = 10
const RESERVOIR = 256 // live latency samples kept per bucket (uniform reservoir sample)
const MAX_METRICS_PER_BUCKET = 64 // metric names are untrusted: bound the per-bucket map
// A bucket is plotted as complete this long after it ends: its last events are still in flight
// (server flush interval, network) when it closes, and plotting it early shows a false dip.
export const SETTLE_LAG_MS = 300

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
  return {
    hist: null, // {count, errors, metrics: Map, lat: {p50, p95, p99, n} | null}
    count: 0, // live from here on
    errors: 0,
    metrics: new Map(),
    samples: [],
    seen: 0,
    sortedSeen: -1,
    pcts: null,
  }
}

export class SeriesStore {
  constructor({ windowSec, latency = null, maxMetrics = MAX_CHART_METRICS, lagMs = SETTLE_LAG_MS, random = Math.random }) {
    this.lagMs = lagMs
    this.windowSec = windowSec
    this.windowMs = windowSec * 1000
    this.stepMs = stepFor(windowSec) * 1000
    this.latency = latency
    this.maxMetrics = maxMetrics
    this.random = random
    this.buckets = new Map()
    this.firstKey = null
    this.ready = false // history loaded, or given up on
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

  /** Changes the latency field (e.g. http_request appears after load); its data starts over. */
  setLatency(sel) {
    if (sameField(sel, this.latency)) return
    this.latency = sel
    for (const b of this.buckets.values()) {
      b.samples = []
      b.seen = 0
      b.sortedSeen = -1
      b.pcts = null
      if (b.hist) b.hist.lat = null
    }
  }

  /**
   * Replaces the history part of every bucket it covers. total: timeseries points without a
   * metric; perMetric: {metric: points}; latency: {metric, field, points}.
   */
  loadHistory({ total = [], perMetric = {}, latency = null }) {
    const hist = new Map()
    const at = (p) => {
      const t = Date.parse(p?.t)
      if (!Number.isFinite(t)) return null
      const key = this.keyOf(t)
      if (!hist.has(key)) hist.set(key, { count: 0, errors: 0, metrics: new Map(), lat: null })
      return hist.get(key)
    }
    for (const p of total ?? []) {
      const h = at(p)
      if (!h) continue
      h.count = num(p.count)
      h.errors = num(p.errors)
    }
    for (const [metric, points] of Object.entries(perMetric ?? {})) {
      for (const p of points ?? []) {
        const h = at(p)
        if (h && num(p.count) > 0) h.metrics.set(metric, num(p.count))
      }
    }
    if (latency && sameField(latency, this.latency)) {
      for (const p of latency.points ?? []) {
        const h = at(p)
        if (h && [p.p50, p.p95, p.p99].some((v) => numOrNull(v) !== null)) {
          h.lat = { p50: numOrNull(p.p50), p95: numOrNull(p.p95), p99: numOrNull(p.p99), n: num(p.count) }
        }
      }
    }
    for (const [key, h] of hist) this.bucket(key).hist = h
    this.ready = true
  }

  /** History could not be loaded: plot live data only. */
  giveUp() {
    this.ready = true
  }

  ingest(events) {
    const lat = this.latency
    for (const ev of events) {
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
    const h = b.hist?.lat
    if (h && h.n >= b.seen) return h // the server saw at least as much: its percentiles are better
    if (!b.samples.length) return h ?? null
    if (b.sortedSeen !== b.seen) {
      const sorted = [...b.samples].sort((x, y) => x - y)
      b.pcts = { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), p99: percentile(sorted, 0.99) }
      b.sortedSeen = b.seen
    }
    return b.pcts
  }

  /**
   * Plot-ready series for the window ending at `now` (unix ms points {x, y}), where `now` is on the
   * server's clock (the events' timestamps), not necessarily the browser's.
   */
  snapshot(now = Date.now()) {
    const step = this.stepMs
    const newest = this.keyOf(now)
    const oldest = newest - (Math.round(this.windowMs / step) - 1) * step
    for (const key of this.buckets.keys()) if (key < oldest) this.buckets.delete(key)
    if (this.firstKey !== null && this.firstKey < oldest) this.firstKey = oldest

    const countOf = (b, m) => Math.max(b.hist?.metrics.get(m) ?? 0, b.metrics.get(m) ?? 0)
    // Busiest metrics in view get a line; labels are sorted so datasets keep their identity.
    const names = new Set()
    for (const b of this.buckets.values()) {
      for (const m of b.metrics.keys()) names.add(m)
      if (b.hist) for (const m of b.hist.metrics.keys()) names.add(m)
    }
    const totals = [...names].map((m) => {
      let sum = 0
      for (const b of this.buckets.values()) sum += countOf(b, m)
      return [m, sum]
    })
    const metrics = totals
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, this.maxMetrics)
      .map(([m]) => m)
      .sort()

    const throughput = Object.fromEntries(metrics.map((m) => [m, []]))
    const errors = []
    const latency = { p50: [], p95: [], p99: [] }
    if (this.firstKey !== null) {
      for (let key = Math.max(oldest, this.firstKey); key <= newest; key += step) {
        const elapsed = Math.min(step, now - this.lagMs - key)
        if (elapsed < Math.min(step, 1000)) continue // a bucket that just began would read as a dip
        const b = this.buckets.get(key)
        const seconds = elapsed / 1000
        for (const m of metrics) throughput[m].push({ x: key, y: (b ? countOf(b, m) : 0) / seconds })
        const count = b ? Math.max(b.hist?.count ?? 0, b.count) : 0
        const errs = b ? Math.max(b.hist?.errors ?? 0, b.errors) : 0
        errors.push({ x: key, y: count ? Math.min(100, (errs / count) * 100) : null })
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
