import { describe, expect, it } from 'vitest'
import { alertMarkers, chartOf } from './markers.js'
import { normalizeAlert } from './alerts.js'
import { alertBody } from '../test/fakes.js'

const T = Date.parse('2026-03-18T12:00:00Z')
const iso = (ms) => new Date(ms).toISOString()

describe('alert markers', () => {
  it('put each alert on its chart: error rates, field values, rates', () => {
    expect(chartOf({ signal: 'error_rate' })).toBe('errors')
    expect(chartOf({ signal: 'p95' })).toBe('latency')
    expect(chartOf({ signal: 'rate' })).toBe('throughput')
  })

  it('mark opens and closes inside the range only, oldest first', () => {
    const alerts = [
      { ...alertBody({ id: 'a' }), signal: 'error_rate', opened_at: iso(T + 5000), state: 'closed', closed_at: iso(T + 30_000) },
      { ...alertBody({ id: 'b' }), signal: 'error_rate', opened_at: iso(T - 60_000), state: 'open', closed_at: null },
      { ...alertBody({ id: 'c' }), signal: 'error_rate', opened_at: iso(T + 1000), state: 'nodata', closed_at: null },
      { ...alertBody({ id: 'd' }), signal: 'p95', opened_at: iso(T + 2000), state: 'open' },
    ].map(normalizeAlert)
    const got = alertMarkers(alerts, 'errors', T, T + 60_000)
    expect(got.map((m) => [m.x - T, m.kind])).toEqual([
      [1000, 'open'],
      [5000, 'open'],
      [30_000, 'close'],
    ])
  })
})
