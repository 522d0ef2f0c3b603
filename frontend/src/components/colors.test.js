import { describe, expect, it } from 'vitest'
import { metricColor } from './colors.js'

describe('metricColor', () => {
  it('is fixed for known metrics and stable for new ones', () => {
    expect(metricColor('errors')).toBe('#ef4444')
    const a = metricColor('custom_a')
    const b = metricColor('custom_b')
    expect(a).not.toBe(b)
    expect(metricColor('custom_a')).toBe(a)
    const known = ['http_request', 'page_views', 'sensor', 'latency', 'orders', 'errors', 'signups'].map(metricColor)
    expect(known).not.toContain(a)
    expect(new Set(known).size).toBe(known.length)
  })
})
