import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, FakeSocket, aggregateBody, ev, fakeApi, fakeIo, partitionedRecent, pev, range } from '../test/fakes.js'
import { FLUSH_MS, HISTORY_SETTLE_MS, LOG_MS, SOCKET_OPTIONS, usePulse } from './usePulse.js'

/** Lets pending promises (REST calls) settle. */
const settle = () => act(async () => {})
const tick = (ms = FLUSH_MS) => act(() => vi.advanceTimersByTime(ms))

function setup({ api = fakeApi(), windowSec = 60 } = {}) {
  const socket = new FakeSocket()
  const io = fakeIo(socket)
  let renders = 0
  const hook = renderHook(
    ({ windowSec: w }) => {
      renders += 1
      return usePulse({ windowSec: w, io, api })
    },
    { initialProps: { windowSec } },
  )
  return { socket, io, api, hook, renders: () => renders }
}

beforeEach(() => {
  vi.useFakeTimers({ now: BASE_TIME + 5000 })
})

describe('usePulse: connection', () => {
  it('opens one websocket-only connection at /socket.io and closes it on unmount', async () => {
    const { io, socket, hook } = setup()
    expect(io).toHaveBeenCalledTimes(1)
    expect(io.mock.calls[0][0]).toMatchObject({ path: '/socket.io', transports: ['websocket'] })
    expect(SOCKET_OPTIONS.transports).toEqual(['websocket'])
    hook.unmount()
    expect(socket.disconnectCalls).toBe(1)
    expect(socket.listenerCount('metrics')).toBe(0)
  })

  it('subscribes in batch mode on connect and again after every reconnect', async () => {
    const { socket } = setup()
    socket.serverConnect()
    expect(socket.subscriptions()).toEqual([{ mode: 'batch', window: 60 }])
    socket.drop()
    socket.reconnectAttempt(1)
    socket.serverConnect()
    expect(socket.subscriptions()).toEqual([
      { mode: 'batch', window: 60 },
      { mode: 'batch', window: 60 },
    ])
    await settle()
  })

  it('resubscribes with the new window when it changes', async () => {
    const { socket, hook, api } = setup()
    socket.serverConnect()
    hook.rerender({ windowSec: 300 })
    expect(socket.subscriptions().at(-1)).toEqual({ mode: 'batch', window: 300 })
    await settle()
    expect(api.aggregate).toHaveBeenCalledWith({ window: 300 })
    expect(api.timeseries).toHaveBeenCalledWith(expect.objectContaining({ window: 300, step: 5 }))
  })

  it('reports connected / reconnecting with the attempt / offline', async () => {
    const { socket, hook } = setup()
    expect(hook.result.current.status).toBe('connecting')
    socket.serverConnect()
    await tick()
    expect(hook.result.current.status).toBe('connected')
    socket.drop('transport close')
    socket.reconnectAttempt(1)
    socket.reconnectAttempt(2)
    socket.reconnectAttempt(3)
    await tick()
    expect(hook.result.current).toMatchObject({ status: 'reconnecting', attempt: 3 })
    socket.io.fire('reconnect_failed')
    await tick()
    expect(hook.result.current.status).toBe('offline')
  })

  it('goes offline with the browser and retries as soon as it is back', async () => {
    const { socket, hook } = setup()
    socket.serverConnect()
    act(() => window.dispatchEvent(new Event('offline')))
    await tick()
    expect(hook.result.current.status).toBe('offline')
    socket.drop()
    socket.reconnectAttempt(4) // backoff keeps going, but the browser says we're offline
    await tick()
    expect(hook.result.current.status).toBe('offline')
    act(() => window.dispatchEvent(new Event('online')))
    await tick()
    expect(hook.result.current.status).toBe('reconnecting')
    expect(socket.connectCalls).toBe(1)
  })

  it('reconnects by itself when the server closes the connection', async () => {
    const { socket } = setup()
    socket.serverConnect()
    socket.drop('io server disconnect')
    expect(socket.connectCalls).toBe(1)
  })
})

