import { fireEvent, render, screen, within } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { MetricTable } from './MetricTable.jsx'

const agg = {
  total: { count: 160 },
  metrics: {
    orders: { count: 50, errors: 5, rate_per_sec: 0.8, fields: { amount: { avg: 12.5, p95: 40 } } },
    http_request: { count: 100, errors: 1, rate_per_sec: 1.7, fields: { bytes: { avg: 1, p95: 2 }, ms: { avg: 80, p95: 310 } } },
    signups: { count: 10, errors: 0, rate_per_sec: 0.2, fields: {} },
  },
}

const order = () =>
  within(screen.getByTestId('metric-table'))
    .getAllByTestId('metric-row')
    .map((r) => r.querySelector('th .metric-name').textContent)

describe('MetricTable', () => {
  it('shows count, rate, error rate, avg and p95 (of the latency field when there is one)', () => {
    render(<MetricTable aggregate={agg} />)
    const row = screen.getAllByTestId('metric-row')[0]
    expect(row).toHaveTextContent('http_request')
    expect(row).toHaveTextContent('ms')
    expect(row).toHaveTextContent('1%') // 1/100
    expect(row).toHaveTextContent('80 ms')
    expect(row).toHaveTextContent('310 ms')
  })

  it('sorts by count descending, and by any column when its header is clicked', () => {
    render(<MetricTable aggregate={agg} />)
    expect(order()).toEqual(['http_request', 'orders', 'signups'])
    fireEvent.click(screen.getByRole('button', { name: /count/i }))
    expect(order()).toEqual(['signups', 'orders', 'http_request'])
    fireEvent.click(screen.getByRole('button', { name: /error rate/i }))
    expect(order()).toEqual(['orders', 'http_request', 'signups'])
    expect(screen.getByRole('button', { name: /error rate/i }).closest('th')).toHaveAttribute('aria-sort', 'descending')
    fireEvent.click(screen.getByRole('button', { name: /metric/i }))
    expect(order()).toEqual(['http_request', 'orders', 'signups'])
    fireEvent.click(screen.getByRole('button', { name: /avg/i }))
    expect(order()).toEqual(['http_request', 'orders', 'signups']) // no avg sorts last
  })
})
