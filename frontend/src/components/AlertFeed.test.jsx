import { act, fireEvent, render, screen, within } from '@testing-library/react'
import { describe, expect, it, vi } from 'vitest'
import { AlertBook } from '../lib/alerts.js'
import { alertBody, fakeApi } from '../test/fakes.js'
import { AlertFeed, CLOSED_SHOWN } from './AlertFeed.jsx'

const settle = () => act(async () => {})

function feed(list) {
  const book = new AlertBook()
  book.finishLoad(list)
  return { items: book.sorted, loaded: true, error: null }
}

const items = () => screen.getAllByTestId('alert-item')

describe('AlertFeed', () => {
  it('shows where an anomaly is when the alert names a tag value', () => {
    render(
      <AlertFeed
        api={fakeApi()}
        alerts={feed([
          alertBody({ id: 'e', kind: 'anomaly', tags: { endpoint: '/api/orders' } }),
          alertBody({ id: 'plain', at: 1 }),
        ])}
      />,
    )
    const tags = screen.getAllByTestId('alert-tag')
    expect(tags.map((t) => t.textContent)).toEqual(['endpoint=/api/orders'])
  })

  it('lists open alerts first, critical before warning, then closed ones, in their colours', () => {
    render(
      <AlertFeed
        api={fakeApi()}
        alerts={feed([
          alertBody({ id: 'w', at: 5 }),
          alertBody({ id: 'closed', state: 'closed', severity: 'critical' }),
          alertBody({ id: 'c', severity: 'critical', at: 1 }),
        ])}
      />,
    )
    const list = screen.getByRole('list', { name: /alerts/i })
    expect(within(list).getAllByRole('listitem')).toHaveLength(3)
    expect(items().map((li) => [li.dataset.severity, li.dataset.state])).toEqual([
      ['critical', 'open'],
      ['warning', 'open'],
      ['critical', 'closed'],
    ])
    expect(items()[0]).toHaveClass('sev-critical', 'is-open')
    expect(items()[1]).toHaveClass('sev-warning', 'is-open')
    expect(items()[2]).toHaveClass('is-closed') // grey, whatever its severity
    expect(items()[0]).toHaveTextContent('http_request rate = 12.5 > 10 (c)')
    expect(within(items()[2]).getByText('closed')).toBeInTheDocument()
    expect(items()[2]).toHaveTextContent('after 30s')
    expect(screen.getByTestId('open-alert-count')).toHaveTextContent('2 open')
    expect(screen.getByTestId('open-alert-count')).toHaveAccessibleName('2 open alerts, 1 critical')
    expect(screen.getByTestId('open-alert-count')).toHaveClass('sev-critical')
  })

  it('shows only the most recent closed alerts under the open ones', () => {
    const list = [alertBody({ id: 'open' })].concat(
      Array.from({ length: CLOSED_SHOWN + 5 }, (_, i) => alertBody({ id: `c${i}`, state: 'closed', at: i })),
    )
    render(<AlertFeed api={fakeApi()} alerts={feed(list)} />)
    expect(items()).toHaveLength(1 + CLOSED_SHOWN)
    expect(items()[1]).toHaveTextContent(`(c${CLOSED_SHOWN + 4})`) // the newest closed
  })

  it('says when there is nothing, and tells loading from empty', () => {
    const { rerender } = render(<AlertFeed api={fakeApi()} alerts={{ items: [], loaded: false, error: null }} />)
    expect(screen.getByText('Loading alerts…')).toBeInTheDocument()
    rerender(<AlertFeed api={fakeApi()} alerts={{ items: [], loaded: true, error: null }} />)
    expect(screen.getByText(/No alerts/)).toBeInTheDocument()
    expect(screen.getByTestId('open-alert-count')).toHaveTextContent('0 open')
    expect(screen.queryByRole('list')).toBeNull()
  })

  it('acknowledges through the API and hands the answer on; acked alerts have no button', async () => {
    const acked = { ...alertBody({ id: 'a1' }), acked: true }
    const api = fakeApi({ ackAlert: vi.fn(async () => acked) })
    const onUpdate = vi.fn()
    const { rerender } = render(<AlertFeed api={api} onUpdate={onUpdate} alerts={feed([alertBody({ id: 'a1' })])} />)
    const button = screen.getByRole('button', { name: /^Acknowledge/ })
    expect(button).toHaveTextContent('Acknowledge')
    fireEvent.click(button)
    expect(button).toBeDisabled() // no double posts while it is on its way
    await settle()
    expect(api.ackAlert).toHaveBeenCalledWith('a1')
    expect(onUpdate).toHaveBeenCalledWith(acked)
    rerender(<AlertFeed api={api} onUpdate={onUpdate} alerts={feed([acked])} />)
    expect(screen.getByTestId('alert-acked')).toHaveTextContent('acknowledged')
    expect(screen.queryByRole('button', { name: /Acknowledge/ })).toBeNull()
  })

  it('shows a refused ack (API key required) inline on that alert, and allows a retry', async () => {
    const err = Object.assign(new Error('missing or wrong X-API-Key header'), { status: 401 })
    const api = fakeApi({ ackAlert: vi.fn(async () => Promise.reject(err)) })
    const onUpdate = vi.fn()
    render(<AlertFeed api={api} onUpdate={onUpdate} alerts={feed([alertBody({ id: 'a1' }), alertBody({ id: 'a2' })])} />)
    const [first, second] = items()
    fireEvent.click(within(second).getByRole('button', { name: /Acknowledge/ }))
    await settle()
    const error = within(second).getByRole('alert')
    expect(error).toHaveTextContent(/Not acknowledged: this server requires an API key/)
    expect(error).toHaveTextContent('missing or wrong X-API-Key header')
    expect(within(first).queryByRole('alert')).toBeNull()
    expect(onUpdate).not.toHaveBeenCalled()
    // A retry that works clears the message.
    api.ackAlert.mockResolvedValueOnce({ ...alertBody({ id: 'a2' }), acked: true })
    fireEvent.click(within(second).getByRole('button', { name: /Acknowledge/ }))
    await settle()
    expect(within(second).queryByRole('alert')).toBeNull()
    expect(onUpdate).toHaveBeenCalledTimes(1)
  })

  it('drops a failed ack message once the alert was acknowledged elsewhere', async () => {
    const err = Object.assign(new Error('missing or wrong X-API-Key header'), { status: 401 })
    const api = fakeApi({ ackAlert: vi.fn(async () => Promise.reject(err)) })
    const { rerender } = render(<AlertFeed api={api} alerts={feed([alertBody({ id: 'a1' })])} />)
    fireEvent.click(screen.getByRole('button', { name: /Acknowledge/ }))
    await settle()
    expect(screen.getByRole('alert')).toBeInTheDocument()
    rerender(<AlertFeed api={api} alerts={feed([{ ...alertBody({ id: 'a1' }), acked: true }])} />)
    expect(screen.queryByRole('alert')).toBeNull()
    expect(screen.getByTestId('alert-acked')).toBeInTheDocument()
  })

  it('shows why the list could not be loaded', () => {
    render(<AlertFeed api={fakeApi()} alerts={{ items: [], loaded: true, error: 'Could not load alerts (HTTP 503).' }} />)
    expect(screen.getByRole('alert')).toHaveTextContent('Could not load alerts (HTTP 503).')
  })
})
