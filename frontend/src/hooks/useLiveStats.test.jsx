import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, aggregateBody, ev, range } from '../test/fakes.js'
import { useLiveStats } from './useLiveStats.js'

function setup(windowSec = 60) {
  let renders = 0
  const hook = renderHook(
    ({ w }) => {
      renders += 1
      return useLiveStats({ windowSec: w })
    },
    { initialProps: { w: windowSec } },
  )
  const live = () => hook.result.current
  const commit = (status = 'connected') => act(() => live().commit(Date.now(), status))
  return { hook, live, commit, renders: () => renders }
}

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
})

describe('useLiveStats', () => {
  it('takes aggregates for its window only, and forgets the old one when the window changes', () => {
    const { hook, live, commit } = setup(60)
    expect(live().takeAggregate(aggregateBody(60, { total: 10 }))).toBe(true)
    commit()
    expect(live().aggregate.total.count).toBe(10)
    expect(live().aggregateAt).toBe(Date.now())
    hook.rerender({ w: 300 })
    commit()
    expect(live().aggregate).toBeNull()
    expect(live().takeAggregate(aggregateBody(60, { total: 20 }))).toBe(false) // still in flight
    expect(live().takeAggregate('nonsense')).toBe(false)
    expect(live().takeAggregate(aggregateBody(300, { total: 30 }))).toBe(true)
    commit()
    expect(live().aggregate.total.count).toBe(30)
  })

  it('shows a REST aggregate only until there is one, and dates it', () => {
    const { live, commit } = setup()
    live().seedAggregate(aggregateBody(60, { total: 1 }))
    live().seedAggregate(aggregateBody(60, { total: 2 })) // one is shown: not replaced
    commit()
    expect(live().aggregate.total.count).toBe(1)
    expect(live().aggregateAt).toBe(Date.now())
    expect(live().currentAggregate().total.count).toBe(1)
  })

  it('marks the numbers stale when disconnected or quiet for longer than the window, and fresh again', () => {
    const { live, commit } = setup(10)
    live().takeAggregate(aggregateBody(10))
    const at = Date.now()
    commit('connected')
    expect(live().stale).toBeNull()
    commit('reconnecting')
    expect(live().stale).toMatchObject({ reason: 'not connected', since: at })
    commit('connected')
    expect(live().stale).toBeNull()
    act(() => vi.advanceTimersByTime(10_001))
    commit('connected')
    expect(live().stale).toMatchObject({ reason: 'no update', since: at })
    live().setServerStatus({ redis: 'down', worker: 'weird', since: new Date(at + 3000).toISOString() })
    commit('connected')
    expect(live().serverStatus).toEqual({ redis: 'down', worker: 'up', since: new Date(at + 3000).toISOString() })
    expect(live().stale).toMatchObject({ reason: 'Redis down', since: at + 3000 })
  })

  it('measures the rate on the events\' clock, and starts over after a disconnect', () => {
    const { live, commit } = setup()
    // 1000 events/s for 3 s, stamped 30 s behind the browser's clock
    for (let i = 0; i < 30; i++) {
      live().observe(range(i * 100 + 1, i * 100 + 100).map((s) => ev(s, { at: 5000 - 30_000 + i * 100 + (s % 100) })), Date.now())
      act(() => vi.advanceTimersByTime(100))
    }
    expect(live().clockOffset()).toBeGreaterThan(29_500)
    expect(live().clockOffset()).toBeLessThan(30_500)
    commit()
    expect(live().ratePerSec).toBeCloseTo(1000, -2)
    live().pauseRate()
    commit()
    expect(live().ratePerSec).toBeNull()
  })

  it('keeps the clock estimate when one producer sends old timestamps', () => {
    const { live } = setup()
    for (let i = 0; i < 10; i++) live().observe([ev(i, { at: 5000 - 2000 })], Date.now())
    live().observe([ev(99, { at: -3_600_000 })], Date.now())
    expect(live().clockOffset()).toBe(2000)
  })

  it('re-renders on commit only when something it shows changed', () => {
    const { live, commit, renders } = setup()
    live().setGenerator({ running: true, rate: 5 })
    live().setGenerator(null) // ignored
    commit()
    expect(live().generator).toEqual({ running: true, rate: 5 })
    const before = renders()
    for (let i = 0; i < 5; i++) commit()
    expect(renders()).toBe(before)
  })
})
