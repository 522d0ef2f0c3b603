import { act, fireEvent, render, renderHook, screen, within } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import App from './App.jsx'
import { FLUSH_MS, LOG_MS } from './hooks/usePulse.js'
import { TRENDS_POLL_MS, useTrends } from './hooks/useTrends.js'
import { BASE_TIME, FakeSocket, aggregateBody, alertBody, ev, fakeApi, fakeIo, mockSystemTheme, range } from './test/fakes.js'

// Counts the renders App causes (a memo wrapper around the real panel): a panel's own state
// changes (poll answers) render the inner component only, so these count re-renders from above.
const renders = vi.hoisted(() => ({ AlertFeed: 0, TopPanel: 0 }))
async function counted(importOriginal, name) {
  const mod = await importOriginal()
  const { createElement, memo } = await import('react')
  const inner = mod[name].type
  return {
    ...mod,
    [name]: memo((props) => {
      renders[name] += 1
      return createElement(inner, props)
    }),
  }
}
vi.mock('./components/AlertFeed.jsx', (importOriginal) => counted(importOriginal, 'AlertFeed'))
vi.mock('./components/TopPanel.jsx', (importOriginal) => counted(importOriginal, 'TopPanel'))

const settle = () => act(async () => {})
const tick = (ms = FLUSH_MS) => act(() => vi.advanceTimersByTime(ms))

async function renderApp(api = fakeApi()) {
  const socket = new FakeSocket()
  const view = render(<App io={fakeIo(socket)} api={api} />)
  await settle()
  return { socket, api, ...view }
}

const tagged = (seqs) =>
  seqs.map((s) =>
    s % 2
      ? ev(s, { at: 1000 + s, tags: { endpoint: `/e${s % 3}`, region: 'eu' } })
      : ev(s, { at: 1000 + s, metric: 'orders', value: { amount: 3 }, tags: { currency: 'EUR' } }),
  )

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
  mockSystemTheme(false)
})

describe('App: alerts', () => {
  it('an alert pushed over the socket appears in the feed and the header, and can be acknowledged', async () => {
    const acked = (id) => ({
      ...alertBody({ id, severity: 'critical' }),
      acked: true,
      updated_at: new Date(BASE_TIME + 2000).toISOString(),
    })
    const api = fakeApi({ ackAlert: vi.fn(async (id) => acked(id)) })
    const { socket } = await renderApp(api)
    socket.serverConnect()
    await settle()
    expect(screen.queryByTestId('header-open-alerts')).toBeNull()
    socket.send('alert', alertBody({ id: 'a1', severity: 'critical' }))
    await tick()
    const feed = screen.getByTestId('alert-feed')
    const item = within(feed).getByTestId('alert-item')
    expect(item).toHaveAttribute('data-severity', 'critical')
    expect(item).toHaveTextContent('http_request rate = 12.5 > 10 (a1)')
    expect(screen.getByTestId('header-open-alerts')).toHaveTextContent('1 open alert · 1 critical')
    expect(screen.getByTestId('header-open-alerts')).toHaveAttribute('href', '#alerts')
    expect(feed).toHaveAttribute('id', 'alerts')

    fireEvent.click(within(item).getByRole('button', { name: /Acknowledge/ }))
    await settle()
    expect(api.ackAlert).toHaveBeenCalledWith('a1')
    expect(within(feed).getByTestId('alert-acked')).toBeInTheDocument() // without waiting for the echo
    expect(within(feed).queryByRole('button', { name: /Acknowledge/ })).toBeNull()

    socket.send('alert', { ...alertBody({ id: 'a1', severity: 'critical', state: 'closed' }), acked: true })
    await tick()
    expect(screen.queryByTestId('header-open-alerts')).toBeNull()
    expect(within(feed).getByTestId('alert-item')).toHaveAttribute('data-state', 'closed')
  })
})

