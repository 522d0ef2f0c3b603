import { renderHook } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { ev } from '../test/fakes.js'
import { useTagCatalog } from './useTagCatalog.js'

const tagged = (seq, tags, metric = 'http_request') => ev(seq, { metric, tags })

describe('useTagCatalog', () => {
  it('is the same object across log updates that bring no new key, and a new one when one does', () => {
    const hook = renderHook(({ events }) => useTagCatalog(events), { initialProps: { events: [tagged(1, { endpoint: '/a' })] } })
    const first = hook.result.current
    expect(first.byMetric).toEqual({ http_request: ['endpoint'] })
    hook.rerender({ events: [tagged(2, { endpoint: '/b' }), tagged(1, { endpoint: '/a' })] })
    expect(hook.result.current).toBe(first) // a new value, not a new key
    hook.rerender({ events: [tagged(3, { region: 'eu' }, 'orders')] })
    expect(hook.result.current).not.toBe(first)
    expect(hook.result.current.metrics).toEqual(['http_request', 'orders'])
    expect(hook.result.current.keys).toEqual(['endpoint', 'region'])
  })

  it('keeps keys learnt earlier when the buffer no longer holds their events', () => {
    const hook = renderHook(({ events }) => useTagCatalog(events), { initialProps: { events: [tagged(1, { service: 'api' })] } })
    hook.rerender({ events: [ev(2)] }) // untagged
    expect(hook.result.current.keys).toEqual(['service'])
  })
})
