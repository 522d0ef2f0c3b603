import { describe, expect, it } from 'vitest'
import { alertBody } from '../test/fakes.js'
import { AlertBook, compareAlerts, formatDuration, normalizeAlert, openCounts } from './alerts.js'

const ids = (book) => book.sorted.map((a) => a.id)

describe('alerts: normalizing', () => {
  it('keeps the documented fields with their types and drops what has no id', () => {
    const a = normalizeAlert({ ...alertBody({ id: 7 }), severity: 'bogus', state: 'weird', acked: 'yes', value: '12', extra: 1 })
    expect(a).toMatchObject({ id: '7', severity: 'warning', state: 'open', acked: false, value: null })
    expect(a).not.toHaveProperty('extra')
    expect(normalizeAlert({ message: 'no id' })).toBeNull()
    expect(normalizeAlert(null)).toBeNull()
  })
})

describe('alerts: order', () => {
  it('puts open ones first, critical before warning, newest first; then closed by closing time', () => {
    const list = [
      alertBody({ id: 'closed-old', state: 'closed', at: 0, severity: 'critical' }),
      alertBody({ id: 'warn-new', at: 50 }),
      alertBody({ id: 'crit-old', at: 10, severity: 'critical' }),
      alertBody({ id: 'closed-new', state: 'closed', at: 40 }),
      alertBody({ id: 'warn-old', at: 5 }),
      alertBody({ id: 'crit-new', at: 20, severity: 'critical' }),
    ].map(normalizeAlert)
    expect(list.sort(compareAlerts).map((a) => a.id)).toEqual([
      'crit-new',
      'crit-old',
      'warn-new',
      'warn-old',
      'closed-new',
      'closed-old',
    ])
  })
})

describe('AlertBook', () => {
  it('upserts by id and ignores a copy older than what it has', () => {
    const book = new AlertBook()
    expect(book.upsert(alertBody({ id: 'a', at: 0 }))).toBe(true)
    const acked = { ...alertBody({ id: 'a', at: 0 }), acked: true, updated_at: '2026-03-18T12:00:05.000Z' }
    expect(book.upsert(acked)).toBe(true)
    expect(book.upsert(alertBody({ id: 'a', at: 0 }))).toBe(false) // the late, unacked copy
    expect(book.sorted).toHaveLength(1)
    expect(book.sorted[0].acked).toBe(true)
    expect(book.upsert({ nothing: 'here' })).toBe(false)
  })

  it("a load replaces the list, but keeps what was pushed while it was in flight", () => {
    const book = new AlertBook()
    book.upsert(alertBody({ id: 'gone', at: 0 })) // the server no longer lists it
    book.beginLoad()
    book.upsert(alertBody({ id: 'pushed', at: 30, severity: 'critical' }))
    const closing = alertBody({ id: 'listed', state: 'closed', at: 10 }) // closed meanwhile (newer)
    book.upsert(closing)
    book.finishLoad([alertBody({ id: 'listed', at: 10 }), alertBody({ id: 'other', at: 1 })])
    expect(ids(book)).toEqual(['pushed', 'other', 'listed'])
    expect(book.sorted.find((a) => a.id === 'listed').state).toBe('closed')
    expect(book.pending).toBeNull()
  })

  it('keeps every open alert but only the newest closed ones', () => {
    const book = new AlertBook(2)
    for (let i = 0; i < 5; i++) book.upsert(alertBody({ id: `c${i}`, state: 'closed', at: i }))
    book.upsert(alertBody({ id: 'o1' }))
    book.upsert(alertBody({ id: 'o2' }))
    book.upsert(alertBody({ id: 'o3' }))
    expect(ids(book)).toEqual(['o1', 'o2', 'o3', 'c4', 'c3'])
    expect(book.byId.size).toBe(5)
  })

  it('counts open and critical alerts', () => {
    const book = new AlertBook()
    book.finishLoad([
      alertBody({ id: 'a', severity: 'critical' }),
      alertBody({ id: 'b' }),
      alertBody({ id: 'c', severity: 'critical', state: 'closed' }),
    ])
    expect(openCounts(book.sorted)).toEqual({ open: 2, critical: 1 })
  })
})

describe('alerts: formatting', () => {
  it('says how long an alert lasted', () => {
    const t = (s) => new Date(Date.UTC(2026, 2, 18, 12, 0, s)).toISOString()
    expect(formatDuration(t(0), t(45))).toBe('45s')
    expect(formatDuration(t(0), t(185))).toBe('3m 05s')
    expect(formatDuration(t(0), t(7800))).toBe('2h 10m')
    expect(formatDuration(t(10), t(0))).toBeNull()
    expect(formatDuration(null, t(0))).toBeNull()
  })
})
