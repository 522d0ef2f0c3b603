import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { BASE_TIME, ev, fakeApi, partitionedRecent, pev, range } from '../test/fakes.js'
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

describe('useEventLog with ingest partitions', () => {
  const P = 4
  /** Partition k's events n = from..to. */
  const part = (k, from, to) => range(from, to).map((n) => pev(n, k, P))

  it('with one partition (a `connected` without `partitions`) asks after=<newest seq>, a single number, as before', async () => {
    const api = fakeApi()
    const { log, catchUp } = setup({ api })
    act(() => log().setPartitions(1))
    log().add([ev(8), ev(3), ev(5)])
    await catchUp(true)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: 8 })
  })

  it('with P = 4 names the newest seq seen of each partition it has seen, by partition', async () => {
    const api = fakeApi()
    const { log, commit, catchUp } = setup({ api, bufferSize: 8 })
    act(() => log().setPartitions(P))
    // Partitions interleave: partition 3 is quiet (old timestamps) and its newest seq (11) is
    // below the others'.
    log().add([...range(0, 2).map((n) => pev(n, 3, P, { at: n })), ...part(0, 0, 5)])
    log().add(part(1, 0, 5))
    act(() => vi.advanceTimersByTime(LOG_MS))
    commit()
    // bufferSize 8 no longer holds partition 3's events; it has still seen them.
    expect(log().events.filter((e) => e.seq % P === 3)).toEqual([])
    await catchUp(true)
    // 0: n=5 -> 20, 1: n=5 -> 21, 3: n=2 -> 11; partition 2 never seen, so not named
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '20,21,11' })
  })

  it('learns the partition count after the first fill and still names every partition in it', async () => {
    const fill = [...part(0, 0, 3), ...part(1, 0, 1), ...part(2, 0, 4)]
    const api = fakeApi({ recent: vi.fn(partitionedRecent(fill, P)) })
    const { log, catchUp } = setup({ api })
    await catchUp(false) // the fill can land before the `connected` payload
    act(() => log().setPartitions(P))
    await catchUp(true)
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '12,5,18' })
  })

  it('counts a gap per partition: (oldest returned - newest seen) / P - 1, summed, and adds up across outages', async () => {
    const seen = [...part(0, 0, 2), ...part(1, 0, 3), ...part(3, 0, 1)]
    // What the server still holds: partition 0 lost n=3,4; partition 1 lost nothing; partition 2
    // (never seen, so its whole history comes back) can't count as missed; partition 3 lost n=2,3.
    const held = [...part(0, 5, 9), ...part(1, 4, 9), ...part(2, 0, 9), ...part(3, 4, 9)]
    const api = fakeApi({ recent: vi.fn(partitionedRecent(held, P)) })
    const { log, commit, catchUp } = setup({ api })
    act(() => log().setPartitions(P))
    log().add(seen)
    await catchUp(true)
    commit()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '8,13,7' })
    expect(log().gap).toMatchObject({ missed: 4 })
    expect(log().received).toBe(seen.length + held.length)

    // Second outage: partition 2 continues seamlessly, partition 1 loses n=10..12.
    api.recent.mockImplementation(partitionedRecent([...part(1, 13, 14), ...part(2, 10, 11)], P))
    await catchUp(true)
    commit()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '36,37,38,39' })
    expect(log().gap).toMatchObject({ missed: 7 })
  })

  it('no gap when each partition continues where the client left it, however far apart the partitions are', async () => {
    const all = [...part(0, 0, 9), ...part(1, 0, 3), ...part(2, 0, 6)]
    const api = fakeApi({ recent: vi.fn(partitionedRecent(all, P)) })
    const { log, commit, catchUp } = setup({ api })
    act(() => log().setPartitions(P))
    log().add([...part(0, 0, 2), ...part(1, 0, 2), ...part(2, 0, 2)])
    await catchUp(true)
    commit()
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '8,9,10' })
    // P = 1's rule (oldest returned 12 > newest seen 10 + 1) would report a loss; per partition
    // each one's first returned event is exactly P above the newest seen of it.
    expect(log().gap).toBeNull()
    expect(log().received).toBe(all.length)
  })

  it('dedupes by seq across partitions: an overlapping resync adds only what is new', async () => {
    const all = [...part(0, 0, 6), ...part(1, 0, 6), ...part(2, 0, 6)]
    const api = fakeApi({ recent: vi.fn(partitionedRecent(all, P)) })
    const { log, commit } = setup({ api })
    act(() => log().setPartitions(P))
    // Live batches that arrived after the reconnect, before the resync answered: each partition
    // is already ahead of what the request names.
    log().add(part(0, 0, 3))
    log().add(part(1, 0, 3))
    const live = [...part(0, 4, 6), ...part(2, 5, 6)]
    const request = act(() => log().catchUp(true))
    expect(api.recent).toHaveBeenLastCalledWith({ limit: 500, after: '12,13' })
    expect(log().add(live).map((e) => e.seq).sort((a, b) => a - b)).toEqual(live.map((e) => e.seq).sort((a, b) => a - b))
    await request
    act(() => vi.advanceTimersByTime(LOG_MS))
    commit()
    const seqs = log().events.map((e) => e.seq)
    expect(new Set(seqs).size).toBe(seqs.length)
    expect(seqs.sort((a, b) => a - b)).toEqual(all.map((e) => e.seq).sort((a, b) => a - b))
    expect(log().received).toBe(all.length)
  })

  it('orders the log by ts then seq with P > 1, by seq alone with P = 1', () => {
    // Seqs of different partitions say nothing about which came first: seq 5 is the newest.
    const events = [pev(5, 0, P, { at: 100 }), pev(1, 1, P, { at: 300 }), pev(2, 2, P, { at: 100 }), pev(3, 3, P, { at: 200 })]
    const one = setup()
    one.log().add(events)
    one.commit()
    expect(one.log().events.map((e) => e.seq)).toEqual([20, 15, 10, 5])

    const many = setup()
    act(() => many.log().setPartitions(P))
    many.log().add(events.slice(0, 2))
    many.log().add(events.slice(2))
    many.commit()
    expect(many.log().events.map((e) => e.seq)).toEqual([5, 15, 20, 10]) // 300, 200, then 100 twice: seq 20 above 10
  })
})
