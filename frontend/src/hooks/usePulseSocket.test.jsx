import { act, renderHook } from '@testing-library/react'
import { describe, expect, it, vi } from 'vitest'
import { FakeSocket, fakeIo } from '../test/fakes.js'
import { SOCKET_OPTIONS, usePulseSocket } from './usePulseSocket.js'

function setup(props = {}) {
  const socket = new FakeSocket()
  const io = fakeIo(socket)
  const onConnect = vi.fn()
  const onDisconnect = vi.fn()
  const hook = renderHook((p) => usePulseSocket({ io, onConnect, onDisconnect, windowSec: 60, ...p }), { initialProps: props })
  const commit = () => act(() => hook.result.current.commit())
  return { socket, io, onConnect, onDisconnect, hook, commit }
}

describe('usePulseSocket', () => {
  it('opens one connection, and only one even when given another factory later', () => {
    const { io, hook } = setup()
    expect(io).toHaveBeenCalledTimes(1)
    expect(io.mock.calls[0][0]).toEqual({ ...SOCKET_OPTIONS })
    const other = vi.fn()
    hook.rerender({ io: other })
    expect(other).not.toHaveBeenCalled()
  })

  it('tells the caller whether a connect is the first or a reconnect', () => {
    const { socket, onConnect, onDisconnect } = setup()
    socket.serverConnect()
    socket.drop()
    socket.serverConnect()
    expect(onConnect.mock.calls).toEqual([[false], [true]])
    expect(onDisconnect).toHaveBeenCalledTimes(1)
  })

  it('subscribes on each connect with the window of the moment; a window change while connected resubscribes', () => {
    const { socket, hook } = setup()
    hook.rerender({ windowSec: 300 }) // not connected yet: nothing to send
    expect(socket.subscriptions()).toEqual([])
    socket.serverConnect()
    expect(socket.subscriptions()).toEqual([{ mode: 'batch', window: 300 }])
    hook.rerender({ windowSec: 900 })
    hook.rerender({ windowSec: 900 }) // the same window again: no second message
    expect(socket.subscriptions()).toEqual([
      { mode: 'batch', window: 300 },
      { mode: 'batch', window: 900 },
    ])
  })

  it('publishes status and attempt only on commit, while currentStatus() is live', () => {
    const { socket, hook, commit } = setup()
    socket.serverConnect()
    expect(hook.result.current.currentStatus()).toBe('connected')
    expect(hook.result.current.status).toBe('connecting') // not committed yet
    commit()
    expect(hook.result.current).toMatchObject({ status: 'connected', attempt: 0 })
    socket.drop()
    socket.reconnectAttempt(2)
    commit()
    expect(hook.result.current).toMatchObject({ status: 'reconnecting', attempt: 2 })
  })

  it('leaves status alone when a commit finds nothing new (no re-render)', () => {
    const { socket, hook, commit } = setup()
    socket.serverConnect()
    commit()
    const before = hook.result.current
    commit()
    expect(hook.result.current).toBe(before)
  })

  it('routes pushes to the handler passed in the latest render', () => {
    const first = vi.fn()
    const second = vi.fn()
    const { socket, hook } = setup({ on: { metrics: first } })
    socket.send('metrics', [1])
    hook.rerender({ on: { metrics: second } })
    socket.send('metrics', [2])
    expect(first.mock.calls).toEqual([[[1]]])
    expect(second.mock.calls).toEqual([[[2]]])
  })

  it('on unmount: disconnects and stops listening to the socket and the browser', () => {
    const { socket, hook } = setup({ on: { metrics: vi.fn() } })
    socket.serverConnect()
    hook.unmount()
    expect(socket.disconnectCalls).toBe(1)
    expect(socket.listenerCount('metrics')).toBe(0)
    expect(socket.listenerCount('connect')).toBe(0)
    expect(socket.io.listenerCount('reconnect_attempt')).toBe(0)
    window.dispatchEvent(new Event('online'))
    expect(socket.connectCalls).toBe(0) // no retry from a dead hook
  })
})
