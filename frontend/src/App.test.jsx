import { act, fireEvent, render, screen, within } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import App from './App.jsx'
import { FLUSH_MS, LOG_MS } from './hooks/usePulse.js'
import { PREFS_KEY } from './lib/prefs.js'
import { BASE_TIME, FakeSocket, aggregateBody, ev, fakeApi, fakeIo, mockSystemTheme, range } from './test/fakes.js'

const settle = () => act(async () => {})
const tick = (ms = FLUSH_MS) => act(() => vi.advanceTimersByTime(ms))
const prefs = () => JSON.parse(localStorage.getItem(PREFS_KEY) ?? '{}')

async function renderApp(api = fakeApi()) {
  const socket = new FakeSocket()
  const view = render(<App io={fakeIo(socket)} api={api} />)
  await settle()
  return { socket, api, ...view }
}

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
  mockSystemTheme(false)
})

describe('App', () => {
  it('shows the connection state in exact words', async () => {
    const { socket } = await renderApp()
    const status = screen.getByTestId('connection-status')
    expect(status).toHaveTextContent('Connecting…')
    expect(screen.getByTestId('events-per-sec')).toHaveTextContent('—') // unknown, not 0
    socket.serverConnect()
    await tick()
    expect(status).toHaveTextContent(/^Connected$/)
    socket.drop()
    socket.reconnectAttempt(3)
    await tick()
    expect(status).toHaveTextContent(/^Reconnecting… \(attempt 3\)$/)
    socket.io.fire('reconnect_failed')
    await tick()
    expect(status).toHaveTextContent(/^Offline$/)
  })

  it('fills the stat cards from the aggregate tick', async () => {
    const { socket } = await renderApp()
    socket.serverConnect()
    socket.send('aggregate', aggregateBody(60, { total: 12345, errors: 247 }))
    await tick()
    expect(screen.getByTestId('total-events')).toHaveTextContent('12,345')
    expect(screen.getByTestId('error-rate')).toHaveTextContent('2%')
    expect(screen.getByTestId('p50')).toHaveTextContent('42 ms')
    expect(screen.getByTestId('p95')).toHaveTextContent('180.5 ms')
    expect(screen.getByTestId('p99')).toHaveTextContent('420 ms')
    expect(within(screen.getByTestId('metric-table')).getAllByTestId('metric-row')).toHaveLength(2)
  })

  it('renders an XSS payload from the socket as text', async () => {
    const { socket, container } = await renderApp()
    socket.serverConnect()
    socket.send('metrics', [
      ev(1, { metric: '<script>window.__xss=1</script>' }),
      ev(2, { value: '<img src=x onerror="window.__xss=2">', source: '<b>src</b>' }),
    ])
    await tick()
    const log = screen.getByTestId('event-log')
    expect(within(log).getByText('<img src=x onerror="window.__xss=2">')).toBeInTheDocument()
    expect(within(log).getByText('<script>window.__xss=1</script>')).toBeInTheDocument()
    expect(container.querySelector('main script, main img, main b')).toBeNull()
    expect(window.__xss).toBeUndefined()
  })

  it('caps the log at 200 rows however much arrives', async () => {
    const { socket } = await renderApp()
    socket.serverConnect()
    for (let i = 0; i < 10; i++) socket.send('metrics', range(i * 300 + 1, i * 300 + 300).map((s) => ev(s)))
    await tick()
    expect(screen.getAllByTestId('event-row')).toHaveLength(200)
  })

  it('pause freezes the log and counts what arrives meanwhile; resume catches up', async () => {
    const { socket } = await renderApp()
    socket.serverConnect()
    socket.send('metrics', range(1, 10).map((s) => ev(s, { value: { ms: s, tag: `seq-${s}` } })))
    await tick()
    const toggle = screen.getByTestId('pause-toggle')
    expect(toggle).toHaveTextContent('Pause')
    fireEvent.click(toggle)
    expect(toggle).toHaveTextContent('Resume')
    expect(toggle).toHaveAttribute('aria-pressed', 'true')
    socket.send('metrics', range(11, 35).map((s) => ev(s, { value: { ms: s, tag: `seq-${s}` } })))
    await tick()
    expect(screen.getAllByTestId('event-row')).toHaveLength(10)
    expect(screen.getAllByTestId('event-row')[0]).toHaveTextContent('seq-10')
    expect(screen.getByTestId('new-events')).toHaveTextContent('25 new events')
    socket.send('aggregate', aggregateBody(60, { total: 4321 })) // counters stay live
    await tick()
    expect(screen.getByTestId('total-events')).toHaveTextContent('4,321')
    fireEvent.click(toggle)
    await tick(LOG_MS) // the log follows within LOG_MS
    expect(screen.getAllByTestId('event-row')).toHaveLength(35)
    expect(screen.getAllByTestId('event-row')[0]).toHaveTextContent('seq-35')
    expect(screen.queryByTestId('new-events')).toBeNull()
  })

  it('shows a gap notice after a reconnect that lost events, until dismissed', async () => {
    const api = fakeApi()
    const { socket } = await renderApp(api)
    socket.serverConnect()
    socket.send('metrics', range(1, 50).map((s) => ev(s)))
    await tick()
    expect(screen.queryByTestId('gap-notice')).toBeNull()
    socket.drop()
    api.recent.mockResolvedValue({ metrics: range(551, 1050).reverse().map((s) => ev(s)) })
    socket.serverConnect()
    await settle()
    await tick()
    expect(screen.getByTestId('gap-notice')).toHaveTextContent('Missed ~500 events while disconnected')
    fireEvent.click(within(screen.getByTestId('gap-notice')).getByRole('button', { name: 'Dismiss' }))
    expect(screen.queryByTestId('gap-notice')).toBeNull()
  })

  it('renders the three charts with stable labels and animation off', async () => {
    const { socket } = await renderApp()
    socket.serverConnect()
    socket.send('metrics', [ev(1, { at: 3000 }), ev(2, { at: 3100, metric: 'orders', value: { amount: 3 } })])
    await tick(1000)
    const labels = (id) => within(screen.getByTestId(id)).getByTestId('line-chart').dataset.labels
    expect(labels('chart-throughput')).toBe('http_request,orders')
    expect(labels('chart-latency')).toBe('p50,p95,p99')
    expect(labels('chart-errors')).toBe('Error rate')
    expect(within(screen.getByTestId('chart-latency')).getByTestId('line-chart').dataset.animation).toBe('false')
  })
})

