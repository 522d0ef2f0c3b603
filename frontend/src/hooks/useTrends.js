import { useCallback } from 'react'
import { usePoll } from './usePoll.js'

export const TRENDS_POLL_MS = 5000
export const TRENDS_MIN_WINDOW = 10 // the server's minimum: too few points for a slope below it

/**
 * Rising / falling / stable per metric over the dashboard's window, polled.
 * Returns `{window_seconds, trends: {metric: {trend, relative_slope, ...}}}` or null.
 */
export function useTrends(api, windowSec, pollMs = TRENDS_POLL_MS) {
  const win = Math.max(TRENDS_MIN_WINDOW, Number(windowSec) || TRENDS_MIN_WINDOW)
  const fetcher = useCallback((signal) => api.trends({ window: win }, { signal }), [api, win])
  const { data } = usePoll(fetcher, pollMs, `trends:${win}`)
  return data && data.trends && typeof data.trends === 'object' ? data : null
}
