// Display formatting. Everything returns plain strings; React escapes them when rendering.
const DASH = '—'

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 })
const oneDec = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 })
const twoDec = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 })

const finite = (n) => typeof n === 'number' && Number.isFinite(n)

export function formatCount(n) {
  if (!finite(n)) return DASH
  if (Math.abs(n) >= 1e7) return `${oneDec.format(n / 1e6)}M`
  return intFmt.format(n)
}

export function formatRate(n) {
  if (!finite(n)) return DASH
  if (Math.abs(n) >= 1e6) return `${oneDec.format(n / 1e6)}M`
  if (Math.abs(n) >= 100) return intFmt.format(n)
  return oneDec.format(n)
}

/** `fraction` is 0..1. */
export function formatPercent(fraction) {
  if (!finite(fraction)) return DASH
  const pct = fraction * 100
  if (pct === 0) return '0%'
  if (pct < 0.01) return '<0.01%'
  return `${pct < 10 ? twoDec.format(pct) : oneDec.format(pct)}%`
}

export function formatMs(ms) {
  if (!finite(ms)) return DASH
  if (Math.abs(ms) >= 1000) return `${twoDec.format(ms / 1000)} s`
  return `${ms < 10 ? twoDec.format(ms) : oneDec.format(ms)} ms`
}

/** A field statistic: milliseconds get a unit, anything else a plain number. */
export function formatStat(value, field) {
  if (!finite(value)) return DASH
  if (isLatencyField(field)) return formatMs(value)
  return twoDec.format(value)
}

export function isLatencyField(name) {
  return typeof name === 'string' && (name === 'ms' || name.endsWith('_ms'))
}

const pad = (n, w = 2) => String(n).padStart(w, '0')

/** Local wall-clock time with milliseconds, e.g. 12:05:31.123. */
export function formatClock(ts) {
  const d = new Date(ts)
  if (Number.isNaN(d.getTime())) return String(ts ?? '')
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
}

/** Axis tick label for unix ms; seconds only matter on short windows. */
export function formatTick(ms, windowSec) {
  const d = new Date(ms)
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`
  return windowSec <= 900 ? `${hm}:${pad(d.getSeconds())}` : hm
}

const MAX_VALUE_CHARS = 300

/** An event value as text: objects as compact JSON, capped so one huge payload can't bloat the DOM. */
export function formatValue(value) {
  let text
  if (value === null || value === undefined) text = 'null'
  else if (typeof value === 'string') text = value
  else {
    try {
      text = JSON.stringify(value) ?? String(value)
    } catch {
      text = String(value)
    }
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text
}