describe('preferences', () => {
  it('follows the system theme, and a toggle is persisted over it', async () => {
    mockSystemTheme(true)
    const first = await renderApp()
    expect(document.documentElement.dataset.theme).toBe('dark')
    fireEvent.click(screen.getByTestId('theme-toggle'))
    expect(document.documentElement.dataset.theme).toBe('light')
    expect(prefs().theme).toBe('light')
    first.unmount()
    await renderApp() // a reload: the system still says dark, the user said light
    expect(document.documentElement.dataset.theme).toBe('light')
    fireEvent.click(screen.getByTestId('theme-toggle'))
    expect(document.documentElement.dataset.theme).toBe('dark')
    expect(prefs().theme).toBe('dark')
  })

  it('persists the window, resubscribes with it, and starts with it next time', async () => {
    const first = await renderApp()
    first.socket.serverConnect()
    const select = screen.getByTestId('window-select')
    expect(select.tagName).toBe('SELECT')
    expect(select).toHaveValue('60')
    expect([...select.options].map((o) => [o.value, o.textContent])).toEqual([
      ['10', '10 s'],
      ['60', '1 m'],
      ['300', '5 m'],
      ['900', '15 m'],
      ['3600', '1 h'],
    ])
    fireEvent.change(select, { target: { value: '900' } })
    expect(prefs().window).toBe(900)
    expect(first.socket.subscriptions().at(-1)).toEqual({ mode: 'batch', window: 900 })
    first.unmount()

    const second = await renderApp()
    expect(screen.getByTestId('window-select')).toHaveValue('900')
    second.socket.serverConnect()
    expect(second.socket.subscriptions()).toEqual([{ mode: 'batch', window: 900 }])
    expect(second.api.aggregate).toHaveBeenCalledWith({ window: 900 })
  })
})

