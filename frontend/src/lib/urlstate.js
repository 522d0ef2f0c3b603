// The view in the URL, so a link reproduces it: ?window=300 (a live window) or ?from=…&to=… (an
// absolute range, ISO), plus tag=endpoint=/api/orders (charts), log=1 (latency log scale),
// lm=<metric> and q=<text> (event log filters). Read once at load, written with replaceState.

import { WINDOWS } from './prefs.js'

const WINDOW_VALUES = new Set(WINDOWS.map((w) => w.value))
const MAX_RANGE_MS = 7 * 86400 * 1000

function time(raw) {
  if (raw == null || raw === '') return null
  const n = Number(raw)
  const t = Number.isFinite(n) && /^\d+(\.\d+)?$/.test(raw) ? n * 1000 : Date.parse(raw)
  return Number.isFinite(t) ? t : null
}

/** What the URL asks for; anything malformed is left out (a link is user-editable input). */
export function readUrlState(search) {
  const q = new URLSearchParams(search)
  const out = {}
  const w = Number(q.get('window'))
  if (WINDOW_VALUES.has(w)) out.window = w
  const from = time(q.get('from'))
  const to = time(q.get('to'))
  if (from !== null && to !== null && from < to && to - from <= MAX_RANGE_MS) out.range = { from, to }
  const tag = q.get('tag')
  if (tag && /^[A-Za-z0-9_.:-]{1,64}=.{1,200}$/.test(tag)) out.tag = tag
  if (q.get('log') === '1') out.logScale = true
  if (q.get('lm')) out.logMetric = q.get('lm').slice(0, 100)
  if (q.get('q')) out.logText = q.get('q').slice(0, 200)
  return out
}

/** The query string for a view (leading "?", or "" when it is all defaults). */
export function writeUrlState({ window, range, tag, logScale, logMetric, logText }) {
  const q = new URLSearchParams()
  if (range) {
    q.set('from', new Date(range.from).toISOString())
    q.set('to', new Date(range.to).toISOString())
  } else if (window) q.set('window', String(window))
  if (tag) q.set('tag', tag)
  if (logScale) q.set('log', '1')
  if (logMetric) q.set('lm', logMetric)
  if (logText) q.set('q', logText)
  const s = q.toString()
  return s ? `?${s}` : ''
}

const pad = (n) => String(n).padStart(2, '0')

/** ms -> the value of an <input type="datetime-local" step="1"> (local time). */
export function toLocalInput(ms) {
  const d = new Date(ms)
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
}

/** The value of a datetime-local input (local time) -> ms, or null. */
export function fromLocalInput(value) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?$/.exec(value ?? '')
  if (!m) return null
  const t = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] ?? 0)).getTime()
  return Number.isFinite(t) ? t : null
}
