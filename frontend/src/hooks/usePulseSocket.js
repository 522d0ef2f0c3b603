import { useEffect, useRef, useState } from 'react'
import { io as socketIo } from 'socket.io-client'
import { useLatest } from './useLatest.js'

export const SOCKET_OPTIONS = Object.freeze({ path: '/socket.io', transports: ['websocket'], forceNew: true })

/** Default factory: same origin, websocket only, socket.io-client's built-in reconnect backoff. */
export const connectSocket = (options) => socketIo(options)

const isOnline = () => (typeof navigator === 'undefined' ? true : navigator.onLine !== false)

/**
 * The one owner of the Socket.IO connection: opens it once, subscribes (again after every
 * connect: the server forgets subscriptions with the old connection, and on a window change),
 * and tracks connected / reconnecting (with the attempt) / offline, including the browser's own
 * offline and online events. It knows nothing about what the pushes mean:
 *
 * - `on`: {event: handler} for server pushes; the set of events is read once, at connect time.
 * - `onConnect(reconnect)`: after every connect; `reconnect` is true when this page was
 *   connected before, i.e. there may be something to catch up on.
 * - `onDisconnect()`: after the connection dropped.
 *
 * `status` and `attempt` change only on `commit()`, which the caller's flush runs, so a flapping
 * connection does not re-render faster than the numbers do. `currentStatus()` is the live value.
 */
export function usePulseSocket({ io = connectSocket, windowSec, on = {}, onConnect, onDisconnect }) {
  const [initial] = useState(() => ({
    socket: null,
    status: isOnline() ? 'connecting' : 'offline',
    attempt: 0,
    online: isOnline(),
    everConnected: false,
    windowSec,
    changed: false,
  }))
  // Written by the socket's handlers, outside render: a ref, since React state is never mutated.
  const connRef = useRef(initial)
  const [view, setView] = useState(() => ({ status: initial.status, attempt: initial.attempt }))
  const handlersRef = useLatest({ on, onConnect, onDisconnect })
  // A factory read once: a new one would mean a second connection.
  const [connect] = useState(() => io)

  useEffect(() => {
    const c = connRef.current
    const socket = connect({ ...SOCKET_OPTIONS })
    const manager = socket.io
    c.socket = socket
    const set = (status, attempt = c.attempt) => {
      c.status = status
      c.attempt = attempt
      c.changed = true
    }

    function onConnectEvent() {
      const reconnect = c.everConnected
      c.everConnected = true
      c.online = true
      set('connected', 0)
      socket.emit('subscribe', { mode: 'batch', window: c.windowSec })
      handlersRef.current.onConnect?.(reconnect)
    }

    function onDisconnectEvent(reason) {
      if (reason === 'io client disconnect') set('offline')
      else {
        set(c.online ? 'reconnecting' : 'offline', Math.max(1, c.attempt))
        // The server closed us deliberately; socket.io-client won't retry that on its own.
        if (reason === 'io server disconnect') socket.connect()
      }
      handlersRef.current.onDisconnect?.()
    }

    const onReconnectAttempt = (attempt) => set(c.online ? 'reconnecting' : c.status, attempt)
    const onReconnectFailed = () => set('offline')

    function onBrowserOffline() {
      c.online = false
      set('offline')
    }

    function onBrowserOnline() {
      c.online = true
      if (socket.connected) set('connected')
      else {
        set('reconnecting', Math.max(1, c.attempt))
        socket.connect()
      }
    }

    // Pushes go to whatever handler the caller passed last, not the one it had at connect time.
    const pushes = Object.keys(handlersRef.current.on).map((event) => [event, (body) => handlersRef.current.on[event]?.(body)])
    socket.on('connect', onConnectEvent)
    socket.on('disconnect', onDisconnectEvent)
    for (const [event, fn] of pushes) socket.on(event, fn)
    manager?.on('reconnect_attempt', onReconnectAttempt)
    manager?.on('reconnect_failed', onReconnectFailed)
    window.addEventListener('offline', onBrowserOffline)
    window.addEventListener('online', onBrowserOnline)
    if (socket.connected) onConnectEvent()

    return () => {
      window.removeEventListener('offline', onBrowserOffline)
      window.removeEventListener('online', onBrowserOnline)
      socket.off('connect', onConnectEvent)
      socket.off('disconnect', onDisconnectEvent)
      for (const [event, fn] of pushes) socket.off(event, fn)
      manager?.off('reconnect_attempt', onReconnectAttempt)
      manager?.off('reconnect_failed', onReconnectFailed)
      socket.disconnect()
      if (c.socket === socket) c.socket = null
    }
  }, [connRef, connect, handlersRef])

  // A new window: the server must send that window's aggregates from now on.
  useEffect(() => {
    const c = connRef.current
    if (c.windowSec === windowSec) return
    c.windowSec = windowSec
    if (c.socket?.connected) c.socket.emit('subscribe', { mode: 'batch', window: windowSec })
  }, [connRef, windowSec])

  const [actions] = useState(() => ({
    /** Publishes status and attempt if they changed since the last commit. */
    commit() {
      const c = connRef.current
      if (!c.changed) return
      c.changed = false
      setView({ status: c.status, attempt: c.attempt })
    },
    currentStatus: () => connRef.current.status,
  }))
  return { ...view, ...actions }
}
