import { useEffect, useRef, useState } from 'react'
import { pickLatencyField } from '../lib/latency.js'
import { MAX_CHART_METRICS, SeriesStore, stepFor } from '../lib/series.js'
import { useLatest } from './useLatest.js'

export const SERIES_MS = 500 // charts: buckets are >= 1 s, so 2 redraws a second show everything
export const HISTORY_SETTLE_MS = 2000 // after a bucket closes, time for the server to aggregate it

/** The busiest metrics of an aggregate: the ones that get a chart line. */
function topMetrics(agg) {
  const metrics = agg?.metrics && typeof agg.metrics === 'object' ? agg.metrics : {}
  const counts = Object.entries(metrics).map(([m, v]) => [m, Number(v?.count) || 0])
  if (!counts.length && agg?.aggregate && typeof agg.aggregate === 'object') {
    for (const [m, c] of Object.entries(agg.aggregate)) counts.push([m, Number(c) || 0])
  }
  return counts
    .sort((a, b) => b[1] - a[1])
    .slice(0, MAX_CHART_METRICS)
    .map(([m]) => m)
}

const points = (r) => (r.status === 'fulfilled' && Array.isArray(r.value?.points) ? r.value.points : null)

/**
 * The live charts' buckets for the current window: history loaded over REST (on mount, on a
 * window change, after a reconnect, and once more a step later to settle the bucket that was in
 * progress), then kept live by `ingest` with every new event.
 *
 * `aggregates` links it to the live numbers: the shown aggregate picks the latency line, and
 * the one fetched here is shown until the first push (`seedAggregate`).
 *
 * `commit(now)` publishes a snapshot at most every SERIES_MS while data changes, and at least
 * every second so the time axis slides.
 */
export function useSeriesHistory({ api, windowSec, aggregates }) {
  const [initial] = useState(() => ({
    windowSec,
    store: null,
    snap: null, // what the charts show
    token: 0, // the newest load: an older one answering late is ignored
    refreshTimer: null,
    snapAt: 0,
    published: null, // the snapshot last handed to React
    changed: true,
    disposed: false,
  }))
  const historyRef = useRef(initial) // written by socket handlers and fetches, outside render
  const apiRef = useLatest(api)
  const aggregatesRef = useLatest(aggregates)
  const [series, setSeries] = useState(null)

  const [actions] = useState(() => {
    const h = () => historyRef.current

    /**
     * `fresh`: a new store (first load, window change); otherwise the history is reloaded into
     * the current one. `refreshLater` schedules one more reload a step later.
     */
    async function load({ fresh = false, refreshLater = true } = {}) {
      const s = h()
      const win = s.windowSec
      const token = ++s.token
      clearTimeout(s.refreshTimer)
      let store = s.store
      if (fresh || !store || store.windowSec !== win) {
        store = new SeriesStore({ windowSec: win, latency: pickLatencyField(aggregatesRef.current.currentAggregate()?.metrics) })
        s.store = store
      }
      const current = () => token === s.token && s.store === store
      const api = apiRef.current
      try {
        const agg = await api.aggregate({ window: win })
        if (!current()) return
        aggregatesRef.current.seedAggregate(agg)
        const lat = pickLatencyField(agg?.metrics)
        if (lat) store.setLatency(lat)
        const step = stepFor(win)
        const names = topMetrics(agg)
        if (lat && !names.includes(lat.metric)) names.push(lat.metric)
        const requests = [api.timeseries({ window: win, step })].concat(
          names.map((metric) =>
            api.timeseries({ window: win, step, metric, field: lat && lat.metric === metric ? lat.field : undefined }),
          ),
        )
        const results = await Promise.allSettled(requests)
        if (!current()) return
        if (!results.some(points)) store.giveUp()
        else {
          const perMetric = {}
          let latency = null
          names.forEach((metric, i) => {
            const p = points(results[i + 1])
            if (!p) return
            perMetric[metric] = p
            if (lat && lat.metric === metric) latency = { ...lat, points: p }
          })
          store.loadHistory({ total: points(results[0]) ?? [], perMetric, latency })
        }
      } catch {
        if (!current()) return
        store.giveUp() // keeps whatever history it already had
      }
      s.snapAt = 0 // show it with the next commit
      s.changed = true
      if (refreshLater && !s.disposed) {
        s.refreshTimer = setTimeout(() => load({ refreshLater: false }), store.stepMs + HISTORY_SETTLE_MS)
      }
    }

    return {
      /** After a reconnect: the buckets missed while away come from the server. */
      load,
      reload: () => load(),
      /** New events (already deduplicated) go into the buckets. */
      ingest(events) {
        h().store?.ingest(events)
        h().changed = true
      },
      /** The latency line follows the field the live aggregate says carries latency. */
      setLatency(lat) {
        if (!lat || !h().store) return
        h().store.setLatency(lat)
        h().changed = true
      },
      /** `clockOffset`: how far the browser's clock is ahead of the events' (see useLiveStats). */
      commit(now, clockOffset = 0) {
        const s = h()
        const due = s.store && now - s.snapAt >= (s.changed ? SERIES_MS : 1000)
        if (due) {
          s.snap = s.store.snapshot(now - clockOffset)
          s.snapAt = now
          s.changed = false
        }
        if (s.snap === s.published) return
        s.published = s.snap
        setSeries(s.snap)
      },
    }
  })

  useEffect(() => {
    const s = historyRef.current
    s.disposed = false
    return () => {
      s.disposed = true
      clearTimeout(s.refreshTimer) // nothing left scheduled after unmount
    }
  }, [])

  // The first render and window changes: a new store, with that window's history.
  useEffect(() => {
    const s = historyRef.current
    if (s.windowSec !== windowSec) {
      s.windowSec = windowSec
      s.snap = null // never chart the old window on the new scale
    }
    s.changed = true
    actions.load({ fresh: true })
  }, [windowSec, actions])

  const { reload, ingest, setLatency, commit } = actions
  return { series, reload, ingest, setLatency, commit }
}
