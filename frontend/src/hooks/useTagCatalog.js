import { useEffect, useState } from 'react'
import { TagCatalog } from '../lib/tags.js'

/**
 * The tag keys seen so far in `events` (the event log's buffer), per metric. The result is a new
 * object only when a key was new, so the panel using it doesn't re-render with every log update.
 */
export function useTagCatalog(events) {
  const [catalog] = useState(() => new TagCatalog())
  const [snap, setSnap] = useState(() => catalog.snapshot())
  useEffect(() => {
    // observe() reads the events into a catalog kept across renders; a new snapshot only when a
    // key was new is what keeps the top-N panel from re-rendering with every log commit.
    // eslint-disable-next-line react-hooks/set-state-in-effect
    if (catalog.observe(events)) setSnap(catalog.snapshot())
  }, [catalog, events])
  return snap
}
