import { describe, expect, it } from 'vitest'
import { EventBuffer, normalizeEvent, normalizeEvents } from './events.js'
import { ev, range } from '../test/fakes.js'

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