describe('usePulse: throttled state', () => {
  it('commits once per flush no matter how many batches arrive', async () => {
    const { socket, hook, renders } = setup()
    socket.serverConnect()
    await settle()
    await tick(1000)
    const before = renders()
    for (const seq of range(1, 300)) socket.send('metrics', [ev(seq)])
    expect(renders()).toBe(before) // handlers only touch refs
    await tick(FLUSH_MS)
    expect(renders()).toBe(before + 1)
    expect(hook.result.current.events).toHaveLength(300)
    expect(hook.result.current.received).toBe(300)
  })

  it('stays at <= ~10 commits a second under a sustained stream', async () => {
    const { socket, hook, renders } = setup()
    socket.serverConnect()
    await settle()
    await tick(1000)
    const before = renders()
    let seq = 0
    for (let i = 0; i < 200; i++) {
      // a 50-event batch every 5 ms = 10k events/s
      socket.send('metrics', range(seq + 1, seq + 50).map((s) => ev(s, { at: 5000 + i * 5 })))
      seq += 50
      act(() => vi.advanceTimersByTime(5))
    }
    expect(renders() - before).toBeLessThanOrEqual(11)
    expect(renders() - before).toBeGreaterThanOrEqual(9)
    expect(hook.result.current.events).toHaveLength(1000) // the log buffer is bounded
    expect(hook.result.current.received).toBe(10_000)
    expect(hook.result.current.ratePerSec).toBeCloseTo(10_000, -2) // 10k/s
    await tick(3500) // the stream stopped: the reading falls to zero
    expect(hook.result.current.ratePerSec).toBe(0)
  })

  it('does not re-render while nothing happens, apart from the 1 Hz chart axis', async () => {
    const { socket, renders } = setup()
    socket.serverConnect()
    await settle()
    await tick(3000)
    const before = renders()
    // One act per flush period: a single act over 5 s would batch every update into one render.
    for (let i = 0; i < 50; i++) await tick(FLUSH_MS)
    expect(renders() - before).toBeLessThanOrEqual(5)
  })
})

describe('usePulse: log cadence', () => {
  it('updates the log at most every LOG_MS while counters keep the 100 ms pace', async () => {
    const { socket, hook } = setup()
    socket.serverConnect()
    await settle()
    await tick(1000)
    const logChanges = []
    let last = hook.result.current.events
    let seq = 0
    for (let i = 0; i < 20; i++) {
      socket.send('metrics', range(seq + 1, seq + 10).map((s) => ev(s)))
      seq += 10
      await tick(FLUSH_MS)
      expect(hook.result.current.received).toBe(seq) // counters: every flush
      if (hook.result.current.events !== last) {
        logChanges.push(i)
        last = hook.result.current.events
      }
    }
    expect(logChanges.length).toBeGreaterThanOrEqual(6) // 2 s at <= 4/s
    expect(logChanges.length).toBeLessThanOrEqual(8)
    await tick(LOG_MS)
    expect(hook.result.current.events).toHaveLength(200) // and it catches up
    expect(hook.result.current.eventsReceived).toBe(200)
  })
})

