// Incoming events are untrusted: keep only the documented fields, with the documented types.
// Nothing here escapes HTML -- React does that when the values are rendered as text.

const MAX_TAGS = 20

export function normalizeEvent(raw) {
  if (!raw || typeof raw !== 'object') return null
  const seq =
    typeof raw.seq === 'number' ? raw.seq : typeof raw.seq === 'string' && raw.seq.trim() !== '' ? Number(raw.seq) : NaN
  if (!Number.isFinite(seq)) return null // without a seq we can neither order nor dedupe it
  const event = {
    id: raw.id == null ? String(seq) : String(raw.id),
    seq,
    metric: raw.metric == null ? 'unknown' : String(raw.metric),
    value: raw.value === undefined ? null : raw.value,
    ts: typeof raw.ts === 'string' ? raw.ts : raw.ts == null ? '' : String(raw.ts),
    status: raw.status === 'error' ? 'error' : 'ok',
  }
  if (raw.source != null) event.source = String(raw.source)
  if (raw.tags && typeof raw.tags === 'object' && !Array.isArray(raw.tags)) {
    const tags = {}
    for (const [k, v] of Object.entries(raw.tags).slice(0, MAX_TAGS)) tags[k] = String(v)
    event.tags = tags
  }
  return event
}

export function normalizeEvents(list) {
  if (!Array.isArray(list)) list = list && typeof list === 'object' ? [list] : []
  const out = []
  for (const raw of list) {
    const ev = normalizeEvent(raw)
    if (ev) out.push(ev)
  }
  return out
}

/**
 * The newest `capacity` events, newest first, unique by seq.
 *
 * Live batches arrive in seq order and are newer than everything held, so the common path is a
 * prepend. A backfill after a reconnect can interleave with batches that already arrived, so
 * out-of-order input is merged and sorted. `items` is replaced (never mutated) on every change,
 * so it can be handed to React as-is.
 */
export class EventBuffer {
  constructor(capacity = 1000) {
    this.capacity = capacity
    this.items = []
    this.seqs = new Set()
    this.maxSeq = null
  }

  /** Adds events (any order); returns the ones not seen before, newest first. */
  add(events) {
    const fresh = []
    const full = this.items.length >= this.capacity
    const minHeld = this.items.length ? this.items[this.items.length - 1].seq : -Infinity
    for (const ev of events) {
      if (this.seqs.has(ev.seq)) continue
      if (full && ev.seq < minHeld) continue // older than anything we keep
      this.seqs.add(ev.seq)
      fresh.push(ev)
    }
    if (!fresh.length) return fresh

    fresh.sort((a, b) => b.seq - a.seq)
    const newest = this.items.length ? this.items[0].seq : -Infinity
    let merged
    if (fresh[fresh.length - 1].seq > newest) merged = fresh.concat(this.items)
    else merged = fresh.concat(this.items).sort((a, b) => b.seq - a.seq)

    if (merged.length > this.capacity) {
      for (const ev of merged.slice(this.capacity)) this.seqs.delete(ev.seq)
      merged = merged.slice(0, this.capacity)
    }
    this.items = merged
    if (this.maxSeq === null || fresh[0].seq > this.maxSeq) this.maxSeq = fresh[0].seq
    return fresh
  }

  clear() {
    this.items = []
    this.seqs.clear()
  }
}
