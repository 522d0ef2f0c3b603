import { act, renderHook } from '@testing-library/react'
import { describe, expect, it, vi } from 'vitest'
import { alertBody, fakeApi } from '../test/fakes.js'
import { useAlerts } from './useAlerts.js'

function setup(api = fakeApi()) {
  const hook = renderHook(() => useAlerts({ api }))
  const feed = () => hook.result.current
  const commit = () => act(() => feed().commit())
  return { api, hook, feed, commit }
}

/** Waits inside act for a load started outside it (loads may overlap; acts must not). */
const settled = (loading) => act(async () => {
  await loading
})
const ids = (feed) => feed().alerts.items.map((a) => a.id)

describe('useAlerts', () => {
  it('shows pushes with the next commit, and keeps the same object while nothing changed', () => {
    const { feed, commit } = setup()
    const empty = feed().alerts
    expect(empty).toMatchObject({ items: [], loaded: false, error: null })
    feed().push(alertBody({ id: 'a' }))
    expect(feed().alerts).toBe(empty)
    commit()
    expect(ids(feed)).toEqual(['a'])
    const shown = feed().alerts
    feed().push(alertBody({ id: 'a', at: -60 })) // an older version, late: nothing changed
    commit()
    expect(feed().alerts).toBe(shown)
  })

  it('shows an ack answer at once', () => {
    const { feed } = setup()
    act(() => feed().upsert({ ...alertBody({ id: 'a' }), acked: true }))
    expect(feed().alerts.items[0]).toMatchObject({ id: 'a', acked: true })
  })

  it("replaces the list with the server's on load, keeping what was pushed meanwhile", async () => {
    let answer
    const api = fakeApi({ alerts: vi.fn(() => new Promise((resolve) => (answer = resolve))) })
    const { feed, commit } = setup(api)
    const loading = feed().load()
    feed().push(alertBody({ id: 'pushed', at: 5 }))
    answer({ alerts: [alertBody({ id: 'listed' })] })
    await settled(loading)
    commit()
    expect(api.alerts).toHaveBeenCalledWith({ state: 'all', limit: 50 })
    expect(ids(feed).sort()).toEqual(['listed', 'pushed'])
    expect(feed().alerts.loaded).toBe(true)
  })

  it('lets only the newest load decide: an older one answering late is dropped', async () => {
    const answers = []
    const api = fakeApi({ alerts: vi.fn(() => new Promise((resolve) => answers.push(resolve))) })
    const { feed, commit } = setup(api)
    const first = feed().load()
    const second = feed().load() // a reconnect while the first was loading
    answers[1]({ alerts: [alertBody({ id: 'new' })] })
    await settled(second)
    answers[0]({ alerts: [alertBody({ id: 'old' })] })
    await settled(first)
    commit()
    expect(ids(feed)).toEqual(['new'])
  })

  it('says so when the list cannot be loaded, and clears it once a load works', async () => {
    const api = fakeApi()
    api.alerts.mockRejectedValueOnce(new Error('HTTP 503'))
    const { feed, commit } = setup(api)
    await settled(feed().load())
    commit()
    expect(feed().alerts).toMatchObject({ loaded: true, error: 'Could not load alerts (HTTP 503).' })
    await settled(feed().load())
    commit()
    expect(feed().alerts.error).toBeNull()
  })
})