describe('usePulse: log fill, dedupe and gaps', () => {
  it('fills the log from /recent on first connect and dedupes against live batches', async () => {
    const api = fakeApi({ recent: vi.fn(async () => ({ count: 3, metrics: [ev(12), ev(11), ev(10)] })) })
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    socket.send('metrics', [ev(11), ev(12), ev(13)])
    await settle()
    await tick()
    expect(api.recent).toHaveBeenCalledWith({ limit: 200 })
    expect(hook.result.current.events.map((e) => e.seq)).toEqual([13, 12, 11, 10])
    expect(hook.result.current.received).toBe(4)
    expect(hook.result.current.gap).toBeNull()
  })

  it('after a reconnect fetches what came after the last seq and dedupes by seq', async () => {
    const api = fakeApi()
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    await settle()
    socket.send('metrics', range(1, 100).map((s) => ev(s)))
    socket.drop()
    api.recent.mockImplementation(async () => ({ metrics: range(101, 150).reverse().map((s) => ev(s)) }))
    socket.serverConnect()
    socket.send('metrics', range(140, 155).map((s) => ev(s))) // overlaps the backfill
    await settle()
    await tick()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: 100 })
    const seqs = hook.result.current.events.map((e) => e.seq)
    expect(seqs).toEqual(range(1, 155).reverse())
    expect(new Set(seqs).size).toBe(seqs.length)
    expect(hook.result.current.gap).toBeNull() // 101 follows 100: nothing lost
  })

  it('reports a gap when the server no longer has what was missed', async () => {
    const api = fakeApi()
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    await settle()
    socket.send('metrics', range(1, 100).map((s) => ev(s)))
    socket.drop()
    api.recent.mockImplementation(async () => ({ metrics: range(301, 800).reverse().map((s) => ev(s)) }))
    socket.serverConnect()
    await settle()
    await tick()
    expect(hook.result.current.gap).toMatchObject({ missed: 200 })
    // A second outage adds up rather than replacing the first.
    socket.drop()
    api.recent.mockImplementation(async () => ({ metrics: [ev(900)] }))
    socket.serverConnect()
    await settle()
    await tick()
    expect(hook.result.current.gap).toMatchObject({ missed: 299 })
    act(() => hook.result.current.dismissGap())
    expect(hook.result.current.gap).toBeNull()
  })

  it('a `connected` without partitions keeps the single-number resync of today', async () => {
    const api = fakeApi()
    const { socket } = setup({ api })
    socket.serverConnect()
    socket.send('connected', { msg: 'connected', sid: 's1', modes: ['event', 'batch'] })
    await settle()
    socket.send('metrics', range(1, 10).map((s) => ev(s)))
    socket.drop()
    socket.serverConnect()
    await settle()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: 10 })
  })

  it('with `partitions` in `connected`, resyncs per partition and counts each partition\'s gap', async () => {
    const P = 4
    // Partition 1 runs 100 ms ahead of the others: its n=4 (seq 17) is newer than partition 0's n=6 (seq 24).
    const part = (k, from, to) => range(from, to).map((n) => pev(n, k, P, { at: n * 10 + k + (k === 1 ? 100 : 0) }))
    const api = fakeApi()
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    socket.send('connected', { msg: 'connected', sid: 's1', partitions: P })
    await settle()
    // Batches per partition, interleaved; partition 2 sends nothing.
    socket.send('metrics', part(1, 0, 4))
    socket.send('metrics', part(0, 0, 6))
    socket.send('metrics', part(3, 0, 2))
    socket.drop()
    // Meanwhile partition 0 went on to n=20 of which the server still has n>=10 (n=7..9 lost),
    // partition 1 to n=8 with nothing lost, partition 3 to n=5 with n=3 lost.
    const held = [...part(0, 10, 20), ...part(1, 5, 8), ...part(3, 4, 5)]
    api.recent.mockImplementation(partitionedRecent(held, P))
    socket.serverConnect()
    socket.send('connected', { msg: 'connected', sid: 's2', partitions: P })
    await settle()
    await tick(LOG_MS)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '24,17,11' })
    expect(hook.result.current.gap).toMatchObject({ missed: 3 + 1 })
    const seqs = hook.result.current.events.map((e) => e.seq)
    expect(new Set(seqs).size).toBe(5 + 7 + 3 + held.length)
    expect(hook.result.current.received).toBe(seqs.length)
    // Newest first in time, not by seq (which would put seq 24 above 17, and 80 above 33).
    const times = hook.result.current.events.map((e) => Date.parse(e.ts))
    expect(times).toEqual([...times].sort((a, b) => b - a))
  })

  it('falls back to the server default limit when 500 is rejected', async () => {
    const err = Object.assign(new Error('limit must be an integer in 1..200'), { status: 400 })
    const api = fakeApi()
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    await settle()
    socket.send('metrics', [ev(5)])
    socket.drop()
    api.recent.mockRejectedValueOnce(err).mockResolvedValueOnce({ metrics: [ev(6)] })
    socket.serverConnect()
    await settle()
    await tick()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: null, after: 5 })
    expect(hook.result.current.events[0].seq).toBe(6)
    expect(hook.result.current.backfillError).toBeNull()
  })

  it('says so when the backfill fails instead of pretending the log is complete', async () => {
    const api = fakeApi()
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    await settle()
    socket.send('metrics', [ev(1)])
    socket.drop()
    api.recent.mockRejectedValue(new Error('HTTP 503'))
    socket.serverConnect()
    await settle()
    await tick()
    expect(hook.result.current.backfillError).toMatch(/HTTP 503/)
  })
})

