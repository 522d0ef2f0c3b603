import { describe, expect, it } from 'vitest'
import { render, screen } from '@testing-library/react'
import { alertBody } from '../test/fakes.js'
import { AlertFeed } from '../components/AlertFeed.jsx'
import { ConnectionStatus, serverStatusText } from '../components/Header.jsx'
import { staleText } from '../components/StatCards.jsx'
import { staleness } from '../hooks/usePulse.js'
import { AlertBook, normalizeAlert, openCounts } from './alerts.js'

const T = Date.parse('2026-03-18T12:00:00Z')

describe('stale numbers', () => {
  const base = { status: 'connected', serverStatus: { redis: 'up', worker: 'up', since: '' }, windowSec: 60 }

  it('are current while connected, all is up and the last aggregate is within its window', () => {
    expect(staleness({ ...base, aggregateAt: T, now: T + 59_000 })).toBeNull()
    expect(staleness({ ...base, aggregateAt: null, now: T })).toBeNull() // nothing shown yet
  })

  it('are old from the moment the server says Redis or the worker is down, since the time it says', () => {
    const since = new Date(T + 2000).toISOString()
    const s = staleness({ ...base, serverStatus: { redis: 'down', worker: 'down', since }, aggregateAt: T, now: T + 3000 })
    expect(s).toEqual({ reason: 'Redis down', since: T + 2000, asOf: T })
    const w = staleness({ ...base, serverStatus: { redis: 'up', worker: 'down', since }, aggregateAt: T, now: T + 3000 })
    expect(w.reason).toBe('worker down')
  })

  it('are old while disconnected, and when no aggregate came for longer than the window', () => {
    expect(staleness({ ...base, status: 'reconnecting', aggregateAt: T, now: T + 1000 }).reason).toBe('not connected')
    expect(staleness({ ...base, windowSec: 10, aggregateAt: T, now: T + 10_001 }).reason).toBe('no update')
  })

  it('say so in words', () => {
    expect(staleText({ reason: 'Redis down', since: T + 2000, asOf: T })).toMatch(/^as of \d\d:\d\d:\d\d · Redis down since \d\d:\d\d:\d\d$/)
    expect(staleText(null)).toBeNull()
  })
})

describe('server status in the pill', () => {
  it('says what is down and since when, only while connected', () => {
    expect(serverStatusText({ redis: 'up', worker: 'up', since: '' })).toBeNull()
    expect(serverStatusText({ redis: 'down', worker: 'down', since: new Date(T).toISOString() })).toMatch(/^Redis down since \d\d:\d\d:\d\d$/)
    expect(serverStatusText({ redis: 'up', worker: 'down', since: 'x' })).toBe('Worker down')
    const { rerender } = render(<ConnectionStatus status="connected" attempt={0} serverStatus={{ redis: 'down', worker: 'down', since: '' }} />)
    expect(screen.getByTestId('connection-status')).toHaveTextContent('Connected')
    expect(screen.getByTestId('server-status')).toHaveTextContent('Redis down')
    rerender(<ConnectionStatus status="reconnecting" attempt={2} serverStatus={{ redis: 'down', worker: 'down', since: '' }} />)
    expect(screen.queryByTestId('server-status')).toBeNull()
  })
})

describe('nodata alerts', () => {
  it('are open (counted, listed first) but shown as "no data"', () => {
    const nodata = normalizeAlert({ ...alertBody({ id: 'n', at: 5 }), state: 'nodata' })
    expect(nodata.state).toBe('nodata')
    const book = new AlertBook()
    book.upsert({ ...alertBody({ id: 'c', state: 'closed', at: 9 }) })
    book.upsert({ ...alertBody({ id: 'n', at: 5 }), state: 'nodata' })
    expect(book.sorted.map((a) => a.id)).toEqual(['n', 'c'])
    expect(openCounts(book.sorted).open).toBe(1)
    render(<AlertFeed alerts={{ items: book.sorted, loaded: true, error: null }} api={{}} />)
    expect(screen.getByTestId('open-alert-count')).toHaveTextContent('1 open')
    expect(screen.getByTestId('alert-nodata')).toHaveTextContent('no data')
  })
})
