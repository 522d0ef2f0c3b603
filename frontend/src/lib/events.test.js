import { describe, expect, it } from 'vitest'
import { EventBuffer, normalizeEvent, normalizeEvents, partitionOf, partitionsOf } from './events.js'
import { ev, pev, range } from '../test/fakes.js'

describe('normalizeEvent', () => {
  it('keeps documented fields and coerces their types', () => {
    const e = normalizeEvent({ id: 7, seq: '12', metric: 5, value: { ms: 3 }, ts: 'x', status: 'weird', tags: { a: 1 }, extra: 'dropped' })
    expect(e).toEqual({ id: '7', seq: 12, metric: '5', value: { ms: 3 }, ts: 'x', status: 'ok', tags: { a: '1' } })
  })

  it('drops events without a usable seq', () => {
    expect(normalizeEvent({ metric: 'a' })).toBeNull()
    expect(normalizeEvent({ seq: 'NaN' })).toBeNull()
    expect(normalizeEvent(null)).toBeNull()
    expect(normalizeEvents([{ seq: 1 }, 'junk', { seq: null }]).map((e) => e.seq)).toEqual([1])
  })

  it('accepts a single object where a list was expected', () => {
    expect(normalizeEvents({ seq: 3, metric: 'm' })).toHaveLength(1)
    expect(normalizeEvents(undefined)).toEqual([])
  })
})

describe('EventBuffer', () => {
  it('keeps events newest first and reports only the new ones', () => {
    const buf = new EventBuffer(10)
    expect(buf.add([ev(1), ev(2), ev(3)]).map((e) => e.seq)).toEqual([3, 2, 1])
    expect(buf.add([ev(3), ev(4)]).map((e) => e.seq)).toEqual([4])
    expect(buf.items.map((e) => e.seq)).toEqual([4, 3, 2, 1])
    expect(buf.maxSeq).toBe(4)
  })

  it('dedupes by seq and merges an older backfill into order', () => {
    const buf = new EventBuffer(100)
    buf.add(range(20, 25).map((s) => ev(s)))
    const fresh = buf.add(range(15, 22).map((s) => ev(s)).reverse()) // newest first, like the REST API
    expect(fresh.map((e) => e.seq)).toEqual([19, 18, 17, 16, 15])
    expect(buf.items.map((e) => e.seq)).toEqual(range(15, 25).reverse())
  })

  it('is capped, forgetting the oldest', () => {
    const buf = new EventBuffer(5)
    buf.add(range(1, 8).map((s) => ev(s)))
    expect(buf.items.map((e) => e.seq)).toEqual([8, 7, 6, 5, 4])
    // Older than everything held while full: not kept, not counted as new.
    expect(buf.add([ev(2)])).toEqual([])
    // The trimmed seqs are forgotten, so the set doesn't grow without bound.
    expect(buf.seqs.size).toBe(5)
  })

  it('replaces the array on change so React sees a new value', () => {
    const buf = new EventBuffer(5)
    buf.add([ev(1)])
    const before = buf.items
    buf.add([ev(2)])
    expect(buf.items).not.toBe(before)
    const same = buf.items
    buf.add([ev(2)])
    expect(buf.items).toBe(same)
  })
})

describe('EventBuffer with ingest partitions', () => {
  const P = 3

  it('partitionsOf takes a whole number >= 1 from the connected payload, else 1', () => {
    expect(partitionsOf({ msg: 'connected', sid: 'x', partitions: 4 })).toBe(4)
    expect(partitionsOf({ msg: 'connected', sid: 'x' })).toBe(1)
    expect(partitionsOf({ partitions: '3' })).toBe(3) // a numeric string, as a seq may be
    for (const bad of [0, -2, 2.5, '', null, 'lots', {}]) expect(partitionsOf({ partitions: bad })).toBe(1)
    expect(partitionsOf(undefined)).toBe(1)
    expect(partitionOf(3 * 7 + 2, 3)).toBe(2)
    expect(partitionOf(22, 1)).toBe(0)
  })

  it('after() is the newest seq with one partition, one seq per partition seen with several', () => {
    const buf = new EventBuffer(100)
    expect(buf.after()).toBeNull()
    buf.add([ev(4), ev(9), ev(2)])
    expect(buf.after()).toBe(9)
    expect(buf.after()).toBe(buf.maxSeq)
    buf.setPartitions(P) // 9 -> partition 0, 4 -> 1, 2 -> 2
    expect(buf.after()).toBe('9,4,2')
    buf.add([pev(5, 1, P), pev(4, 0, P)]) // 16 (partition 1) and 12 (partition 0)
    expect(buf.after()).toBe('12,16,2')
  })

  it('keeps ts-then-seq order across interleaved partitions, merges and caps by it', () => {
    const buf = new EventBuffer(4)
    buf.setPartitions(P)
    // Partition 2 runs behind in seq but ahead in time.
    buf.add([pev(0, 2, P, { at: 50 }), pev(1, 2, P, { at: 60 })]) // seqs 2, 5
    buf.add([pev(3, 0, P, { at: 10 }), pev(4, 0, P, { at: 55 })]) // seqs 9, 12
    expect(buf.items.map((e) => e.seq)).toEqual([5, 12, 2, 9])
    // Full: an event older (in time) than all held is not kept, whatever its seq...
    expect(buf.add([pev(9, 1, P, { at: 5 })])).toEqual([])
    // ...and a newer one pushes out the oldest in time, not the smallest seq.
    expect(buf.add([pev(2, 1, P, { at: 52 })]).map((e) => e.seq)).toEqual([7])
    expect(buf.items.map((e) => e.seq)).toEqual([5, 12, 7, 2])
    expect([...buf.seqs].sort((a, b) => a - b)).toEqual([2, 5, 7, 12])
    // The same time in two partitions: the larger seq first.
    buf.add([pev(8, 0, P, { at: 70 }), pev(9, 2, P, { at: 70 })]) // seqs 24, 29
    expect(buf.items.map((e) => e.seq)).toEqual([29, 24, 5, 12])
    expect(buf.maxSeq).toBe(29)
  })

  it('re-orders what it holds when the partition count changes, as a new array', () => {
    const buf = new EventBuffer(10)
    buf.add([ev(1, { at: 30 }), ev(2, { at: 10 }), ev(3, { at: 20 })])
    expect(buf.items.map((e) => e.seq)).toEqual([3, 2, 1])
    const before = buf.items
    expect(buf.setPartitions(P)).toBe(true)
    expect(buf.items.map((e) => e.seq)).toEqual([1, 3, 2])
    expect(buf.items).not.toBe(before)
    expect(buf.setPartitions(P)).toBe(false)
    buf.setPartitions(1)
    expect(buf.items.map((e) => e.seq)).toEqual([3, 2, 1])
  })
})
