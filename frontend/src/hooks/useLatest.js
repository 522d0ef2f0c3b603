import { useEffect, useRef } from 'react'

/**
 * A ref that follows `value` after every commit. Socket handlers and timers read the newest
 * `api` or callback through it without being re-registered whenever the caller re-renders.
 */
export function useLatest(value) {
  const ref = useRef(value)
  useEffect(() => {
    ref.current = value
  })
  return ref
}

