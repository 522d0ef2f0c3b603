import { act, renderHook } from '@testing-library/react'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { usePoll } from './usePoll.js'

const settle = () => act(async () => {})
const tick = (ms) => act(() => vi.advanceTimersByTime(ms))

/** A fetcher whose answers the test hands out one by one. */
function controlled() {
  const calls = []
  const fetcher = vi.fn(
    (signal) =>
      new Promise((resolve, reject) => {
        calls.push({ signal, resolve, reject })
      }),
  )
  return { fetcher, calls }
}

beforeEach(() => {
  vi.useFakeTimers()
})

describe('usePoll', () => {
  it('asks again only an interval after the previous answer: never two requests at once', async () => {
    const { fetcher, calls } = controlled()
    const hook = renderHook(() => usePoll(fetcher, 1000, 'k'))
    expect(fetcher).toHaveBeenCalledTimes(1)
    await tick(5000) // a slow server: still waiting for the first answer
    expect(fetcher).toHaveBeenCalledTimes(1)
    calls[0].resolve({ n: 1 })
    await settle()
    expect(hook.result.current.data).toEqual({ n: 1 })
    await tick(999)
    expect(fetcher).toHaveBeenCalledTimes(1)
    await tick(1)
    expect(fetcher).toHaveBeenCalledTimes(2)
  })

  it('keeps the last answer while a poll fails, and clears the error on the next success', async () => {
    const { fetcher, calls } = controlled()
    const hook = renderHook(() => usePoll(fetcher, 1000, 'k'))
    calls[0].resolve({ n: 1 })
    await settle()
    await tick(1000)
    calls[1].reject(Object.assign(new Error('down'), { status: 503 }))
    await settle()
    expect(hook.result.current.data).toEqual({ n: 1 })
    expect(hook.result.current.error.message).toBe('down')
    await tick(1000)
    calls[2].resolve({ n: 2 })
    await settle()
    expect(hook.result.current).toMatchObject({ data: { n: 2 }, error: null })
  })

  it('a new key aborts the request in flight, starts at once, and never shows the old answer', async () => {
    const { fetcher, calls } = controlled()
    const hook = renderHook(({ k }) => usePoll(fetcher, 1000, k), { initialProps: { k: 'a' } })
    calls[0].resolve('answer a')
    await settle()
    await tick(1000)
    expect(fetcher).toHaveBeenCalledTimes(2)
    hook.rerender({ k: 'b' })
    expect(calls[1].signal.aborted).toBe(true)
    expect(fetcher).toHaveBeenCalledTimes(3)
    expect(hook.result.current.data).toBeNull() // 'answer a' was for other parameters
    calls[1].resolve('late answer a')
    await settle()
    expect(hook.result.current.data).toBeNull()
    calls[2].resolve('answer b')
    await settle()
    expect(hook.result.current.data).toBe('answer b')
  })

  it('stops on unmount, and does not poll without a key', async () => {
    const { fetcher, calls } = controlled()
    const hook = renderHook(({ k }) => usePoll(fetcher, 1000, k), { initialProps: { k: null } })
    await tick(5000)
    expect(fetcher).not.toHaveBeenCalled()
    hook.rerender({ k: 'x' })
    calls[0].resolve(1)
    await settle()
    hook.unmount()
    await tick(10_000)
    expect(fetcher).toHaveBeenCalledTimes(1)
    expect(vi.getTimerCount()).toBe(0)
  })
})