describe('generator controls', () => {
  it('are hidden when the server has no generator', async () => {
    await renderApp()
    expect(screen.queryByTestId('generator-toggle')).toBeNull()
    expect(screen.queryByTestId('generator-rate')).toBeNull()
  })

  it('start/stop and rate go to the API, and socket updates keep tabs in sync', async () => {
    const api = fakeApi({
      getGenerator: vi.fn(async () => ({ available: true, running: false, rate: 200, profile: 'mixed', published: 0 })),
      setGenerator: vi.fn(async (body) => ({ available: true, running: true, rate: 200, profile: 'mixed', published: 5, ...body })),
    })
    const { socket } = await renderApp(api)
    const toggle = screen.getByTestId('generator-toggle')
    expect(toggle).toHaveTextContent('Start')
    fireEvent.click(toggle)
    await settle()
    expect(api.setGenerator).toHaveBeenCalledWith({ running: true })
    expect(toggle).toHaveTextContent('Stop')

    const rate = screen.getByTestId('generator-rate')
    fireEvent.focus(rate)
    fireEvent.change(rate, { target: { value: '1500' } })
    fireEvent.blur(rate)
    await settle()
    expect(api.setGenerator).toHaveBeenLastCalledWith({ rate: 1500 })

    // Another tab stopped it and changed the rate.
    socket.send('generator', { available: true, running: false, rate: 50, profile: 'mixed', published: 9 })
    await tick()
    expect(toggle).toHaveTextContent('Start')
    expect(rate).toHaveValue(50)
  })

  it('shows the server error for a bad rate and keeps the old value', async () => {
    const err = Object.assign(new Error('rate must be in (0, 50000]'), { status: 400 })
    const api = fakeApi({
      getGenerator: vi.fn(async () => ({ available: true, running: true, rate: 200, profile: 'mixed', published: 0 })),
      setGenerator: vi.fn(async () => {
        throw err
      }),
    })
    await renderApp(api)
    const rate = screen.getByTestId('generator-rate')
    fireEvent.change(rate, { target: { value: '15000' } })
    fireEvent.blur(rate)
    await settle()
    expect(screen.getByRole('alert')).toHaveTextContent('rate must be in (0, 50000]')
    expect(rate).toHaveValue(200)
    fireEvent.change(rate, { target: { value: '-3' } })
    fireEvent.blur(rate)
    expect(api.setGenerator).toHaveBeenCalledTimes(1) // rejected locally, never sent
  })

  it('has one maximum for box and slider, and asks before a rate above what the bench holds', async () => {
    const api = fakeApi({
      getGenerator: vi.fn(async () => ({ available: true, running: true, rate: 200, profile: 'mixed', published: 0 })),
    })
    await renderApp(api)
    const rate = screen.getByTestId('generator-rate')
    const slider = screen.getByLabelText('Generator rate (logarithmic)')
    expect(Number(rate.max)).toBe(100000)
    expect(10 ** Number(slider.max)).toBeCloseTo(100000)
    fireEvent.change(rate, { target: { value: '150000' } })
    fireEvent.blur(rate)
    expect(screen.getByRole('alert')).toHaveTextContent('from 1 to 100,000')
    fireEvent.change(rate, { target: { value: '50000' } })
    fireEvent.blur(rate)
    expect(screen.getByTestId('generator-confirm')).toHaveTextContent('above the 20,000 events/s')
    expect(api.setGenerator).not.toHaveBeenCalled()
    fireEvent.click(screen.getByTestId('generator-confirm-no'))
    expect(rate).toHaveValue(200)
    fireEvent.change(rate, { target: { value: '50000' } })
    fireEvent.blur(rate)
    fireEvent.click(screen.getByTestId('generator-confirm-yes'))
    await settle()
    expect(api.setGenerator).toHaveBeenCalledWith({ rate: 50000 })
  })
})