describe('App: trends', () => {
  it("polls trends for the dashboard's window and shows the arrows in the metric table", async () => {
    const api = fakeApi({
      trends: vi.fn(async ({ window }) => ({
        window_seconds: window,
        step_seconds: 1,
        trends: { http_request: { trend: 'rising', relative_slope: 0.01, slope_per_s: 0.1, mean_rate: 10, points: 60 } },
      })),
    })
    const { socket, unmount } = await renderApp(api)
    expect(api.trends).toHaveBeenLastCalledWith({ window: 60 }, expect.objectContaining({ signal: expect.any(AbortSignal) }))
    socket.serverConnect()
    socket.send('aggregate', aggregateBody(60))
    await tick()
    const table = screen.getByTestId('metric-table')
    expect(within(table).getByRole('img', { name: 'rising' })).toHaveTextContent('▲')
    expect(within(table).getAllByTestId('trend')).toHaveLength(1) // orders has none: no invented arrow
    expect(screen.getByTestId('total-events').parentElement.querySelector('[data-testid=trend]')).toBeNull()

    const calls = api.trends.mock.calls.length
    await tick(TRENDS_POLL_MS)
    await settle()
    expect(api.trends.mock.calls.length).toBe(calls + 1)
    fireEvent.change(screen.getByTestId('window-select'), { target: { value: '300' } })
    await settle()
    expect(api.trends).toHaveBeenLastCalledWith({ window: 300 }, expect.anything())
    unmount()
    const after = api.trends.mock.calls.length
    await tick(TRENDS_POLL_MS * 4)
    expect(api.trends.mock.calls.length).toBe(after)
  })

  it('never asks for a window under the 10 s the server accepts', async () => {
    const api = fakeApi()
    renderHook(() => useTrends(api, 5))
    await settle()
    expect(api.trends).toHaveBeenCalledWith({ window: 10 }, expect.anything())
  })
})

describe('App: top-N', () => {
  it("offers the tags seen in the socket's events", async () => {
    const { socket, api } = await renderApp()
    socket.serverConnect()
    await settle()
    expect(screen.getByTestId('top-tag')).toBeDisabled()
    socket.send('metrics', tagged(range(1, 10)))
    await tick(LOG_MS)
    await settle()
    const tag = screen.getByTestId('top-tag')
    expect([...tag.options].map((o) => o.value)).toEqual(['currency', 'endpoint', 'region'])
    expect(tag).toHaveValue('endpoint')
    expect([...screen.getByTestId('top-metric').options].map((o) => o.value)).toEqual(['', 'http_request', 'orders'])
    expect(api.top).toHaveBeenLastCalledWith(expect.objectContaining({ by: 'endpoint', window: 60 }), expect.anything())
  })
})

describe('App: rendering cost', () => {
  it('socket batches do not re-render the alert feed or the top-N panel; an alert does', async () => {
    const { socket } = await renderApp()
    socket.serverConnect()
    socket.send('metrics', tagged(range(1, 50)))
    await settle() // the alert list loaded on connect...
    await tick(LOG_MS) // ...and the tags are committed: from here on only batches arrive
    expect(screen.getByTestId('top-tag')).toHaveValue('endpoint')
    const before = { ...renders }
    for (let i = 1; i <= 20; i++) {
      socket.send('metrics', tagged(range(i * 50 + 1, i * 50 + 50)))
      socket.send('aggregate', aggregateBody(60, { total: 1000 + i }))
      await tick(FLUSH_MS)
    }
    await tick(LOG_MS)
    expect(screen.getByTestId('total-events')).toHaveTextContent('1,020') // the page did update
    expect(screen.getAllByTestId('event-row')).toHaveLength(200)
    expect(renders.AlertFeed).toBe(before.AlertFeed)
    expect(renders.TopPanel).toBe(before.TopPanel)
    socket.send('alert', alertBody({ id: 'x' }))
    await tick()
    expect(renders.AlertFeed).toBe(before.AlertFeed + 1)
    expect(renders.TopPanel).toBe(before.TopPanel)
  })
})
