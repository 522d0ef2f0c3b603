// Alerts from /api/alerts and the `alert` socket event (docs/analytics.md). Like events, they are
// untrusted input: only the documented fields are kept, with the documented types.

export const ALERTS_LIMIT = 50 // fetched on (re)connect, and closed ones kept

const str = (v) => (v == null ? null : String(v))
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const time = (iso) => {
  const t = Date.parse(iso ?? '')
  return Number.isFinite(t) ? t : null
}

/** {tag: value} of an alert on one tag value (ANOMALY_TAGS), strings only; null otherwise. */
function tagsOf(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null
  const out = {}
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val
  return Object.keys(out).length ? out : null
}

export function normalizeAlert(raw) {
  if (!raw || typeof raw !== 'object' || raw.id == null || raw.id === '') return null
  return {
    id: String(raw.id),
    kind: raw.kind === 'rule' ? 'rule' : 'anomaly',
    metric: str(raw.metric) ?? 'unknown',
    tags: tagsOf(raw.tags),
    signal: str(raw.signal),
    field: str(raw.field),
    direction: raw.direction === 'below' ? 'below' : 'above',
    severity: raw.severity === 'critical' ? 'critical' : 'warning',
    // nodata: still open, but its metric stopped reporting (neither bad nor resolved)
    state: raw.state === 'closed' ? 'closed' : raw.state === 'nodata' ? 'nodata' : 'open',
    rule_id: str(raw.rule_id),
    value: num(raw.value),
    threshold: num(raw.threshold),
    zscore: num(raw.zscore),
    baseline: num(raw.baseline),
    rule: str(raw.rule),
    opened_at: str(raw.opened_at),
    closed_at: str(raw.closed_at),
    updated_at: str(raw.updated_at),
    acked: raw.acked === true,
    message: str(raw.message) ?? '',
  }
}

/** Not closed: open, or open without data (`nodata`). */
export const isActive = (a) => a.state !== 'closed'

/** Open before closed; open ones critical first, then newest; closed ones most recently closed first. */
export function compareAlerts(a, b) {
  if (isActive(a) !== isActive(b)) return isActive(a) ? -1 : 1
  if (isActive(a)) {
    if (a.severity !== b.severity) return a.severity === 'critical' ? -1 : 1
    return (time(b.opened_at) ?? 0) - (time(a.opened_at) ?? 0) || (a.id < b.id ? -1 : 1)
  }
  const closed = (x) => time(x.closed_at) ?? time(x.updated_at) ?? 0
  return closed(b) - closed(a) || (a.id < b.id ? -1 : 1)
}

/** Whether `next` is at least as new as `cur`: a late copy must not undo an ack or a close. */
function supersedes(next, cur) {
  const n = time(next.updated_at)
  const c = time(cur.updated_at)
  if (n === null || c === null) return true
  return n >= c
}

/**
 * The alerts the dashboard knows, by id. A (re)load replaces them with the server's list, except
 * for changes pushed while the request was in flight, which may be newer than what it returns.
 */
export class AlertBook {
  constructor(keepClosed = ALERTS_LIMIT) {
    this.keepClosed = keepClosed
    this.byId = new Map()
    this.pending = null // pushed during a load, by id
    this.sorted = []
  }

  /** Applies one alert (a push or an ack's answer); true if anything changed. */
  upsert(raw) {
    const alert = normalizeAlert(raw)
    if (!alert) return false
    if (this.pending) this.pending.set(alert.id, alert)
    const cur = this.byId.get(alert.id)
    if (cur && !supersedes(alert, cur)) return false
    this.byId.set(alert.id, alert)
    this.#resort()
    return true
  }

  beginLoad() {
    this.pending = new Map()
  }

  /** A failed load: what was pushed meanwhile is already applied. */
  cancelLoad() {
    this.pending = null
  }

  finishLoad(list) {
    const next = new Map()
    for (const raw of Array.isArray(list) ? list : []) {
      const alert = normalizeAlert(raw)
      if (alert) next.set(alert.id, alert)
    }
    for (const [id, alert] of this.pending ?? []) {
      const loaded = next.get(id)
      if (!loaded || supersedes(alert, loaded)) next.set(id, alert)
    }
    this.pending = null
    this.byId = next
    this.#resort()
  }

  #resort() {
    const all = [...this.byId.values()].sort(compareAlerts)
    const open = all.filter(isActive)
    const closed = all.filter((a) => !isActive(a))
    // Bounded: a long session would otherwise keep every alert it ever saw.
    for (const a of closed.slice(this.keepClosed)) this.byId.delete(a.id)
    this.sorted = open.concat(closed.slice(0, this.keepClosed))
  }
}

export function openCounts(alerts) {
  let open = 0
  let critical = 0
  for (const a of alerts) {
    if (!isActive(a)) continue
    open += 1
    if (a.severity === 'critical') critical += 1
  }
  return { open, critical }
}

const pad = (n) => String(n).padStart(2, '0')

/** Local time of an alert timestamp; with the date when it is not today. */
export function formatAlertTime(iso, now = Date.now()) {
  const t = time(iso)
  if (t === null) return '—'
  const d = new Date(t)
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  if (new Date(now).toDateString() === d.toDateString()) return hms
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`
}

/** "45s", "3m 05s", "2h 10m". */
export function formatDuration(fromIso, toIso) {
  const a = time(fromIso)
  const b = time(toIso)
  if (a === null || b === null || b < a) return null
  const s = Math.round((b - a) / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`
}
