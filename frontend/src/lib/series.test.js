import { describe, expect, it } from 'vitest'
import { SeriesStore, percentile, stepFor } from './series.js'
import { BASE_TIME, ev } from '../test/fakes.js'

const iso = (ms) => new Date(ms).toISOString()
const LAT = { metric: 'http_request', field: 'ms' }

describe('stepFor', () => {
  it('gives ~60 points per window, whole seconds dividing the window', () => {
    expect([10, 60, 300, 900, 3600].map(stepFor)).toEqual([1, 1, 5, 15, 60])
    expect(stepFor(7)).toBe(1)
    expect(100 % stepFor(100)).toBe(0)
  })
})

describe('percentile', () => {
  it('interpolates between ranks', () => {
    expect(percentile([1, 2, 3, 4, 5], 0.5)).toBe(3)
    expect(percentile([0, 10], 0.95)).toBeCloseTo(9.5)
    expect(percentile([], 0.5)).toBeNull()
  })
})

describe('SeriesStore', () => {
  it('buckets live events on the step grid as events per second', () => {
    const store = new SeriesStore({ windowSec: 300, latency: LAT, lagMs: 0 }) // 5 s buckets
    store.giveUp()
    store.ingest([
      ev(1, { at: 0 }),
      ev(2, { at: 1000 }),
      ev(3, { at: 4999, metric: 'orders', value: { amount: 1 } }),
      ev(4, { at: 5000, status: 'error' }),
    ])
    const snap = store.snapshot(BASE_TIME + 10_000)
    expect(snap.stepMs).toBe(5000)
    expect(snap.metrics).toEqual(['http_request', 'orders'])
    const at = (points, ms) => points.find((p) => p.x === BASE_TIME + ms)?.y
    expect(at(snap.throughput.http_request, 0)).toBeCloseTo(2 / 5)
    expect(at(snap.throughput.orders, 0)).toBeCloseTo(1 / 5)
    expect(at(snap.throughput.http_request, 5000)).toBeCloseTo(1 / 5)
    expect(at(snap.errors, 0)).toBe(0)
    expect(at(snap.errors, 5000)).toBe(100)
    expect(at(snap.latency.p50, 0)).toBeCloseTo(percentile([11, 12], 0.5))
  })

  it('never plots more than one window of buckets and forgets older ones', () => {
    const store = new SeriesStore({ windowSec: 60 })
    store.giveUp()
    for (let s = 0; s < 200; s++) store.ingest([ev(s + 1, { at: s * 1000 })])
    const snap = store.snapshot(BASE_TIME + 200_000)
    expect(snap.throughput.http_request.length).toBeLessThanOrEqual(60)
    expect(store.buckets.size).toBeLessThanOrEqual(60)
    expect(Math.min(...snap.throughput.http_request.map((p) => p.x))).toBeGreaterThan(BASE_TIME + 200_000 - 61_000)
  })

  it('plots a bucket only once it has settled, instead of showing a false dip', () => {
    const store = new SeriesStore({ windowSec: 60, lagMs: 300 })
    store.giveUp()
    store.ingest([ev(1, { at: 0 }), ev(2, { at: 1200 })])
    const xs = (now) => store.snapshot(BASE_TIME + now).throughput.http_request.map((p) => p.x)
    expect(xs(1200)).toEqual([]) // the first second ended, but its last events may be in flight
    expect(xs(1300)).toEqual([BASE_TIME])
    expect(xs(2299)).toEqual([BASE_TIME])
    expect(xs(2300)).toEqual([BASE_TIME, BASE_TIME + 1000])
  })

  it('rates a long bucket in progress over the time it has covered so far', () => {
    const store = new SeriesStore({ windowSec: 300, lagMs: 0 }) // 5 s buckets
    store.giveUp()
    store.ingest([ev(1, { at: 100 }), ev(2, { at: 1500 })])
    expect(store.snapshot(BASE_TIME + 2000).throughput.http_request[0].y).toBe(1) // 2 events / 2 s
    expect(store.snapshot(BASE_TIME + 500).throughput.http_request).toEqual([]) // < 1 s: too early
  })

  it('merges history and live counts per bucket without counting an event twice', () => {
    const store = new SeriesStore({ windowSec: 60, latency: LAT })
    // Live events arrive before the history does; some of them the history counts too.
    store.ingest([ev(1, { at: 100 }), ev(2, { at: 200 }), ev(3, { at: 1100 })])
    expect(store.ready).toBe(false)
    store.loadHistory({
      total: [
        { t: iso(BASE_TIME), count: 5, errors: 1 }, // more than we saw live: subscribed late
        { t: iso(BASE_TIME + 1000), count: 0, errors: 0 }, // computed before seq 3 was aggregated
      ],
      perMetric: { http_request: [{ t: iso(BASE_TIME), count: 5 }] },
      latency: { ...LAT, points: [{ t: iso(BASE_TIME), count: 5, p50: 5, p95: 9, p99: 12 }] },
    })
    expect(store.ready).toBe(true)
    store.ingest([ev(4, { at: 1500 })])
    const snap = store.snapshot(BASE_TIME + 3000)
    const y = (points, ms) => points.find((p) => p.x === BASE_TIME + ms).y
    expect(y(snap.throughput.http_request, 0)).toBe(5) // max(5 history, 2 live), not 7
    expect(y(snap.throughput.http_request, 1000)).toBe(2) // max(0 history, 2 live)
    expect(y(snap.errors, 0)).toBeCloseTo(20)
    expect(y(snap.latency.p95, 0)).toBe(9) // the server saw more: its percentile wins
    expect(y(snap.latency.p50, 1000)).toBeCloseTo(percentile([10 + (3 % 7), 10 + (4 % 7)], 0.5))
  })

  it('lets a later history refresh fill in what neither source saw whole', () => {
    const store = new SeriesStore({ windowSec: 60 })
    store.loadHistory({ total: [{ t: iso(BASE_TIME), count: 3, errors: 0 }], perMetric: { http_request: [{ t: iso(BASE_TIME), count: 3 }] } })
    store.ingest([ev(10, { at: 900 })])
    const y = () => store.snapshot(BASE_TIME + 2000).throughput.http_request[0].y
    expect(y()).toBe(3)
    store.loadHistory({ total: [{ t: iso(BASE_TIME), count: 8, errors: 0 }], perMetric: { http_request: [{ t: iso(BASE_TIME), count: 8 }] } })
    expect(y()).toBe(8)
  })

  it('samples latency from plain numbers when the field is `value`', () => {
    const store = new SeriesStore({ windowSec: 60, latency: { metric: 'rt', field: 'value' } })
    store.giveUp()
    store.ingest([ev(1, { metric: 'rt', value: 40 }), ev(2, { metric: 'rt', value: 60 })])
    expect(store.snapshot(BASE_TIME + 2000).latency.p50[0].y).toBe(50)
  })

  it('caps the number of metric lines, keeping the busiest, labels sorted', () => {
    const store = new SeriesStore({ windowSec: 60, maxMetrics: 2 })
    store.giveUp()
    const events = []
    let seq = 0
    for (const [metric, n] of [['zeta', 5], ['alpha', 3], ['mid', 1]]) for (let i = 0; i < n; i++) events.push(ev(++seq, { metric }))
    store.ingest(events)
    expect(store.snapshot(BASE_TIME + 2000).metrics).toEqual(['alpha', 'zeta'])
  })
})