describe('usePulse: aggregates and charts', () => {
  it('takes aggregate ticks for the current window only', async () => {
    const { socket, hook } = setup()
    socket.serverConnect()
    await settle()
    hook.rerender({ windowSec: 300 })
    socket.send('aggregate', aggregateBody(60, { total: 111 })) // in flight from before the change
    await settle()
    socket.send('aggregate', aggregateBody(300, { total: 222 }))
    await tick()
    expect(hook.result.current.aggregate.total.count).toBe(222)
    socket.send('aggregate', aggregateBody(60, { total: 333 }))
    await tick()
    expect(hook.result.current.aggregate.total.count).toBe(222)
  })

  it('loads chart history with one request per series, then keeps it live', async () => {
    const t0 = new Date(BASE_TIME).toISOString()
    const api = fakeApi({
      timeseries: vi.fn(async ({ metric }) => ({
        to: t0,
        points: [{ t: t0, count: metric === 'orders' ? 10 : 30, errors: 0, p50: 1, p95: 2, p99: 3 }],
      })),
    })
    const { socket, hook } = setup({ api })
    socket.serverConnect()
    await settle()
    // total + http_request (which also carries the latency field) + orders
    expect(api.timeseries.mock.calls.map(([a]) => a)).toEqual([
      { window: 60, step: 1 },
      { window: 60, step: 1, metric: 'http_request', field: 'ms' },
      { window: 60, step: 1, metric: 'orders', field: undefined },
    ])
    socket.send('metrics', [ev(1, { at: 5200 })])
    await tick(2000)
    const series = hook.result.current.series
    expect(series.metrics).toEqual(['http_request', 'orders'])
    expect(series.latencyField).toEqual({ metric: 'http_request', field: 'ms' })
    expect(series.throughput.http_request.find((p) => p.x === BASE_TIME).y).toBe(30)
    expect(series.throughput.http_request.find((p) => p.x === BASE_TIME + 5000).y).toBe(1)
  })

  it('reloads history after a reconnect, and once more a step after loading', async () => {
    const { socket, api, hook } = setup()
    await settle()
    const totalCalls = () => api.timeseries.mock.calls.filter(([a]) => !a.metric).length
    expect(totalCalls()).toBe(1)
    await tick(1000 + HISTORY_SETTLE_MS) // step (1 s) + time for the server to aggregate it
    await settle()
    expect(totalCalls()).toBe(2)
    await tick(10_000)
    await settle()
    expect(totalCalls()).toBe(2) // once, not a poll
    socket.serverConnect()
    socket.drop()
    socket.serverConnect()
    await settle()
    expect(totalCalls()).toBe(3)
    hook.unmount()
    await tick(10_000)
    await settle()
    expect(totalCalls()).toBe(3) // nothing left scheduled after unmount
  })

  it("puts the charts' right edge on the server's clock, not the browser's", async () => {
    const { socket, hook } = setup()
    socket.serverConnect()
    await settle()
    // The browser's clock is 30 s ahead of the server's.
    socket.send('metrics', range(1, 20).map((s) => ev(s, { at: 5000 - 30_000 + s })))
    socket.send('metrics', [ev(21, { at: -3_600_000 })]) // one producer backfilling old events
    socket.send('metrics', range(22, 30).map((s) => ev(s, { at: 5000 - 30_000 + s })))
    socket.send('metrics', range(31, 40).map((s) => ev(s, { at: 5000 - 30_000 + s })))
    await tick()
    expect(hook.result.current.series.to).toBeGreaterThan(Date.now() - 30_500)
    expect(hook.result.current.series.to).toBeLessThan(Date.now() - 29_500)
  })

  it('passes on generator state pushed by the server', async () => {
    const { socket, hook } = setup()
    socket.send('generator', { available: true, running: true, rate: 250 })
    await tick()
    expect(hook.result.current.generator).toMatchObject({ running: true, rate: 250 })
  })
})
