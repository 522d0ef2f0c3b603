import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { HEALTH_POLL_MS, useHealth } from './useHealth.js'

const settle = () => act(async () => {})
const tick = (ms) => act(() => vi.advanceTimersByTime(ms))

/** An api whose health answers the test hands out one by one. */
function slowApi() {
  const calls = []
  const api = {
    health: vi.fn(({ signal } = {}) => new Promise((resolve, reject) => calls.push({ signal, resolve, reject }))),
  }
  return { api, calls }
}

beforeEach(() => {
  vi.useFakeTimers()
})

describe('useHealth', () => {
  it('never has two health requests in flight: a slow answer delays the next poll', async () => {
    const { api, calls } = slowApi()
    const hook = renderHook(() => useHealth(api))
    expect(api.health).toHaveBeenCalledTimes(1)
    await tick(HEALTH_POLL_MS * 4) // the server takes a minute to answer
    expect(api.health).toHaveBeenCalledTimes(1)
    calls[0].resolve({ status: 'ok', redis: 'down' })
    await settle()
    expect(hook.result.current).toEqual({ status: 'ok', redis: 'down' })
    await tick(HEALTH_POLL_MS - 1)
    expect(api.health).toHaveBeenCalledTimes(1) // the interval counts from the answer
    await tick(1)
    expect(api.health).toHaveBeenCalledTimes(2)
  })

  it('shows null while the check fails, and the answer again once it recovers', async () => {
    const { api, calls } = slowApi()
    const hook = renderHook(() => useHealth(api, 1000))
    calls[0].resolve({ status: 'degraded', redis: 'down' })
    await settle()
    expect(hook.result.current.redis).toBe('down')
    await tick(1000)
    calls[1].reject(new Error('HTTP 502'))
    await settle()
    expect(hook.result.current).toBeNull() // a failed check says nothing about Redis
    await tick(1000)
    calls[2].resolve({ status: 'ok', redis: 'ok' })
    await settle()
    expect(hook.result.current.redis).toBe('ok')
  })

  it('aborts the request in flight and stops polling on unmount', async () => {
    const { api, calls } = slowApi()
    const hook = renderHook(() => useHealth(api, 1000))
    hook.unmount()
    expect(calls[0].signal.aborted).toBe(true)
    await tick(10_000)
    expect(api.health).toHaveBeenCalledTimes(1)
  })
})
