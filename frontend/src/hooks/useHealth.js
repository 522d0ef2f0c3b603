import { useCallback } from 'react'
import { usePoll } from './usePoll.js'

export const HEALTH_POLL_MS = 15000

/**
 * /api/health, polled through usePoll: the next request only goes out once the previous one
 * answered, so a server slow to answer health checks is not sent more of them.
 * Returns the last answer, or null while the check fails: a failed check is no evidence that
 * Redis is down, so the header's warning follows only answers the server actually gave.
 */
export function useHealth(api, pollMs = HEALTH_POLL_MS) {
  const fetcher = useCallback((signal) => api.health({ signal }), [api])
  const { data, error } = usePoll(fetcher, pollMs, 'health')
  return !error && data && typeof data === 'object' ? data : null
}
