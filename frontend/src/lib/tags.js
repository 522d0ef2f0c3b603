// Which tag keys each metric's events carry: the choices of the top-N panel's tag selector.
// Learnt from the event log's buffer, and kept for the session, so a tag seen once stays
// selectable when its metric is quiet for a while.

const MAX_METRICS = 100
const MAX_KEYS = 50 // per metric: a producer tagging with ids must not make the selector unusable

export const EMPTY_CATALOG = Object.freeze({ metrics: [], keys: [], byMetric: {} })

export class TagCatalog {
  constructor() {
    this.byMetric = new Map()
    this.snap = EMPTY_CATALOG
  }

  /** Learns from `events`; true if a metric or tag key was new. */
  observe(events) {
    let changed = false
    for (const ev of events) {
      if (!ev.tags) continue
      let keys = this.byMetric.get(ev.metric)
      if (!keys) {
        if (this.byMetric.size >= MAX_METRICS) continue
        keys = new Set()
        this.byMetric.set(ev.metric, keys)
      }
      for (const k in ev.tags) {
        if (keys.has(k) || keys.size >= MAX_KEYS) continue
        keys.add(k)
        changed = true
      }
    }
    if (changed) this.snap = this.#snapshot()
    return changed
  }

  /** Sorted, frozen, and a new object only when something was learnt (safe as a memo input). */
  snapshot() {
    return this.snap
  }

  #snapshot() {
    const byMetric = {}
    const all = new Set()
    for (const [metric, keys] of this.byMetric) {
      if (!keys.size) continue
      byMetric[metric] = Object.freeze([...keys].sort())
      for (const k of keys) all.add(k)
    }
    return Object.freeze({ metrics: Object.keys(byMetric).sort(), keys: [...all].sort(), byMetric: Object.freeze(byMetric) })
  }
}

/** The tag keys to offer for `metric` ('' = every metric). */
export function tagKeysFor(catalog, metric) {
  return metric ? (catalog.byMetric[metric] ?? []) : catalog.keys
}

const PREFERRED = ['endpoint', 'service', 'region']

/** The tag shown until the user picks one: the most telling of the usual ones, else the first. */
export function defaultTag(keys) {
  return PREFERRED.find((k) => keys.includes(k)) ?? keys[0] ?? ''
}
