import { act, fireEvent, render, screen, within } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { TagCatalog } from '../lib/tags.js'
import { ev, fakeApi } from '../test/fakes.js'
import { TOP_POLL_MS, TopPanel } from './TopPanel.jsx'

const settle = () => act(async () => {})
const tick = (ms) => act(() => vi.advanceTimersByTime(ms))

function catalogOf(events) {
  const c = new TagCatalog()
  c.observe(events)
  return c.snapshot()
}

const CATALOG = catalogOf([
  ev(1, { tags: { endpoint: '/a', method: 'GET', region: 'eu' } }),
  ev(2, { metric: 'orders', tags: { currency: 'EUR', payment: 'card' } }),
])

const row = (value, count, errors = 0, p95 = 100) => ({
  value,
  count,
  errors,
  error_rate: count ? errors / count : 0,
  rate_per_sec: count / 60,
  p95,
})

function topBody(params, { top, other = null, distinct } = {}) {
  const rows = top ?? [row('/api/products', 400, 4), row('/api/cart', 100, 20, 850.5)]
  return {
    window_seconds: params.window,
    metric: params.metric || null,
    by: params.by,
    order: params.order,
    field: 'ms',
    n: 10,
    distinct: distinct ?? rows.length,
    top: rows,
    other,
  }
}

function setup({ api = fakeApi({ top: vi.fn(async (p) => topBody(p)) }), catalog = CATALOG, windowSec = 60 } = {}) {
  const view = render(<TopPanel api={api} windowSec={windowSec} catalog={catalog} />)
  return { api, ...view }
}

const lastParams = (api) => api.top.mock.calls.at(-1)[0]

beforeEach(() => {
  vi.useFakeTimers()
})

describe('TopPanel', () => {
  it('offers the tag keys seen in events, starting with endpoint, and ranks its values', async () => {
    const { api } = setup()
    const tag = screen.getByTestId('top-tag')
    expect([...tag.options].map((o) => o.value)).toEqual(['currency', 'endpoint', 'method', 'payment', 'region'])
    expect(tag).toHaveValue('endpoint')
    await settle()
    expect(lastParams(api)).toEqual({ by: 'endpoint', window: 60, metric: '', n: 10, order: 'count' })
    const rows = screen.getAllByTestId('top-row')
    expect(rows.map((r) => r.querySelector('th').textContent)).toEqual(['/api/products', '/api/cart'])
    expect(rows[0]).toHaveTextContent('400')
    expect(rows[1]).toHaveTextContent('20 (20%)')
    expect(rows[1]).toHaveTextContent('850.5 ms')
    // Bars share the count: the biggest fills its track.
    const width = (r) => r.querySelector('.share-bar').style.getPropertyValue('--share')
    expect(rows.map(width)).toEqual(['100%', '25%'])
    expect(screen.getByText(/2 distinct values/)).toBeInTheDocument()
  })

  it('narrows tags to the chosen metric, and sends metric, tag and order', async () => {
    const { api } = setup()
    await settle()
    fireEvent.change(screen.getByTestId('top-metric'), { target: { value: 'orders' } })
    const tag = screen.getByTestId('top-tag')
    expect([...tag.options].map((o) => o.value)).toEqual(['currency', 'payment'])
    expect(tag).toHaveValue('currency') // endpoint doesn't exist on orders
    await settle()
    expect(lastParams(api)).toMatchObject({ by: 'currency', metric: 'orders', order: 'count' })
    fireEvent.change(tag, { target: { value: 'payment' } })
    fireEvent.change(screen.getByTestId('top-order'), { target: { value: 'errors' } })
    await settle()
    expect(lastParams(api)).toMatchObject({ by: 'payment', metric: 'orders', order: 'errors' })
    expect([...screen.getByTestId('top-order').options].map((o) => o.textContent)).toEqual([
      'Most events',
      'Most errors',
      'Slowest p95',
    ])
  })

  it('shows values past the per-tag limit as a separate grey row', async () => {
    const api = fakeApi({ top: vi.fn(async (p) => topBody(p, { top: [row('u1', 10)], other: row('__other__', 70) })) })
    setup({ api })
    await settle()
    const other = screen.getByTestId('top-other')
    expect(other).toHaveClass('top-other')
    expect(other).toHaveTextContent('other values')
    expect(other).toHaveTextContent('70')
    expect(other).not.toHaveTextContent('__other__')
    const rows = within(screen.getByTestId('top-table')).getAllByRole('row')
    expect(rows.at(-1)).toBe(other) // after the ranked ones
  })

  it('polls every few seconds with one request at a time, and stops when unmounted', async () => {
    let release
    const api = fakeApi({
      top: vi.fn(
        (p) =>
          new Promise((resolve) => {
            release = () => resolve(topBody(p))
          }),
      ),
    })
    const { unmount } = setup({ api })
    expect(api.top).toHaveBeenCalledTimes(1)
    await tick(TOP_POLL_MS * 3) // the server is slow: no pile-up
    expect(api.top).toHaveBeenCalledTimes(1)
    release()
    await settle()
    await tick(TOP_POLL_MS)
    expect(api.top).toHaveBeenCalledTimes(2)
    release()
    await settle()
    unmount()
    await tick(TOP_POLL_MS * 5)
    expect(api.top).toHaveBeenCalledTimes(2)
  })

  it('asks again at once for a new window', async () => {
    const { api, rerender } = setup()
    await settle()
    rerender(<TopPanel api={api} windowSec={300} catalog={CATALOG} />)
    await settle()
    expect(lastParams(api)).toMatchObject({ window: 300 })
    expect(screen.getByText(/last 5 m/)).toBeInTheDocument()
  })

  it('says when top-N is off on the server (409) and when a parameter is refused (400)', async () => {
    const off = Object.assign(new Error('per-tag counters are off (TOP_MAX_TAG_VALUES=0)'), { status: 409 })
    const api = fakeApi({ top: vi.fn(async () => Promise.reject(off)) })
    const { unmount } = setup({ api })
    await settle()
    expect(screen.getByTestId('top-error')).toHaveTextContent(
      'Top-N is turned off on this server: per-tag counters are off (TOP_MAX_TAG_VALUES=0).',
    )
    expect(screen.queryByTestId('top-table')).toBeNull()
    unmount()

    const bad = Object.assign(new Error('by must match [A-Za-z0-9_.:-]{1,100}'), { status: 400 })
    setup({ api: fakeApi({ top: vi.fn(async () => Promise.reject(bad)) }) })
    await settle()
    expect(screen.getByRole('alert')).toHaveTextContent('Could not load the top values: by must match')
  })

  it('waits for tagged events before asking anything', async () => {
    const api = fakeApi()
    setup({ api, catalog: catalogOf([ev(1)]) })
    await tick(TOP_POLL_MS * 2)
    expect(api.top).not.toHaveBeenCalled()
    expect(screen.getByText(/No tagged events yet/)).toBeInTheDocument()
    expect(screen.getByTestId('top-tag')).toBeDisabled()
  })

  it('says so when nothing matches the ranking', async () => {
    setup({ api: fakeApi({ top: vi.fn(async (p) => topBody(p, { top: [] })) }) })
    await settle()
    fireEvent.change(screen.getByTestId('top-order'), { target: { value: 'errors' } })
    await settle()
    expect(screen.getByText('No errors with this tag in the window.')).toBeInTheDocument()
  })
})
