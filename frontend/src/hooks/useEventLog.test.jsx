import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, ev, fakeApi, range } from '../test/fakes.js'
import { LOG_MS, useEventLog } from './useEventLog.js'

function setup({ api = fakeApi(), bufferSize } = {}) {
  const hook = renderHook(() => useEventLog({ api, bufferSize }))
  const log = () => hook.result.current
  const commit = () => act(() => log().commit(Date.now()))
  const catchUp = (reconnect) => act(() => log().catchUp(reconnect))
  return { api, hook, log, commit, catchUp }
}

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME })
})

describe('useEventLog', () => {
  it('add() returns only events it has not seen, and counts only those', () => {
    const { log, commit } = setup()
    expect(log().add(range(1, 3).map((s) => ev(s))).map((e) => e.seq)).toEqual([3, 2, 1])
    expect(log().add(range(2, 5).map((s) => ev(s))).map((e) => e.seq)).toEqual([5, 4])
    commit()
    expect(log()).toMatchObject({ received: 5, eventsReceived: 5, lastSeq: 5 })
    expect(log().events.map((e) => e.seq)).toEqual([5, 4, 3, 2, 1])
  })

  it('publishes counters on every commit but the events at most every LOG_MS', () => {
    const { log, commit } = setup()
    log().add([ev(1)])
    commit()
    log().add([ev(2)])
    act(() => vi.advanceTimersByTime(LOG_MS - 1))
    commit()
    expect(log().received).toBe(2)
    expect(log().events.map((e) => e.seq)).toEqual([1]) // still what the last log commit showed
    expect(log().eventsReceived).toBe(1) // ...and the count that matches it
    act(() => vi.advanceTimersByTime(1))
    commit()
    expect(log().events.map((e) => e.seq)).toEqual([2, 1])
    expect(log().eventsReceived).toBe(2)
  })

  it('keeps only bufferSize events', () => {
    const { log, commit } = setup({ bufferSize: 10 })
    log().add(range(1, 25).map((s) => ev(s)))
    commit()
    expect(log().events.map((e) => e.seq)).toEqual(range(16, 25).reverse())
    expect(log().received).toBe(25)
  })

  it('fills from /recent on the first connect, and asks only for what came after the last seq on a reconnect', async () => {
    const api = fakeApi({ recent: vi.fn(async () => ({ metrics: [ev(7), ev(6)] })) })
    const { log, commit, catchUp } = setup({ api })
    await catchUp(false)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 200 })
    log().add([ev(8)])
    api.recent.mockResolvedValueOnce({ metrics: [ev(10), ev(9)] })
    await catchUp(true)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: 8 })
    act(() => vi.advanceTimersByTime(LOG_MS))
    commit()
    expect(log().events.map((e) => e.seq)).toEqual([10, 9, 8, 7, 6])
    expect(log().gap).toBeNull() // 9 follows 8
  })

  it('adds up the events the server no longer had across outages, until dismissed', async () => {
    const api = fakeApi()
    const { log, commit, catchUp } = setup({ api })
    log().add([ev(10)])
    api.recent.mockResolvedValueOnce({ metrics: [ev(21)] }) // 11..20 are gone
    await catchUp(true)
    api.recent.mockResolvedValueOnce({ metrics: [ev(30)] }) // 22..29 are gone
    await catchUp(true)
    commit()
    expect(log().gap).toMatchObject({ missed: 18 })
    act(() => log().dismissGap())
    expect(log().gap).toBeNull() // at once, without waiting for a commit
  })

  it('retries with the server default limit when 500 is refused, and reports other failures', async () => {
    const api = fakeApi()
    const { log, commit, catchUp } = setup({ api })
    log().add([ev(1)])
    api.recent.mockRejectedValueOnce(Object.assign(new Error('bad limit'), { status: 400 })).mockResolvedValueOnce({ metrics: [ev(2)] })
    await catchUp(true)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: null, after: 1 })
    api.recent.mockRejectedValueOnce(new Error('HTTP 503'))
    await catchUp(true)
    commit()
    expect(log().backfillError).toMatch(/HTTP 503/)
    api.recent.mockResolvedValueOnce({ metrics: [] })
    await catchUp(true)
    commit()
    expect(log().backfillError).toBeNull() // a later catch-up that worked clears it
  })

  it('does not re-render on a commit with nothing new', () => {
    let renders = 0
    const api = fakeApi()
    const hook = renderHook(() => {
      renders += 1
      return useEventLog({ api })
    })
    hook.result.current.add([ev(1)])
    act(() => hook.result.current.commit(Date.now()))
    const before = renders
    act(() => vi.advanceTimersByTime(LOG_MS * 4))
    act(() => hook.result.current.commit(Date.now()))
    expect(renders).toBe(before)
  })
})
