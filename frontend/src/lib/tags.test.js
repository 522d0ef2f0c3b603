import { describe, expect, it } from 'vitest'
import { ev } from '../test/fakes.js'
import { EMPTY_CATALOG, TagCatalog, defaultTag, tagKeysFor } from './tags.js'

describe('TagCatalog', () => {
  it('learns tag keys per metric and keeps them', () => {
    const c = new TagCatalog()
    expect(c.snapshot()).toBe(EMPTY_CATALOG)
    const events = [ev(1, { tags: { region: 'eu', endpoint: '/a' } }), ev(2, { metric: 'orders', tags: { currency: 'EUR' } })]
    expect(c.observe(events.concat(ev(3)))).toBe(true)
    const snap = c.snapshot()
    expect(snap.metrics).toEqual(['http_request', 'orders'])
    expect(snap.keys).toEqual(['currency', 'endpoint', 'region'])
    expect(tagKeysFor(snap, 'http_request')).toEqual(['endpoint', 'region'])
    expect(tagKeysFor(snap, 'orders')).toEqual(['currency'])
    expect(tagKeysFor(snap, 'nope')).toEqual([])
    expect(tagKeysFor(snap, '')).toEqual(snap.keys)
    // Nothing new: the same object, so memoized consumers don't re-render.
    expect(c.observe([ev(4, { tags: { endpoint: '/b' } })])).toBe(false)
    expect(c.snapshot()).toBe(snap)
    // Events without them later don't make keys disappear.
    c.observe([ev(5, { metric: 'orders', tags: { payment: 'card' } })])
    expect(tagKeysFor(c.snapshot(), 'http_request')).toEqual(['endpoint', 'region'])
    expect(tagKeysFor(c.snapshot(), 'orders')).toEqual(['currency', 'payment'])
  })

  it('caps the keys per metric', () => {
    const c = new TagCatalog()
    c.observe(Array.from({ length: 80 }, (_, i) => ev(i, { tags: { [`k${i}`]: 'v' } })))
    expect(c.snapshot().keys).toHaveLength(50)
  })

  it('defaults to the most telling usual tag', () => {
    expect(defaultTag(['method', 'region', 'endpoint'])).toBe('endpoint')
    expect(defaultTag(['service', 'zone'])).toBe('service')
    expect(defaultTag(['currency', 'payment'])).toBe('currency')
    expect(defaultTag([])).toBe('')
  })
})
