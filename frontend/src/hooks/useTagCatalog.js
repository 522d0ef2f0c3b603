import { useMemo, useState } from 'react'
import { TagCatalog } from '../lib/tags.js'

/**
 * The tag keys seen so far in `events` (the event log's buffer), per metric. The result is a new
 * object only when a key was new, so the panel using it doesn't re-render with every log update.
 */
export function useTagCatalog(events) {
  const [catalog] = useState(() => new TagCatalog())
  // Derived while rendering, not set from an effect (which would render twice per log commit).
  // observe() only learns, so seeing the same events again (StrictMode) changes nothing, and
  // snapshot() is the same object until a key is new: the memo's result is stable between keys.
  return useMemo(() => {
    catalog.observe(events)
    return catalog.snapshot()
  }, [catalog, events])
}
