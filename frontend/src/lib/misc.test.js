import { describe, expect, it } from 'vitest'
import { formatPercent, formatValue, isLatencyField } from './format.js'
import { pickLatencyField, pickStatField } from './latency.js'
import { DEFAULT_WINDOW, PREFS_KEY, loadPrefs, savePrefs } from './prefs.js'
import { createApi } from './api.js'

describe('latency field choice', () => {
  const f = { count: 1 }
  it('prefers http_request.ms, then latency.ms, then any *_ms field', () => {
    expect(pickLatencyField({ latency: { fields: { ms: f } }, http_request: { fields: { ms: f } } })).toEqual({ metric: 'http_request', field: 'ms' })
    expect(pickLatencyField({ latency: { fields: { ms: f } }, db: { fields: { query_ms: f } } })).toEqual({ metric: 'latency', field: 'ms' })
    expect(pickLatencyField({ orders: { fields: { amount: f } }, db: { fields: { query_ms: f } } })).toEqual({ metric: 'db', field: 'query_ms' })
    expect(pickLatencyField({ orders: { fields: { amount: f } } })).toBeNull()
    expect(pickLatencyField(undefined)).toBeNull()
  })
  it('recognises latency-like names only', () => {
    expect(['ms', 'ttfb_ms'].every(isLatencyField)).toBe(true)
    expect(['msg', 'ms_total', 'items'].some(isLatencyField)).toBe(false)
    expect(pickStatField({ amount: f, wait_ms: f })).toBe('wait_ms')
    expect(pickStatField({ items: f, amount: f })).toBe('amount')
  })
})

describe('formatting', () => {
  it('shows values as text, capped', () => {
    expect(formatValue({ a: '<b>' })).toBe('{"a":"<b>"}')
    expect(formatValue(null)).toBe('null')
    expect(formatValue('x'.repeat(1000)).length).toBeLessThan(400)
  })
  it('formats a 0..1 rate as a percentage', () => {
    expect(formatPercent(0.0123)).toBe('1.23%')
    expect(formatPercent(0)).toBe('0%')
    expect(formatPercent(null)).toBe('—')
  })
})

describe('prefs', () => {
  it('round-trips and ignores junk', () => {
    expect(loadPrefs()).toEqual({ window: DEFAULT_WINDOW, theme: null })
    savePrefs({ window: 900 })
    savePrefs({ theme: 'dark' })
    expect(loadPrefs()).toEqual({ window: 900, theme: 'dark' })
    localStorage.setItem(PREFS_KEY, JSON.stringify({ window: 42, theme: 'purple' }))
    expect(loadPrefs()).toEqual({ window: DEFAULT_WINDOW, theme: null })
    localStorage.setItem(PREFS_KEY, '{not json')
    expect(loadPrefs().window).toBe(DEFAULT_WINDOW)
  })
})

describe('api client', () => {
  it('uses relative URLs and surfaces the server error message', async () => {
    const calls = []
    const fetchImpl = async (url, init) => {
      calls.push([url, init?.method ?? 'GET', init?.body])
      if (url.startsWith('/api/generator') && init?.method === 'POST')
        return { ok: false, status: 400, json: async () => ({ error: 'rate must be positive' }) }
      return { ok: true, status: 200, json: async () => ({ points: [] }) }
    }
    const api = createApi(fetchImpl)
    await api.timeseries({ window: 300, step: 5, metric: 'orders' })
    await api.recent({ limit: 500, after: 41 })
    await expect(api.setGenerator({ rate: -1 })).rejects.toThrow('rate must be positive')
    expect(calls.map((c) => c[0])).toEqual([
      '/api/metrics/timeseries?window=300&step=5&metric=orders',
      '/api/metrics/recent?limit=500&after=41',
      '/api/generator',
    ])
    expect(JSON.parse(calls[2][2])).toEqual({ rate: -1 })
  })
})
