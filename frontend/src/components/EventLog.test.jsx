import { fireEvent, render, screen, within } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { ev, range } from '../test/fakes.js'
import { EventLog, LOG_ROWS } from './EventLog.jsx'

const newestFirst = (n) => range(1, n).reverse().map((s) => ev(s, { metric: s % 2 ? 'orders' : 'http_request' }))

describe('EventLog', () => {
  it('renders hostile values as literal text, never as markup', () => {
    const events = [
      ev(3, { metric: '<script>window.__pwned = 1</script>', value: null }),
      ev(2, { value: '<img src=x onerror="window.__pwned = 2">' }),
      ev(1, { value: { msg: '<b>bold</b>' }, source: '<iframe src="javascript:alert(1)">', tags: { x: '<svg onload=alert(1)>' } }),
    ]
    const { container } = render(<EventLog events={events} />)
    const log = screen.getByTestId('event-log')
    expect(log.querySelector('script, img, b, iframe, svg')).toBeNull()
    expect(within(log).getByText('<script>window.__pwned = 1</script>')).toBeInTheDocument()
    expect(within(log).getByText('<img src=x onerror="window.__pwned = 2">')).toBeInTheDocument()
    expect(within(log).getByText('{"msg":"<b>bold</b>"}')).toBeInTheDocument()
    expect(within(log).getByText('<iframe src="javascript:alert(1)">')).toBeInTheDocument()
    expect(window.__pwned).toBeUndefined()
    expect(container.innerHTML).toContain('&lt;img src=x onerror=')
  })

  it(`never puts more than ${LOG_ROWS} rows in the DOM`, () => {
    render(<EventLog events={newestFirst(1000)} />)
    const rows = screen.getAllByTestId('event-row')
    expect(rows).toHaveLength(200)
    expect(rows[0]).toHaveTextContent('http_request') // seq 1000, the newest, is first
  })

  it('filters by metric and by free text over the whole buffer', () => {
    const events = newestFirst(600)
    events[599] = ev(1, { metric: 'orders', value: { note: 'needle-in-haystack' } }) // the oldest one
    render(<EventLog events={events} metrics={['orders', 'http_request']} />)
    fireEvent.change(screen.getByTestId('log-filter-metric'), { target: { value: 'orders' } })
    const rows = screen.getAllByTestId('event-row')
    expect(rows).toHaveLength(200)
    expect(rows.every((r) => within(r).queryByText('orders'))).toBe(true)
    fireEvent.change(screen.getByTestId('log-filter-text'), { target: { value: 'NEEDLE' } })
    expect(screen.getAllByTestId('event-row')).toHaveLength(1)
    fireEvent.change(screen.getByTestId('log-filter-metric'), { target: { value: 'http_request' } })
    expect(screen.queryAllByTestId('event-row')).toHaveLength(0)
    expect(screen.getByText('No events match the filter.')).toBeInTheDocument()
  })

  it('shows how many events arrived while paused', () => {
    const { rerender } = render(<EventLog events={newestFirst(5)} paused newCount={1} />)
    expect(screen.getByTestId('new-events')).toHaveTextContent('1 new event')
    rerender(<EventLog events={newestFirst(5)} paused newCount={42} />)
    expect(screen.getByTestId('new-events')).toHaveTextContent('42 new events')
    rerender(<EventLog events={newestFirst(5)} paused={false} />)
    expect(screen.queryByTestId('new-events')).toBeNull()
  })

  it('shows tags as chips on the row, and the text filter matches only what rows show', () => {
    const events = [
      ev(2, { metric: 'http_request', tags: { endpoint: '/api/checkout', region: 'eu' }, id: 'evt-secret-id' }),
      ev(1, { metric: 'http_request', tags: { endpoint: '/api/orders' } }),
    ]
    render(<EventLog events={events} />)
    const [first] = screen.getAllByTestId('event-row')
    expect(within(first).getAllByTestId('tag-chip').map((c) => c.textContent)).toEqual(['endpoint=/api/checkout', 'region=eu'])
    fireEvent.change(screen.getByTestId('log-filter-text'), { target: { value: '/api/checkout' } })
    const rows = screen.getAllByTestId('event-row')
    expect(rows).toHaveLength(1)
    expect(rows[0]).toHaveTextContent('/api/checkout')
    fireEvent.change(screen.getByTestId('log-filter-text'), { target: { value: 'evt-secret-id' } })
    expect(screen.queryAllByTestId('event-row')).toHaveLength(0) // not shown, so not matched
  })

  it('starts from the filters it is given and reports changes (for the URL)', () => {
    const changes = []
    render(<EventLog events={newestFirst(4)} initialMetric="orders" initialText="x" onFiltersChange={(f) => changes.push(f)} />)
    expect(screen.getByTestId('log-filter-metric')).toHaveValue('orders')
    expect(screen.getByTestId('log-filter-text')).toHaveValue('x')
    fireEvent.change(screen.getByTestId('log-filter-text'), { target: { value: 'y' } })
    expect(changes).toEqual([{ metric: 'orders', text: 'y' }])
  })
})
