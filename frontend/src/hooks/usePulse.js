import { useEffect } from 'react'
import { defaultApi } from '../lib/api.js'
import { normalizeEvents, partitionsOf } from '../lib/events.js'
import { pickLatencyField } from '../lib/latency.js'
import { useAlerts } from './useAlerts.js'
import { LOG_BUFFER, useEventLog } from './useEventLog.js'
import { useLatest } from './useLatest.js'
import { useLiveStats } from './useLiveStats.js'
import { connectSocket, usePulseSocket } from './usePulseSocket.js'
import { useSeriesHistory } from './useSeriesHistory.js'

export { BACKFILL_LIMIT, INITIAL_FILL, LOG_BUFFER, LOG_MS } from './useEventLog.js'
export { staleness } from './useLiveStats.js'
export { SOCKET_OPTIONS, connectSocket } from './usePulseSocket.js'
export { HISTORY_SETTLE_MS, SERIES_MS } from './useSeriesHistory.js'

export const FLUSH_MS = 100 // <= 10 commits per second

/**
 * Everything live on the dashboard, from one Socket.IO connection: the connection's state, the
 * event log, the live numbers, the charts and the alert feed. Each part is its own hook; this one
 * only routes the socket's pushes to them and runs the flush.
 *
 * At 20k events/s a batch lands every ~50 ms. Handlers only write into the parts' mutable state
 * (ring buffer, chart buckets, counters); the flush publishes at most every `flushMs`, and every
 * part publishes from that same timer callback, so React renders once per flush at most: the
 * rendering cost is bounded by the flush rate, not the event rate.
 */
export function usePulse({ windowSec, io = connectSocket, api = defaultApi, flushMs = FLUSH_MS, bufferSize = LOG_BUFFER } = {}) {
  const log = useEventLog({ api, bufferSize })
  // Before the history: on a window change it drops the old aggregate, which the new history's
  // latency line must not be picked from.
  const live = useLiveStats({ windowSec })
  const history = useSeriesHistory({ api, windowSec, aggregates: live })
  const feed = useAlerts({ api })
  const conn = usePulseSocket({
    io,
    windowSec,
    onConnect(reconnect) {
      log.catchUp(reconnect) // after a reconnect: only what came after the last seq we hold
      feed.load()
      if (reconnect) history.reload()
    },
    onDisconnect: live.pauseRate,
    on: {
      // Sent on every connect, before any batch. `partitions` (absent: 1) says how seqs are made,
      // which the log's resync and order depend on. A reconnect's catch-up starts at the socket's
      // own `connect`, before this arrives: it uses the count of the connection it lost, the one
      // the seqs it holds were made under.
      connected(body) {
        log.setPartitions(partitionsOf(body))
      },
      metrics(payload) {
        const fresh = log.add(normalizeEvents(payload)) // the log's seqs say what is new
        if (!fresh.length) return
        live.observe(fresh, Date.now())
        history.ingest(fresh)
      },
      aggregate(body) {
        if (live.takeAggregate(body)) history.setLatency(pickLatencyField(body.metrics))
      },
      alert: feed.push,
      status: live.setServerStatus,
      generator: live.setGenerator,
    },
  })

  // The flush. Not a poll (nothing is requested): a render throttle, so a plain interval.
  const flushRef = useLatest(() => {
    const now = Date.now()
    conn.commit()
    log.commit(now)
    live.commit(now, conn.currentStatus())
    history.commit(now, live.clockOffset())
    feed.commit()
  })
  useEffect(() => {
    const id = setInterval(() => flushRef.current(), flushMs)
    return () => clearInterval(id)
  }, [flushMs, flushRef])

  return {
    status: conn.status,
    attempt: conn.attempt,
    events: log.events,
    eventsReceived: log.eventsReceived,
    received: log.received,
    lastSeq: log.lastSeq,
    gap: log.gap,
    backfillError: log.backfillError,
    ratePerSec: live.ratePerSec,
    aggregate: live.aggregate,
    aggregateAt: live.aggregateAt,
    generator: live.generator,
    serverStatus: live.serverStatus,
    stale: live.stale,
    series: history.series,
    windowSec,
    alerts: feed.alerts,
    dismissGap: log.dismissGap,
    upsertAlert: feed.upsert,
  }
}
