import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, FakeSocket, aggregateBody, alertBody, ev, fakeApi, fakeIo, range } from '../test/fakes.js'
import { FLUSH_MS, usePulse } from './usePulse.js'

const settle = () => act(async () => {})
const tick = (ms = FLUSH_MS) => act(() => vi.advanceTimersByTime(ms))

function setup(api = fakeApi()) {
  const socket = new FakeSocket()
  const io = fakeIo(socket)
  const hook = renderHook(() => usePulse({ windowSec: 60, io, api }))
  return { socket, io, api, hook, alerts: () => hook.result.current.alerts }
}

const ids = (alerts) => alerts.items.map((a) => a.id)

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
})

describe('usePulse: alerts', () => {
  it('loads all alerts on connect, then applies `alert` events on the same connection', async () => {
    const api = fakeApi({ alerts: vi.fn(async () => ({ count: 1, state: 'all', alerts: [alertBody({ id: 'old' })] })) })
    const { socket, io, alerts } = setup(api)
    expect(alerts()).toMatchObject({ items: [], loaded: false })
    socket.serverConnect()
    await settle()
    await tick()
    expect(api.alerts).toHaveBeenCalledWith({ state: 'all', limit: 50 })
    expect(ids(alerts())).toEqual(['old'])
    expect(alerts().loaded).toBe(true)

    socket.send('alert', alertBody({ id: 'new', severity: 'critical', at: 9 }))
    await tick()
    expect(ids(alerts())).toEqual(['new', 'old']) // critical first
    const closed = { ...alertBody({ id: 'new', severity: 'critical', at: 9 }), state: 'closed' }
    socket.send('alert', { ...closed, updated_at: new Date(BASE_TIME + 20_000).toISOString() })
    await tick()
    expect(ids(alerts())).toEqual(['old', 'new'])
    expect(alerts().items[1].state).toBe('closed')
    expect(io).toHaveBeenCalledTimes(1) // no second connection for alerts
  })

  it('refetches the list after a reconnect: what changed while away shows up', async () => {
    const api = fakeApi()
    const { socket, alerts } = setup(api)
    socket.serverConnect()
    await settle()
    socket.send('alert', alertBody({ id: 'a' }))
    await tick()
    socket.drop()
    // Meanwhile `a` closed and `b` opened; the pushes went to nobody.
    api.alerts.mockResolvedValue({
      count: 2,
      state: 'all',
      alerts: [alertBody({ id: 'b', at: 20 }), alertBody({ id: 'a', state: 'closed' })],
    })
    socket.serverConnect()
    await settle()
    await tick()
    expect(api.alerts).toHaveBeenCalledTimes(2)
    expect(alerts().items.map((a) => [a.id, a.state])).toEqual([
      ['b', 'open'],
      ['a', 'closed'],
    ])
  })

  it('says so when the list cannot be loaded, and keeps what was pushed', async () => {
    const api = fakeApi({ alerts: vi.fn(async () => Promise.reject(new Error('HTTP 503'))) })
    const { socket, alerts } = setup(api)
    socket.serverConnect()
    socket.send('alert', alertBody({ id: 'pushed' }))
    await settle()
    await tick()
    expect(alerts().error).toMatch(/Could not load alerts \(HTTP 503\)/)
    expect(ids(alerts())).toEqual(['pushed'])
  })

  it('keeps `alerts` the same object while only events and aggregates arrive', async () => {
    const { socket, alerts, hook } = setup()
    socket.serverConnect()
    await settle()
    await tick()
    const before = alerts()
    for (let i = 0; i < 5; i++) {
      socket.send('metrics', range(i * 100 + 1, i * 100 + 100).map((s) => ev(s, { at: 1000 + s })))
      socket.send('aggregate', aggregateBody(60, { total: 100 * (i + 1) }))
      await tick()
    }
    expect(hook.result.current.aggregate.total.count).toBe(500) // the snapshot did move on
    expect(alerts()).toBe(before)
    socket.send('alert', alertBody({ id: 'x' }))
    await tick()
    expect(alerts()).not.toBe(before)
  })

  it('upsertAlert applies an ack answer at once, and a late stale push cannot undo it', async () => {
    const { socket, alerts, hook } = setup()
    socket.serverConnect()
    await settle()
    socket.send('alert', alertBody({ id: 'a' }))
    await tick()
    const acked = { ...alertBody({ id: 'a' }), acked: true, updated_at: new Date(BASE_TIME + 3000).toISOString() }
    act(() => hook.result.current.upsertAlert(acked))
    expect(alerts().items[0].acked).toBe(true) // no flush needed
    socket.send('alert', alertBody({ id: 'a' }))
    await tick()
    expect(alerts().items[0].acked).toBe(true)
  })

  it('stops listening for alerts on unmount', async () => {
    const { socket, hook } = setup()
    socket.serverConnect()
    await settle()
    expect(socket.listenerCount('alert')).toBe(1)
    hook.unmount()
    expect(socket.listenerCount('alert')).toBe(0)
  })
})
