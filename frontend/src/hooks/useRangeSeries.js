import { useMemo } from 'react'
import { usePoll } from './usePoll.js'
import { pickLatencyField } from '../lib/latency.js'
import { MAX_CHART_METRICS, SeriesStore, stepFor } from '../lib/series.js'

export const TAG_REFRESH_MS = 5000 // a live window filtered by tag: reloaded from the server
export const RANGE_REFRESH_MS = 60000 // an absolute range: settled data, reloaded rarely

const iso = (ms) => new Date(ms).toISOString()
const points = (body) => (Array.isArray(body?.points) ? body.points : [])

/**
 * Chart data from the server alone, for views the live stream cannot serve: an absolute range
 * (drag-to-zoom, the from/to picker, a link) or a tag filter (one endpoint's slice). Returns a
 * SeriesStore snapshot like usePulse's, or null when neither applies (the live charts then keep
 * their per-event path, unchanged). Nothing here runs per event.
 */
export function useRangeSeries(api, { range, tag, windowSec, latency }) {
  const active = range != null || tag != null
  const key = active
    ? JSON.stringify({ from: range?.from ?? null, to: range?.to ?? null, tag, windowSec, m: latency?.metric, f: latency?.field })
    : null
  const { data, error } = usePoll(
    async (signal) => {
      const to = range ? range.to : Date.now()
      const from = range ? range.from : to - windowSec * 1000
      const win = Math.max(1, Math.round((to - from) / 1000))
      const step = stepFor(win)
      const where = range ? { from: iso(from), to: iso(to) } : { window: win }
      const opts = { signal }
      let perMetric = {}
      let lat
      const total = api.timeseries({ ...where, step, tag }, opts)
      let latPoints
      if (tag) {
        // One endpoint's latency: the field across every metric carrying that tag value.
        lat = { metric: tag, field: latency?.field ?? 'ms' }
        latPoints = api.timeseries({ ...where, step, field: lat.field, tag }, opts)
        perMetric = { [tag]: points(await total) } // one line: the tag value's events
      } else {
        const agg = await api.aggregate(where, opts)
        lat = pickLatencyField(agg?.metrics) ?? latency // the range's own latency field
        latPoints = lat ? api.timeseries({ ...where, step, metric: lat.metric, field: lat.field }, opts) : null
        const names = Object.entries(agg?.metrics ?? {})
          .sort((a, b) => (b[1]?.count ?? 0) - (a[1]?.count ?? 0))
          .slice(0, MAX_CHART_METRICS)
          .map(([m]) => m)
        const lists = await Promise.all(names.map((metric) => api.timeseries({ ...where, step, metric }, opts)))
        names.forEach((m, i) => {
          perMetric[m] = points(lists[i])
        })
      }
      const store = new SeriesStore({ windowSec: win, latency: lat, lagMs: 0 })
      store.loadHistory({
        total: points(await total),
        perMetric,
        latency: lat ? { ...lat, points: points(await latPoints) } : null,
      })
      return store.snapshot(to)
    },
    range ? RANGE_REFRESH_MS : TAG_REFRESH_MS,
    key,
  )
  return useMemo(() => (active ? { series: data, error } : null), [active, data, error])
}

/** The stat cards' numbers for an absolute range (null otherwise). */
export function useRangeAggregate(api, range) {
  const key = range ? `${range.from}-${range.to}` : null
  const { data } = usePoll(
    (signal) => api.aggregate({ from: iso(range.from), to: iso(range.to) }, { signal }),
    RANGE_REFRESH_MS,
    key,
  )
  return range ? data : null
}
