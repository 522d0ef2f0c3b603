import { useState, useRef } from 'react'
import { EventBuffer, normalizeEvents, partitionOf } from '../lib/events.js'
import { useLatest } from './useLatest.js'

export const LOG_MS = 250 // the log: 4 updates a second look live; more is unreadable and costly
export const LOG_BUFFER = 1000 // events kept for the log (its filters search these; 200 are shown)
export const INITIAL_FILL = 200
export const BACKFILL_LIMIT = 500 // the server keeps the newest 500 (RECENT_MAX)

const viewOf = (log) => ({
  events: log.events,
  eventsReceived: log.eventsReceived,
  received: log.received,
  lastSeq: log.buffer.maxSeq,
  gap: log.gap,
  backfillError: log.backfillError,
})

/**
 * The event log: a bounded buffer of the newest events, deduplicated by seq, which is also what
 * decides whether a live event is new at all (`add` returns only those, so nothing downstream
 * counts an event twice). On connect it fills from /api/metrics/recent; after a reconnect it asks
 * for what came `after` the last seq it has seen, and reports a gap when the server no longer has
 * all of it.
 *
 * Ingest partitions (`setPartitions(P)`, from the server's `connected` payload; 1 until told):
 * seq = n*P + k for event n of partition k, so seqs stay unique (dedupe is unchanged) but only
 * count up, by P, within a partition. The resync then names the newest seq seen of each partition
 * (`after=s0,s1,...`), and a gap is counted per partition. With P = 1 the request and the gap are
 * what they always were.
 *
 * `commit(now)` publishes: the counters (`received`, `lastSeq`, gap) whenever they changed, the
 * events themselves at most every LOG_MS. `eventsReceived` is `received` as of that log commit,
 * so "N new events" under a paused log counts exactly what it doesn't show.
 */
export function useEventLog({ api, bufferSize = LOG_BUFFER }) {
  const [initial] = useState(() => ({
    buffer: new EventBuffer(bufferSize),
    events: [], // what the log shows: buffer.items as of the last log commit
    eventsReceived: 0,
    eventsAt: -Infinity,
    received: 0,
    gap: null,
    backfillError: null,
    changed: false,
  }))
  const logRef = useRef(initial) // written by socket handlers and fetches, outside render
  const apiRef = useLatest(api)
  const [view, setView] = useState(() => viewOf(initial))

  const [actions] = useState(() => {
    const log = () => logRef.current

    async function recentAfter(after) {
      try {
        return await apiRef.current.recent({ limit: BACKFILL_LIMIT, after })
      } catch (err) {
        // A server configured with RECENT_MAX < 500 rejects the limit: take its default instead.
        if (err?.status === 400) return apiRef.current.recent({ limit: null, after })
        throw err
      }
    }

    return {
      /** The server's ingest partition count (its `connected` payload's `partitions`). */
      setPartitions(partitions) {
        const l = log()
        if (l.buffer.setPartitions(partitions)) l.changed = true // the log's order may change
      },

      /** Adds events to the buffer; returns the ones it had not seen, newest first. */
      add(events) {
        const l = log()
        const fresh = l.buffer.add(events)
        if (fresh.length) {
          l.received += fresh.length
          l.changed = true
        }
        return fresh
      },

      /** The first fill on connect, or (`reconnect`) what was sent while we were away. */
      async catchUp(reconnect) {
        const l = log()
        // What the request names, as of now: P may change (a new `connected`) while it runs.
        const partitions = l.buffer.partitions
        const after = reconnect ? l.buffer.after() : null
        const newest = after == null ? null : new Map(l.buffer.newest)
        try {
          const body = await (after == null ? apiRef.current.recent({ limit: INITIAL_FILL }) : recentAfter(after))
          const events = normalizeEvents(body?.metrics)
          if (newest && events.length) {
            // The server only keeps so much history: anything between what we saw of a partition
            // and the oldest event it still has of it is gone. Say so rather than silently
            // showing a seamless log. Within a partition seqs step by P, so a partition whose
            // oldest returned seq is more than P above ours lost (difference / P) - 1 events.
            const oldest = new Map()
            for (const e of events) {
              const k = partitionOf(e.seq, partitions)
              const o = oldest.get(k)
              if (o === undefined || e.seq < o) oldest.set(k, e.seq)
            }
            let missed = 0
            for (const [k, seen] of newest) {
              const first = oldest.get(k)
              if (first > seen + partitions) missed += (first - seen) / partitions - 1
            }
            if (missed > 0) l.gap = { missed: (l.gap?.missed ?? 0) + missed, at: Date.now() }
          }
          l.received += l.buffer.add(events).length
          if (after != null) l.backfillError = null
        } catch (err) {
          if (after != null) l.backfillError = `Could not load the events sent while disconnected (${err?.message ?? err}).`
        }
        l.changed = true
      },

      commit(now) {
        const l = log()
        const logDue = l.events !== l.buffer.items && now - l.eventsAt >= LOG_MS
        if (logDue) {
          l.events = l.buffer.items
          l.eventsReceived = l.received
          l.eventsAt = now
        }
        if (!logDue && !l.changed) return
        l.changed = false
        setView(viewOf(l))
      },

      /** The user read the gap notice: hide it (and a backfill error) at once. */
      dismissGap() {
        const l = log()
        l.gap = null
        l.backfillError = null
        setView(viewOf(l))
      },
    }
  })
  return { ...view, ...actions }
}
