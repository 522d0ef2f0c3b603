import { render, screen, within } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { MetricTable } from './MetricTable.jsx'
import { trendChange } from './TrendArrow.jsx'

const agg = {
  metrics: {
    http_request: { count: 100, errors: 1, rate_per_sec: 1.7, fields: { ms: { avg: 80, p95: 310 } } },
    orders: { count: 50, errors: 0, rate_per_sec: 0.8, fields: {} },
    signups: { count: 10, errors: 0, rate_per_sec: 0.2, fields: {} },
    quiet: { count: 1, errors: 0, rate_per_sec: 0.1, fields: {} },
  },
}
const trends = {
  window_seconds: 60,
  trends: {
    http_request: { trend: 'rising', relative_slope: 0.005, slope_per_s: 0.01, mean_rate: 1.7, points: 60 },
    orders: { trend: 'falling', relative_slope: -0.004, slope_per_s: -0.003, mean_rate: 0.8, points: 60 },
    signups: { trend: 'stable', relative_slope: 0, slope_per_s: 0, mean_rate: 0.2, points: 60 },
  },
}

const row = (metric) =>
  screen.getAllByTestId('metric-row').find((r) => r.querySelector('th .metric-name').textContent === metric)

describe('trend arrows in the metric table', () => {
  it('shows ▲/▼/▶ next to each count, labelled for screen readers, and nothing without a trend', () => {
    render(<MetricTable aggregate={agg} trends={trends} />)
    const rising = within(row('http_request')).getByRole('img', { name: 'rising' })
    expect(rising).toHaveTextContent('▲')
    expect(rising).toHaveAttribute('title', 'Rate rising: +30% over the last 1 m (least-squares fit)')
    expect(within(row('orders')).getByRole('img', { name: 'falling' })).toHaveTextContent('▼')
    expect(within(row('signups')).getByRole('img', { name: 'stable' })).toHaveTextContent('▶')
    expect(within(row('quiet')).queryByTestId('trend')).toBeNull()
  })

  it('shows no arrows before the first trends answer', () => {
    render(<MetricTable aggregate={agg} />)
    expect(screen.queryAllByTestId('trend')).toHaveLength(0)
  })

  it('expresses the fitted change over the window relative to the mean', () => {
    expect(trendChange({ relative_slope: 0.002 }, 300)).toBe('+60%')
    expect(trendChange({ relative_slope: -0.01 }, 10)).toBe('−10%')
    expect(trendChange({ relative_slope: null }, 60)).toBeNull()
  })
})
