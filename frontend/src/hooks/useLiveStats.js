import { useEffect, useRef, useState } from 'react'
import { RateMeter } from '../lib/rate.js'

/** The lower median: of two samples, the smaller (old backfilled timestamps make large ones). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)]
}

/**
 * Whether the numbers on screen may be old, and since when: the server said Redis or its worker
 * is down, the socket is not connected, or the last aggregate is older than its window.
 * Returns null when they are current, else {reason, since (ms)}.
 */
export function staleness({ status, serverStatus, aggregateAt, windowSec, now }) {
  if (aggregateAt == null) return null
  const down = serverStatus && (serverStatus.redis === 'down' || serverStatus.worker === 'down')
  if (down) {
    const what = serverStatus.redis === 'down' ? 'Redis down' : 'worker down'
    const since = Date.parse(serverStatus.since ?? '')
    return { reason: what, since: Number.isFinite(since) ? Math.min(since, now) : aggregateAt, asOf: aggregateAt }
  }
  if (status !== 'connected') return { reason: 'not connected', since: aggregateAt, asOf: aggregateAt }
  if (now - aggregateAt > windowSec * 1000) return { reason: 'no update', since: aggregateAt, asOf: aggregateAt }
  return null
}

const sameStale = (a, b) => (a === null || b === null ? a === b : a.reason === b.reason && a.since === b.since)

const viewOf = (s) => ({
  ratePerSec: s.rate,
  aggregate: s.aggregate,
  aggregateAt: s.aggregateAt,
  generator: s.generator,
  serverStatus: s.serverStatus,
  stale: s.stale,
})

/**
 * The live numbers: "events/s now", the server's aggregate ticks for the current window, its
 * status (Redis / worker up or down) and generator pushes, and whether all that may be stale.
 *
 * It also estimates how far the browser's clock is ahead of the events' timestamps (skew plus
 * delivery delay): `clockOffset()`. The rate meter and the charts measure "now" as
 * Date.now() - clockOffset, so their right edge is where the data is.
 *
 * `commit(now, status)` publishes what changed; `status` is the connection's, which staleness
 * depends on.
 */
export function useLiveStats({ windowSec }) {
  const [initial] = useState(() => ({
    meter: new RateMeter(),
    offsets: [],
    clockOffset: 0,
    rate: null,
    aggregate: null,
    aggregateAt: null, // when the shown aggregate arrived (ms)
    generator: null,
    serverStatus: null, // the server's `status` push: {redis, worker, since}
    stale: null,
    windowSec,
    changed: false,
  }))
  const liveRef = useRef(initial) // written by socket handlers, outside render
  const [view, setView] = useState(() => viewOf(initial))

  // A new window: never show the old window's numbers under the new label.
  useEffect(() => {
    const s = liveRef.current
    if (s.windowSec === windowSec) return
    s.windowSec = windowSec
    s.aggregate = null
    s.changed = true
  }, [windowSec])

  const [actions] = useState(() => {
    const live = () => liveRef.current
    const changed = () => {
      live().changed = true
    }
    return {
      /** New events (already deduplicated) that arrived at `arrival` (ms, browser clock). */
      observe(events, arrival) {
        const s = live()
        // Timestamps are producer-supplied (a backfilling producer may send old ones): medians
        // keep a few odd events from moving the estimate.
        const stride = Math.max(1, Math.floor(events.length / 16))
        const deltas = []
        for (let i = 0; i < events.length; i += stride) {
          const t = Date.parse(events[i].ts)
          if (Number.isFinite(t)) deltas.push(arrival - t)
        }
        if (deltas.length) {
          s.offsets.push(median(deltas))
          if (s.offsets.length > 25) s.offsets.shift()
          s.clockOffset = median(s.offsets)
        }
        s.meter.add(events, arrival - s.clockOffset)
      },
      clockOffset: () => live().clockOffset,
      /** The connection dropped: don't average the outage into "now". */
      pauseRate: () => live().meter.reset(),

      /** An `aggregate` push; false (ignored) when it was computed for another window. */
      takeAggregate(body) {
        const s = live()
        if (!body || typeof body !== 'object') return false
        // A tick computed for the previous window can still be in flight after a change.
        if (body.window_seconds != null && Number(body.window_seconds) !== s.windowSec) return false
        s.aggregate = body
        s.aggregateAt = Date.now()
        changed()
        return true
      },
      /** The aggregate shown so far, if any (chart history picks its latency field from it). */
      currentAggregate: () => live().aggregate,
      /** One loaded over REST, shown until the first push; dated too, so an outage greys it. */
      seedAggregate(body) {
        const s = live()
        if (s.aggregate) return
        s.aggregate = body
        s.aggregateAt = Date.now()
        changed()
      },

      setServerStatus(body) {
        if (!body || typeof body !== 'object') return
        const updown = (v) => (v === 'down' ? 'down' : 'up')
        live().serverStatus = { redis: updown(body.redis), worker: updown(body.worker), since: String(body.since ?? '') }
        changed()
      },
      setGenerator(body) {
        if (!body || typeof body !== 'object') return
        live().generator = body
        changed()
      },

      commit(now, status) {
        const s = live()
        const rate = s.meter.rate(now - s.clockOffset) // null until there is enough to measure
        const stale = staleness({ status, serverStatus: s.serverStatus, aggregateAt: s.aggregateAt, windowSec: s.windowSec, now })
        if (!sameStale(stale, s.stale)) {
          s.stale = stale
          s.changed = true
        }
        if (!s.changed && rate === s.rate) return
        s.rate = rate
        s.changed = false
        setView(viewOf(s))
      },
    }
  })
  return { ...view, ...actions }
}
