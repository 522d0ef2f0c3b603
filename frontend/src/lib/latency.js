import { isLatencyField } from './format.js'

/**
 * Which field the latency cards and chart show, given an aggregate's `metrics` map:
 * http_request.ms, else latency.ms, else the first latency-like field (`ms` or `*_ms`).
 */
export function pickLatencyField(metrics) {
  if (!metrics || typeof metrics !== 'object') return null
  const has = (m, f) => Boolean(metrics[m]?.fields && typeof metrics[m].fields === 'object' && f in metrics[m].fields)
  if (has('http_request', 'ms')) return { metric: 'http_request', field: 'ms' }
  if (has('latency', 'ms')) return { metric: 'latency', field: 'ms' }
  for (const metric of Object.keys(metrics).sort()) {
    const fields = metrics[metric]?.fields
    if (!fields || typeof fields !== 'object') continue
    const field = Object.keys(fields).sort().find(isLatencyField)
    if (field) return { metric, field }
  }
  return null
}

/** The field a metric's table row summarises: its latency-like field, else its first field. */
export function pickStatField(fields) {
  if (!fields || typeof fields !== 'object') return null
  const names = Object.keys(fields).sort()
  return names.find(isLatencyField) ?? names[0] ?? null
}

export const sameField = (a, b) => (a === b ? true : !a || !b ? false : a.metric === b.metric && a.field === b.field)
