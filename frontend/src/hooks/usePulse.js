import { useCallback, useEffect, useRef, useState } from 'react'
import { io as socketIo } from 'socket.io-client'
import { ALERTS_LIMIT, AlertBook } from '../lib/alerts.js'
import { defaultApi } from '../lib/api.js'
import { EventBuffer, normalizeEvents } from '../lib/events.js'
import { RateMeter } from '../lib/rate.js'
import { pickLatencyField } from '../lib/latency.js'
import { MAX_CHART_METRICS, SeriesStore, stepFor } from '../lib/series.js'

// The one owner of the Socket.IO connection.
//
// At 20k events/s a batch lands every ~50 ms. Handlers only write into refs (ring buffer, chart
// buckets, counters); an interval commits one React state snapshot at most every FLUSH_MS, so
// rendering cost is bounded by the flush rate, not the event rate.
//
// Alerts (`alert` events, and /api/alerts on every connect) ride the same flush, but `alerts` is a
// new object only when an alert changed, so the alert feed doesn't re-render with every batch.

export const FLUSH_MS = 100 // <= 10 commits per second
export const SERIES_MS = 500 // charts: buckets are >= 1 s, so 2 redraws a second show everything
export const LOG_MS = 250 // the log: 4 updates a second look live; more is unreadable and costly
export const LOG_BUFFER = 1000 // events kept for the log (its filters search these; 200 are shown)
export const INITIAL_FILL = 200
export const BACKFILL_LIMIT = 500 // the server keeps the newest 500 (RECENT_MAX)
export const HISTORY_SETTLE_MS = 2000 // after a bucket closes, time for the server to aggregate it
export const SOCKET_OPTIONS = Object.freeze({ path: '/socket.io', transports: ['websocket'], forceNew: true })

/** Default factory: same origin, websocket only, socket.io-client's built-in reconnect backoff. */
export const connectSocket = (options) => socketIo(options)

