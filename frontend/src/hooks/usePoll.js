import { useEffect, useRef, useState } from 'react'

const IDLE = Object.freeze({ data: null, error: null })

/**
 * Calls `fetcher(signal)` now and then `intervalMs` after each answer, while `key` stays the
 * same. The next request is only scheduled once the previous one has settled, so a slow server
 * never gets a pile of overlapping requests. A new `key` (other parameters) aborts the request
 * in flight and starts over; unmounting aborts it and stops. `key` null: no polling.
 *
 * Returns `{data, error}`: the last answer for this key (kept while later polls fail, so a hiccup
 * doesn't blank a panel) and the last failure, cleared by the next success. Both change only when
 * a poll settles, so a consumer re-renders at the poll rate at most.
 */
export function usePoll(fetcher, intervalMs, key) {
  const fetcherRef = useRef(fetcher)
  fetcherRef.current = fetcher
  const [state, setState] = useState({ key: null, ...IDLE })

  useEffect(() => {
    if (key == null) return undefined
    const ctrl = new AbortController()
    let timer = null
    async function run() {
      let update
      try {
        const data = await fetcherRef.current(ctrl.signal)
        update = () => ({ key, data, error: null })
      } catch (error) {
        update = (prev) => ({ key, data: prev.key === key ? prev.data : null, error })
      }
      if (ctrl.signal.aborted) return
      setState(update)
      timer = setTimeout(run, intervalMs)
    }
    run()
    return () => {
      ctrl.abort()
      clearTimeout(timer)
    }
  }, [key, intervalMs])

  // Another key's answer is never shown under this key's labels.
  return state.key === key && key != null ? state : IDLE
}
