import '@testing-library/jest-dom/vitest'
import { cleanup } from '@testing-library/react'
import { afterEach, vi } from 'vitest'

// jsdom has no canvas: charts render as a plain element that exposes what they were given,
// so tests can still check dataset labels and point counts.
vi.mock('react-chartjs-2', () => ({
  Line: ({ data, options }) => (
    <div
      data-testid="line-chart"
      data-labels={data.datasets.map((d) => d.label).join(',')}
      data-points={data.datasets.map((d) => d.data.length).join(',')}
      data-animation={String(options?.animation)}
    />
  ),
}))

// jsdom has no matchMedia; tests that care install their own (see mockSystemTheme).
if (!window.matchMedia) {
  window.matchMedia = (query) => ({
    matches: false,
    media: query,
    addEventListener() {},
    removeEventListener() {},
  })
}

afterEach(() => {
  cleanup()
  localStorage.clear()
  sessionStorage.clear()
  window.history.replaceState(null, '', '/') // the app writes its view into the URL
  delete document.documentElement.dataset.theme
  vi.useRealTimers()
})
