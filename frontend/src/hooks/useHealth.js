import { useEffect, useState } from 'react'

export const HEALTH_POLL_MS = 15000

/** /api/health, polled: the header warns when the server reports Redis down. */
export function useHealth(api, pollMs = HEALTH_POLL_MS) {
  const [health, setHealth] = useState(null)
  useEffect(() => {
    let alive = true
    const poll = () =>
      api
        .health()
        .then((h) => alive && setHealth(h && typeof h === 'object' ? h : null))
        .catch(() => alive && setHealth(null))
    poll()
    const id = setInterval(poll, pollMs)
    return () => {
      alive = false
      clearInterval(id)
    }
  }, [api, pollMs])
  return health
}
