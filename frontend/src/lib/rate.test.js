import { describe, expect, it } from 'vitest'
import { RateMeter } from './rate.js'
import { BASE_TIME, ev } from '../test/fakes.js'

/** n events evenly stamped over [from, to) ms after BASE_TIME. */
const stamped = (n, from, to, seq0 = 0) => Array.from({ length: n }, (_, i) => ev(seq0 + i, { at: from + ((to - from) * i) / n }))

describe('RateMeter', () => {
  it('measures by timestamps, however the events were batched', () => {
    const m = new RateMeter()
    // 300/s for 4 s, delivered as one backlog lump and a few uneven batches.
    m.add(stamped(900, 0, 3000), BASE_TIME + 3000)
    m.add(stamped(150, 3000, 3500, 900), BASE_TIME + 3600)
    m.add(stamped(150, 3500, 4000, 1050), BASE_TIME + 4100)
    expect(m.rate(BASE_TIME + 4100)).toBeCloseTo(300, -1)
  })

  it('reads right from the first half second of data', () => {
    const m = new RateMeter()
    m.add(stamped(100, 0, 1000), BASE_TIME + 1000)
    expect(m.rate(BASE_TIME + 1000)).toBeCloseTo(100, -1)
    const early = new RateMeter()
    expect(early.rate(BASE_TIME)).toBeNull() // nothing yet: unknown, not zero
    early.add(stamped(10, 0, 200), BASE_TIME + 200)
    expect(early.rate(BASE_TIME + 200)).toBeNull()
    m.reset()
    expect(m.rate(BASE_TIME + 1000)).toBeNull()
  })

  it('falls to zero when the stream stops, and ignores far-future stamps', () => {
    const m = new RateMeter()
    m.add(stamped(600, 0, 2000), BASE_TIME + 2000)
    expect(m.rate(BASE_TIME + 2000)).toBeGreaterThan(250)
    expect(m.rate(BASE_TIME + 3000)).toBeCloseTo(300, -1) // within the allowed delivery lag
    expect(m.rate(BASE_TIME + 3500)).toBeCloseTo(225, -1) // half a second of silence in view
    expect(m.rate(BASE_TIME + 5000)).toBe(0)
    m.add([ev(9999, { at: 3_600_000 })], BASE_TIME + 6000) // stamped an hour ahead
    expect(m.maxTs).toBeLessThan(BASE_TIME + 3_600_000)
  })

  it('does not count old backfilled events as current', () => {
    const m = new RateMeter()
    m.add(stamped(200, 0, 2000), BASE_TIME + 2000)
    m.add(stamped(500, -600_000, -599_000, 200), BASE_TIME + 2000)
    expect(m.rate(BASE_TIME + 2000)).toBeCloseTo(100, -1)
  })
})