/** The lower median: of two samples, the smaller (old backfilled timestamps make large ones). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)]
}

const isOnline = () => (typeof navigator === 'undefined' ? true : navigator.onLine !== false)

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

function snapshotOf(s) {
  return {
    status: s.status,
    attempt: s.attempt,
    events: s.events,
    eventsReceived: s.eventsReceived,
    received: s.received,
    lastSeq: s.buffer.maxSeq,
    ratePerSec: s.rate,
    aggregate: s.aggregate,
    series: s.seriesSnap,
    gap: s.gap,
    backfillError: s.backfillError,
    generator: s.generator,
    windowSec: s.windowSec,
    alerts: s.alerts,
    serverStatus: s.serverStatus,
    aggregateAt: s.aggregateAt,
    stale: s.stale,
  }
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

export function usePulse({
  windowSec,
  io = connectSocket,
  api = defaultApi,
  flushMs = FLUSH_MS,
  bufferSize = LOG_BUFFER,
} = {}) {
  // The mutable state the socket handlers write: created once, then only touched outside render.
  const [initial] = useState(() => ({
      socket: null,
      buffer: new EventBuffer(bufferSize),
      events: [], // what the log shows: buffer.items as of the last log commit (every LOG_MS)
      eventsReceived: 0, // `received` as of that commit
      eventsAt: -Infinity,
      received: 0,
      meter: new RateMeter(), // "events/s now"
      // How far the browser's clock is ahead of the events' timestamps (skew + delivery delay).
      // The charts' "now" is Date.now() - clockOffset, so their right edge is where data is.
      clockOffset: 0,
      offsets: [],
      rate: null,
      aggregate: null,
      status: isOnline() ? 'connecting' : 'offline',
      attempt: 0,
      online: isOnline(),
      everConnected: false,
      gap: null,
      backfillError: null,
      generator: null,
      windowSec,
      series: null, // chart buckets for the current window
      seriesSnap: null,
      seriesToken: 0,
      refreshTimer: null,
      seriesAt: 0,
      dirty: true,
      alertBook: new AlertBook(ALERTS_LIMIT),
      alerts: { items: [], loaded: false, error: null }, // what the feed shows
      alertsError: null,
      alertsLoaded: false,
      alertsDirty: false,
      alertsToken: 0,
      serverStatus: null, // the server's `status` push: {redis, worker, since}
      aggregateAt: null, // when the last aggregate arrived (ms)
      stale: null, // staleness(), recomputed by the flush
  }))
  const ref = useRef(initial)
  const apiRef = useRef(api)
  useEffect(() => {
    apiRef.current = api
  })
  const [snap, setSnap] = useState(() => snapshotOf(initial))

  /**
   * Loads chart history. `fresh`: a new store (first load, window change); otherwise the history
   * is reloaded into the current store (after a reconnect, or the scheduled refresh). `refreshLater`
   * schedules one more reload a step later, which settles the bucket that was in progress.
   */
  const loadSeries = useCallback(async function load({ fresh = false, refreshLater = true } = {}) {
    const s = ref.current
    const win = s.windowSec
    const token = ++s.seriesToken
    clearTimeout(s.refreshTimer)
    let store = s.series
    if (fresh || !store || store.windowSec !== win) {
      store = new SeriesStore({ windowSec: win, latency: pickLatencyField(s.aggregate?.metrics) })
      s.series = store
    }
    const current = () => token === s.seriesToken && s.series === store
    const api = apiRef.current
    try {
      const agg = await api.aggregate({ window: win })
      if (!current()) return
      if (!s.aggregate) {
        s.aggregate = agg
        s.aggregateAt = Date.now() // numbers shown are dated from here: an outage greys them too
      }
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
      const points = (r) => (r.status === 'fulfilled' && Array.isArray(r.value?.points) ? r.value.points : null)
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
    s.seriesAt = 0
    s.dirty = true
    if (refreshLater && !s.disposed) {
      s.refreshTimer = setTimeout(() => load({ refreshLater: false }), store.stepMs + HISTORY_SETTLE_MS)
    }
  }, [])

  // The connection: created once, torn down on unmount.
  useEffect(() => {
    const s = ref.current
    s.disposed = false
    const socket = io({ ...SOCKET_OPTIONS })
    const manager = socket.io
    s.socket = socket
    const touch = () => {
      s.dirty = true
    }

    const subscribe = () => socket.emit('subscribe', { mode: 'batch', window: s.windowSec })

    async function recentAfter(after) {
      try {
        return await apiRef.current.recent({ limit: BACKFILL_LIMIT, after })
      } catch (err) {
        // A server configured with RECENT_MAX < 500 rejects the limit: take its default instead.
        if (err?.status === 400) return apiRef.current.recent({ limit: null, after })
        throw err
      }
    }

    async function backfill(after) {
      try {
        const body = await (after == null ? apiRef.current.recent({ limit: INITIAL_FILL }) : recentAfter(after))
        const events = normalizeEvents(body?.metrics)
        if (after != null && events.length) {
          const oldest = events.reduce((min, e) => (e.seq < min ? e.seq : min), Infinity)
          // The server only keeps the newest 500: anything between what we saw and the oldest
          // it still has is gone. Say so rather than silently showing a seamless log.
          if (oldest > after + 1) s.gap = { missed: (s.gap?.missed ?? 0) + (oldest - after - 1), at: Date.now() }
        }
        s.received += s.buffer.add(events).length
        if (after != null) s.backfillError = null
      } catch (err) {
        if (after != null) s.backfillError = `Could not load the events sent while disconnected (${err?.message ?? err}).`
      }
      touch()
    }

    // On every connect: alerts may have opened, closed or been acknowledged while we were away.
    async function loadAlerts() {
      const token = ++s.alertsToken
      s.alertBook.beginLoad()
      try {
        const body = await apiRef.current.alerts({ state: 'all', limit: ALERTS_LIMIT })
        if (token !== s.alertsToken || s.disposed) return
        s.alertBook.finishLoad(body?.alerts)
        s.alertsError = null
      } catch (err) {
        if (token !== s.alertsToken || s.disposed) return
        s.alertBook.cancelLoad()
        s.alertsError = `Could not load alerts (${err?.message ?? err}).`
      }
      s.alertsLoaded = true
      s.alertsDirty = true
      touch()
    }

    function onConnect() {
      const reconnect = s.everConnected
      s.everConnected = true
      s.online = true
      s.status = 'connected'
      s.attempt = 0
      subscribe() // on every connect: the server forgets subscriptions with the old connection
      backfill(reconnect ? s.buffer.maxSeq : null)
      loadAlerts()
      if (reconnect) loadSeries() // buckets missed while away come from the server
      touch()
    }

    function onDisconnect(reason) {
      s.meter.reset() // don't average the outage into "now"
      if (reason === 'io client disconnect') s.status = 'offline'
      else {
        s.status = s.online ? 'reconnecting' : 'offline'
        s.attempt = Math.max(1, s.attempt)
        // The server closed us deliberately; socket.io-client won't retry that on its own.
        if (reason === 'io server disconnect') socket.connect()
      }
      touch()
    }

    function onReconnectAttempt(attempt) {
      s.attempt = attempt
      if (s.online) s.status = 'reconnecting'
      touch()
    }

    function onReconnectFailed() {
      s.status = 'offline'
      touch()
    }

    // Timestamps are producer-supplied (a backfilling producer may send old ones): medians keep
    // a few odd events from moving the estimate.
    function observeClock(events, arrival) {
      const stride = Math.max(1, Math.floor(events.length / 16))
      const deltas = []
      for (let i = 0; i < events.length; i += stride) {
        const t = Date.parse(events[i].ts)
        if (Number.isFinite(t)) deltas.push(arrival - t)
      }
      if (!deltas.length) return
      s.offsets.push(median(deltas))
      if (s.offsets.length > 25) s.offsets.shift()
      s.clockOffset = median(s.offsets)
    }

    function onMetrics(payload) {
      const fresh = s.buffer.add(normalizeEvents(payload))
      if (!fresh.length) return
      s.received += fresh.length
      const now = Date.now()
      observeClock(fresh, now)
      s.meter.add(fresh, now - s.clockOffset)
      s.series?.ingest(fresh)
      touch()
    }

    function onAggregate(body) {
      if (!body || typeof body !== 'object') return
      // A tick computed for the previous window can still be in flight after a change.
      if (body.window_seconds != null && Number(body.window_seconds) !== s.windowSec) return
      s.aggregate = body
      s.aggregateAt = Date.now()
      const lat = pickLatencyField(body.metrics)
      if (lat) s.series?.setLatency(lat)
      touch()
    }

    function onAlert(body) {
      if (s.alertBook.upsert(body)) {
        s.alertsDirty = true
        touch()
      }
    }

    function onStatus(body) {
      if (!body || typeof body !== 'object') return
      const updown = (v) => (v === 'down' ? 'down' : 'up')
      s.serverStatus = { redis: updown(body.redis), worker: updown(body.worker), since: String(body.since ?? '') }
      touch()
    }

    function onGenerator(body) {
      if (body && typeof body === 'object') {
        s.generator = body
        touch()
      }
    }

    function onBrowserOffline() {
      s.online = false
      s.status = 'offline'
      touch()
    }

    function onBrowserOnline() {
      s.online = true
      if (socket.connected) s.status = 'connected'
      else {
        s.status = 'reconnecting'
        s.attempt = Math.max(1, s.attempt)
        socket.connect()
      }
      touch()
    }

    socket.on('connect', onConnect)
    socket.on('disconnect', onDisconnect)
    socket.on('metrics', onMetrics)
    socket.on('aggregate', onAggregate)
    socket.on('generator', onGenerator)
    socket.on('alert', onAlert)
    socket.on('status', onStatus)
    manager?.on('reconnect_attempt', onReconnectAttempt)
    manager?.on('reconnect_failed', onReconnectFailed)
    window.addEventListener('offline', onBrowserOffline)
    window.addEventListener('online', onBrowserOnline)
    if (socket.connected) onConnect()

    return () => {
      window.removeEventListener('offline', onBrowserOffline)
      window.removeEventListener('online', onBrowserOnline)
      socket.off('connect', onConnect)
      socket.off('disconnect', onDisconnect)
      socket.off('metrics', onMetrics)
      socket.off('aggregate', onAggregate)
      socket.off('generator', onGenerator)
      socket.off('alert', onAlert)
      socket.off('status', onStatus)
      manager?.off('reconnect_attempt', onReconnectAttempt)
      manager?.off('reconnect_failed', onReconnectFailed)
      socket.disconnect()
      s.disposed = true
      clearTimeout(s.refreshTimer)
      if (s.socket === socket) s.socket = null
    }
    // `io` is a factory read once: a new one would mean a second connection.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [])

  // Window changes (and the first render): resubscribe, refetch history for the new window.
  useEffect(() => {
    const s = ref.current
    if (s.windowSec !== windowSec) {
      s.windowSec = windowSec
      s.aggregate = null // never show the old window's numbers under the new label
      s.seriesSnap = null
      if (s.socket?.connected) s.socket.emit('subscribe', { mode: 'batch', window: windowSec })
    }
    s.dirty = true
    loadSeries({ fresh: true })
  }, [windowSec, loadSeries])

  // The throttle: one state commit per tick, and only if something changed.
  useEffect(() => {
    const id = setInterval(() => {
      const s = ref.current
      const now = Date.now()
      const rate = s.meter.rate(now - s.clockOffset) // null until there is enough to measure
      // Charts: at most every SERIES_MS, and at least every second so the time axis slides.
      const seriesDue = s.series && now - s.seriesAt >= (s.dirty ? SERIES_MS : 1000)
      const logDue = s.events !== s.buffer.items && now - s.eventsAt >= LOG_MS
      const stale = staleness({ ...s, now })
      if (!sameStale(stale, s.stale)) {
        s.stale = stale
        s.dirty = true
      }
      if (!s.dirty && rate === s.rate && !seriesDue && !logDue) return
      if (seriesDue) {
        s.seriesSnap = s.series.snapshot(now - s.clockOffset)
        s.seriesAt = now
      }
      if (logDue) {
        s.events = s.buffer.items
        s.eventsReceived = s.received
        s.eventsAt = now
      }
      if (s.alertsDirty) publishAlerts(s)
      s.rate = rate
      s.dirty = false
      setSnap(snapshotOf(s))
    }, flushMs)
    return () => clearInterval(id)
  }, [flushMs])

  const dismissGap = useCallback(() => {
    const s = ref.current
    s.gap = null
    s.backfillError = null
    setSnap(snapshotOf(s))
  }, [])

  /** Applies an alert the page got by other means than the socket: the answer to an ack. */
  const upsertAlert = useCallback((alert) => {
    const s = ref.current
    if (!s.alertBook.upsert(alert)) return
    publishAlerts(s)
    setSnap(snapshotOf(s))
  }, [])

  return { ...snap, dismissGap, upsertAlert }
}

function publishAlerts(s) {
  s.alerts = { items: s.alertBook.sorted, loaded: s.alertsLoaded, error: s.alertsError }
  s.alertsDirty = false
}
