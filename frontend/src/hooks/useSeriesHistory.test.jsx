import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, aggregateBody, ev, fakeApi } from '../test/fakes.js'
import { HISTORY_SETTLE_MS, SERIES_MS, useSeriesHistory } from './useSeriesHistory.js'

const settle = () => act(async () => {})

/** Stands in for useLiveStats: what the history reads from and hands to the live numbers. */
function fakeAggregates(current = null) {
  return { currentAggregate: vi.fn(() => current), seedAggregate: vi.fn() }
}

function setup({ api = fakeApi(), aggregates = fakeAggregates(), windowSec = 60 } = {}) {
  let renders = 0
  const hook = renderHook(
    ({ w }) => {
      renders += 1
      return useSeriesHistory({ api, windowSec: w, aggregates })
    },
    { initialProps: { w: windowSec } },
  )
  const history = () => hook.result.current
  const commit = (offset = 0) => act(() => history().commit(Date.now(), offset))
  return { api, aggregates, hook, history, commit, renders: () => renders }
}

const totalCalls = (api) => api.timeseries.mock.calls.filter(([a]) => !a.metric).length

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
})

describe('useSeriesHistory', () => {
  it("loads the window's history, one request per busy metric, and hands the aggregate to the live numbers", async () => {
    const { api, aggregates, history, commit } = setup()
    await settle()
    expect(api.aggregate).toHaveBeenCalledWith({ window: 60 })
    expect(aggregates.seedAggregate).toHaveBeenCalledWith(aggregateBody(60))
    expect(api.timeseries.mock.calls.map(([a]) => a.metric)).toEqual([undefined, 'http_request', 'orders'])
    commit()
    expect(history().series).toMatchObject({ windowSec: 60, latencyField: { metric: 'http_request', field: 'ms' } })
  })

  it('ignores a slow answer for a window that is no longer shown', async () => {
    let answer
    const api = fakeApi({ aggregate: vi.fn(() => new Promise((resolve) => (answer = resolve))) })
    const { hook, aggregates, history, commit } = setup({ api })
    const first = answer
    hook.rerender({ w: 300 })
    first(aggregateBody(60)) // the 60 s window's answer arrives after the change
    await settle()
    expect(aggregates.seedAggregate).not.toHaveBeenCalled()
    answer(aggregateBody(300))
    await settle()
    expect(aggregates.seedAggregate).toHaveBeenCalledWith(aggregateBody(300))
    commit()
    expect(history().series.windowSec).toBe(300)
  })

  it('reloads once a step after loading (the bucket in progress settles), not periodically', async () => {
    const { api, hook } = setup()
    await settle()
    expect(totalCalls(api)).toBe(1)
    await act(() => vi.advanceTimersByTime(1000 + HISTORY_SETTLE_MS))
    await settle()
    expect(totalCalls(api)).toBe(2)
    await act(() => vi.advanceTimersByTime(60_000))
    await settle()
    expect(totalCalls(api)).toBe(2)
    await act(() => hook.result.current.reload()) // what a reconnect does
    await settle()
    expect(totalCalls(api)).toBe(3)
    hook.unmount()
    await act(() => vi.advanceTimersByTime(60_000))
    expect(totalCalls(api)).toBe(3) // nothing scheduled survives unmount
  })

  it('publishes ingested events at most every SERIES_MS, and at least every second otherwise', async () => {
    const { history, commit, renders } = setup()
    await settle()
    commit()
    const loaded = history().series
    history().ingest([ev(1, { at: 3000 })]) // 2 s ago: a bucket complete enough to plot
    act(() => vi.advanceTimersByTime(SERIES_MS - 100))
    commit()
    expect(history().series).toBe(loaded) // too soon
    act(() => vi.advanceTimersByTime(100))
    commit()
    expect(history().series).not.toBe(loaded)
    expect(history().series.throughput.http_request.find((p) => p.x === BASE_TIME + 3000).y).toBe(1)
    const shown = history().series
    const before = renders()
    act(() => vi.advanceTimersByTime(SERIES_MS))
    commit()
    expect(history().series).toBe(shown) // nothing new: no redraw at the fast pace...
    expect(renders()).toBe(before)
    act(() => vi.advanceTimersByTime(1000 - SERIES_MS))
    commit()
    expect(history().series).not.toBe(shown) // ...but the time axis still slides once a second
  })

  it("puts the snapshot's right edge on the events' clock", async () => {
    const { history, commit } = setup()
    await settle()
    commit(30_000) // the browser is 30 s ahead
    expect(history().series.to).toBeLessThanOrEqual(Date.now() - 30_000)
    expect(history().series.to).toBeGreaterThan(Date.now() - 31_000)
  })
})
