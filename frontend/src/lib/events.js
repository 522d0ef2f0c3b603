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

/** The ingest partition an event's seq belongs to: seq = n*P + k with 0 <= k < P. */
export const partitionOf = (seq, partitions) => (partitions > 1 ? ((seq % partitions) + partitions) % partitions : 0)

/** The `partitions` of a `connected` payload: a whole number >= 1; absent or anything else is 1. */
export function partitionsOf(body) {
  const p = body && typeof body === 'object' ? Number(body.partitions) : NaN // '' and null: 0
  return Number.isInteger(p) && p >= 1 ? p : 1
}

const tsCache = new WeakMap() // event -> its ts in ms, parsed once (events are never mutated)
function tsOf(ev) {
  let t = tsCache.get(ev)
  if (t === undefined) {
    t = Date.parse(ev.ts)
    if (!Number.isFinite(t)) t = -Infinity // no usable time: the oldest (seq still orders these)
    tsCache.set(ev, t)
  }
  return t
}

/** Newest first by seq: with one partition seq is the arrival order. */
const bySeq = (a, b) => b.seq - a.seq
/** Newest first by ts, then seq: with several partitions a seq says nothing about another
 *  partition's events, and ts-then-seq is the order the server merges partitions in. */
function byTsSeq(a, b) {
  const ta = tsOf(a)
  const tb = tsOf(b)
  if (ta !== tb) return ta < tb ? 1 : -1
  return b.seq - a.seq
}

/** Merges two arrays already sorted by `cmp` (keys are unique: seqs are). */
function mergeSorted(a, b, cmp) {
  const out = new Array(a.length + b.length)
  let i = 0
  let j = 0
  let k = 0
  while (i < a.length && j < b.length) out[k++] = cmp(a[i], b[j]) <= 0 ? a[i++] : b[j++]
  while (i < a.length) out[k++] = a[i++]
  while (j < b.length) out[k++] = b[j++]
  return out
}

/**
 * The newest `capacity` events, newest first, unique by seq.
 *
 * With one ingest partition "newest" is the largest seq. With P partitions (`setPartitions`)
 * seqs are still unique but only increase within a partition (seq % P), and partitions
 * interleave, so the order is ts then seq, as the server merges them.
 *
 * Live batches arrive in order and are newer than everything held, so the common path is a
 * prepend. A backfill after a reconnect (or another partition's batch) can interleave with what
 * already arrived, so out-of-order input is merged in. `items` is replaced (never mutated) on
 * every change, so it can be handed to React as-is.
 *
 * It also remembers the newest seq it has seen of each partition (`newest`), also of events it
 * did not keep: that is where a resync after a reconnect starts (`after()`).
 */
export class EventBuffer {
  constructor(capacity = 1000) {
    this.capacity = capacity
    this.items = []
    this.seqs = new Set()
    this.maxSeq = null
    this.partitions = 1
    this.newest = new Map() // partition -> the largest seq seen of it
    this.cmp = bySeq
  }

  /**
   * The server's partition count (from its `connected` payload). A change re-orders what is held
   * and recomputes the newest seq per partition from it (seqs seen under the old count and no
   * longer held are forgotten: a resync then asks for those partitions' whole history).
   */
  setPartitions(partitions) {
    const p = Number.isInteger(partitions) && partitions >= 1 ? partitions : 1
    if (p === this.partitions) return false
    this.partitions = p
    this.cmp = p > 1 ? byTsSeq : bySeq
    this.items = [...this.items].sort(this.cmp)
    this.newest.clear()
    for (const ev of this.items) this.#saw(ev.seq)
    return true
  }

  #saw(seq) {
    const k = partitionOf(seq, this.partitions)
    const cur = this.newest.get(k)
    if (cur === undefined || seq > cur) this.newest.set(k, seq)
  }

  /**
   * Where a resync starts: null before any event; the newest seq seen with one partition (the
   * single-number form every server takes); else "s0,s1,..." one seq per partition seen, by
   * partition. A partition never seen is not named, so the server sends its whole history.
   */
  after() {
    if (!this.newest.size) return null
    if (this.partitions === 1) return this.newest.get(0)
    return [...this.newest.entries()]
      .sort(([a], [b]) => a - b)
      .map(([, seq]) => seq)
      .join(',')
  }

  /** Adds events (any order); returns the ones not seen before, newest first. */
  add(events) {
    const cmp = this.cmp
    const fresh = []
    const full = this.items.length >= this.capacity
    const oldestHeld = this.items.length ? this.items[this.items.length - 1] : null
    for (const ev of events) {
      this.#saw(ev.seq)
      if (this.seqs.has(ev.seq)) continue
      if (full && cmp(ev, oldestHeld) > 0) continue // older than anything we keep
      this.seqs.add(ev.seq)
      fresh.push(ev)
    }
    if (!fresh.length) return fresh

    fresh.sort(cmp)
    let merged
    if (!this.items.length || cmp(fresh[fresh.length - 1], this.items[0]) < 0) merged = fresh.concat(this.items)
    else merged = mergeSorted(fresh, this.items, cmp)

    if (merged.length > this.capacity) {
      for (const ev of merged.slice(this.capacity)) this.seqs.delete(ev.seq)
      merged = merged.slice(0, this.capacity)
    }
    this.items = merged
    for (const ev of fresh) if (this.maxSeq === null || ev.seq > this.maxSeq) this.maxSeq = ev.seq
    return fresh
  }

  clear() {
    this.items = []
    this.seqs.clear()
  }
}
