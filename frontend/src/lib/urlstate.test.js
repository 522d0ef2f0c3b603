import { describe, expect, it } from 'vitest'
import { fromLocalInput, readUrlState, toLocalInput, writeUrlState } from './urlstate.js'

describe('view in the URL', () => {
  it('round-trips a range with its filters', () => {
    const state = {
      range: { from: Date.parse('2026-03-18T12:00:00Z'), to: Date.parse('2026-03-18T12:05:00Z') },
      tag: 'endpoint=/api/orders',
      logScale: true,
      logMetric: 'http_request',
      logText: '/api/checkout',
    }
    const search = writeUrlState({ window: 60, ...state })
    expect(search).toContain('from=2026-03-18T12%3A00%3A00.000Z')
    expect(search).not.toContain('window=') // a range, not a live window
    expect(readUrlState(search)).toEqual(state)
  })

  it('takes a live window, unix seconds, and ignores what is malformed', () => {
    expect(readUrlState('?window=300')).toEqual({ window: 300 })
    expect(readUrlState('?from=1773835200&to=1773835500')).toEqual({ range: { from: 1773835200000, to: 1773835500000 } })
    expect(readUrlState('?window=7&from=b&to=a&tag=nope&log=yes')).toEqual({})
    expect(readUrlState('?from=2026-03-18T12:05:00Z&to=2026-03-18T12:00:00Z')).toEqual({}) // backwards
    expect(writeUrlState({ window: null })).toBe('')
  })

  it('converts datetime-local values both ways in local time', () => {
    const t = new Date(2026, 2, 18, 9, 5, 7).getTime()
    expect(toLocalInput(t)).toBe('2026-03-18T09:05:07')
    expect(fromLocalInput('2026-03-18T09:05:07')).toBe(t)
    expect(fromLocalInput('2026-03-18T09:05')).toBe(t - 7000)
    expect(fromLocalInput('tomorrow')).toBeNull()
  })
})
