import { useEffect, useRef, useState } from 'react'
import { ALERTS_LIMIT, AlertBook } from '../lib/alerts.js'
import { useLatest } from './useLatest.js'

const EMPTY = Object.freeze({ items: [], loaded: false, error: null })

/**
 * The alert feed: /api/alerts loaded on every connect (alerts may have opened, closed or been
 * acknowledged while we were away), `alert` pushes applied on top. The AlertBook settles which
 * version of an alert wins, including pushes that land while the list is loading.
 *
 * `alerts` ({items, loaded, error}) is a new object only when an alert changed, so the feed
 * doesn't re-render with every batch of events. Pushes are published by `commit()` (the caller's
 * flush); `upsert` (an ack's answer, which the user is waiting for) is published at once.
 */
export function useAlerts({ api }) {
  const [initial] = useState(() => ({
    book: new AlertBook(ALERTS_LIMIT),
    error: null,
    loaded: false,
    token: 0, // the newest load: an older one answering late is ignored
    changed: false,
    disposed: false,
  }))
  const bookRef = useRef(initial) // written by socket handlers and fetches, outside render
  const apiRef = useLatest(api)
  const [alerts, setAlerts] = useState(EMPTY)

  useEffect(() => {
    const b = bookRef.current
    b.disposed = false
    return () => {
      b.disposed = true // a load answering after unmount has nobody to tell
    }
  }, [])

  const [actions] = useState(() => {
    const b = () => bookRef.current
    const publish = () => {
      const s = b()
      s.changed = false
      setAlerts({ items: s.book.sorted, loaded: s.loaded, error: s.error })
    }
    return {
      /** Replaces the list with the server's; pushes that arrive meanwhile are kept. */
      async load() {
        const s = b()
        const token = ++s.token
        s.book.beginLoad()
        try {
          const body = await apiRef.current.alerts({ state: 'all', limit: ALERTS_LIMIT })
          if (token !== s.token || s.disposed) return
          s.book.finishLoad(body?.alerts)
          s.error = null
        } catch (err) {
          if (token !== s.token || s.disposed) return
          s.book.cancelLoad()
          s.error = `Could not load alerts (${err?.message ?? err}).`
        }
        s.loaded = true
        s.changed = true
      },
      /** An `alert` push: shown with the next commit. */
      push(body) {
        if (b().book.upsert(body)) b().changed = true
      },
      /** An alert the page got by other means than the socket (the answer to an ack): shown now. */
      upsert(alert) {
        if (b().book.upsert(alert)) publish()
      },
      commit() {
        if (b().changed) publish()
      },
    }
  })
  return { alerts, ...actions }
}
