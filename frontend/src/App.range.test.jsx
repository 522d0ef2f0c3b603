import { act, fireEvent, render, screen } from '@testing-library/react'
import { beforeEach, describe, expect, it } from 'vitest'
import App from './App.jsx'
import { BASE_TIME, FakeSocket, fakeApi, fakeIo, mockSystemTheme } from './test/fakes.js'

const settle = () => act(async () => {})

async function renderApp(api = fakeApi()) {
  const socket = new FakeSocket()
  const view = render(<App io={fakeIo(socket)} api={api} />)
  await settle()
  await settle()
  return { socket, api, ...view }
}

beforeEach(() => {
  mockSystemTheme(false)
})

describe('App: the view in the URL', () => {
  it('opens the range and filters a link carries, and asks the server for exactly that range', async () => {
    const from = new Date(BASE_TIME - 600_000).toISOString()
    const to = new Date(BASE_TIME - 300_000).toISOString()
    window.history.replaceState(null, '', `/?from=${from}&to=${to}&tag=endpoint%3D%2Fapi%2Forders&log=1&q=checkout`)
    const { api } = await renderApp()
    expect(screen.getByTestId('range-label')).not.toHaveTextContent('Live')
    expect(screen.getByTestId('chart-tag')).toHaveValue('endpoint=/api/orders')
    expect(screen.getByTestId('latency-log')).toBeChecked()
    expect(screen.getByTestId('log-filter-text')).toHaveValue('checkout')
    const ranged = api.timeseries.mock.calls.map((c) => c[0]).filter((p) => p.from)
    expect(ranged.length).toBeGreaterThan(0)
    expect(ranged.every((p) => p.from === from && p.to === to && p.tag === 'endpoint=/api/orders')).toBe(true)
    expect(api.aggregate).toHaveBeenCalledWith({ from, to }, expect.anything())
    expect(window.location.search).toContain('from=')
  })

  it('writes the live window, then an absolute range typed in, then back to live', async () => {
    window.history.replaceState(null, '', '/')
    await renderApp()
    fireEvent.change(screen.getByTestId('window-select'), { target: { value: '300' } })
    await settle()
    expect(window.location.search).toBe('?window=300')
    fireEvent.change(screen.getByTestId('range-from'), { target: { value: '2026-03-18T09:00:00' } })
    fireEvent.change(screen.getByTestId('range-to'), { target: { value: '2026-03-18T09:05:00' } })
    fireEvent.click(screen.getByTestId('range-apply'))
    await settle()
    const q = new URLSearchParams(window.location.search)
    expect(Date.parse(q.get('to')) - Date.parse(q.get('from'))).toBe(300_000)
    expect(screen.getByTestId('range-label')).toHaveTextContent('2026-03-18 09:00:00 – 2026-03-18 09:05:00')
    fireEvent.click(screen.getByTestId('range-live'))
    await settle()
    expect(window.location.search).toBe('?window=300')
    expect(screen.getByTestId('range-label')).toHaveTextContent('Live')
  })

  it('refuses a backwards range in words', async () => {
    window.history.replaceState(null, '', '/')
    await renderApp()
    fireEvent.change(screen.getByTestId('range-from'), { target: { value: '2026-03-18T09:05:00' } })
    fireEvent.change(screen.getByTestId('range-to'), { target: { value: '2026-03-18T09:00:00' } })
    fireEvent.click(screen.getByTestId('range-apply'))
    expect(screen.getByRole('alert')).toHaveTextContent('"From" must be before "to".')
  })
})
