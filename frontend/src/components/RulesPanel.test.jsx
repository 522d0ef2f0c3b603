import { describe, expect, it, vi } from 'vitest'
import { act, fireEvent, render, screen, waitFor, within } from '@testing-library/react'
import { fakeApi, ruleBody } from '../test/fakes.js'
import { ApiError, API_KEY_STORAGE, createApi } from '../lib/api.js'
import { ruleExtras, normalizeRule } from '../lib/rules.js'
import { RulesPanel } from './RulesPanel.jsx'

const builtin = ruleBody({
  id: 'builtin-error-rate',
  name: 'Error rate',
  builtin: true,
  source: 'builtin',
  threshold: 0.02,
  rule: 'error_rate > 0.02 severity warning',
  window_s: 60,
  min_rate: 2,
  clear_threshold: 0.01,
  critical: 0.05,
  critical_clear: 0.02,
  has_field: 'ms',
})

describe('rules panel', () => {
  it('lists built-in rules first with what they add to their text, and no delete for them', async () => {
    const api = fakeApi({ rules: vi.fn(async () => ({ rules: [ruleBody({ id: 'mine', name: 'Mine' }), builtin] })) })
    render(<RulesPanel api={api} />)
    const rows = await screen.findAllByTestId('rule-row')
    expect(rows.map((r) => r.dataset.ruleId)).toEqual(['builtin-error-rate', 'mine'])
    expect(rows[0]).toHaveTextContent('built-in')
    expect(rows[0]).toHaveTextContent('over 1m · clears < 1% · critical > 5% (back < 2%) · needs ≥ 120 events/min')
    expect(within(rows[0]).queryByTestId('rule-delete')).toBeNull()
    expect(within(rows[1]).getByTestId('rule-delete')).toBeInTheDocument()
  })

  it('creates a rule and shows the API validation message when refused', async () => {
    const createRule = vi
      .fn()
      .mockRejectedValueOnce(Object.assign(new ApiError("expected >, >=, < or <= at 'is big'", 400), { field: 'rule' }))
      .mockResolvedValueOnce(ruleBody({ id: 'r-2' }))
    const api = fakeApi({ createRule })
    render(<RulesPanel api={api} />)
    fireEvent.change(screen.getByTestId('rule-text'), { target: { value: 'rate is big' } })
    fireEvent.click(screen.getByTestId('rule-save'))
    expect(await screen.findByTestId('rule-error')).toHaveTextContent("expected >, >=, < or <= at 'is big'")
    fireEvent.change(screen.getByTestId('rule-name'), { target: { value: 'Busy' } })
    fireEvent.change(screen.getByTestId('rule-text'), { target: { value: 'rate > 5' } })
    fireEvent.change(screen.getByTestId('rule-severity'), { target: { value: 'critical' } })
    fireEvent.click(screen.getByTestId('rule-save'))
    await waitFor(() => expect(screen.getByTestId('rule-text')).toHaveValue(''))
    expect(screen.queryByTestId('rule-error')).toBeNull()
    expect(createRule).toHaveBeenLastCalledWith({ rule: 'rate > 5', severity: 'critical', name: 'Busy' })
  })

  it('edits with PATCH, silences for a duration, turns off and deletes', async () => {
    const api = fakeApi({ rules: vi.fn(async () => ({ rules: [ruleBody({ id: 'mine', name: 'Mine' })] })) })
    render(<RulesPanel api={api} />)
    const row = () => screen.getByTestId('rule-row')
    await screen.findByTestId('rule-row')
    fireEvent.click(within(row()).getByTestId('rule-edit'))
    expect(screen.getByTestId('rule-text')).toHaveValue('error_rate > 0.05')
    fireEvent.change(screen.getByTestId('rule-text'), { target: { value: 'error_rate > 0.1' } })
    fireEvent.click(screen.getByTestId('rule-save'))
    await waitFor(() => expect(api.patchRule).toHaveBeenCalledWith('mine', { rule: 'error_rate > 0.1', severity: 'warning', name: 'Mine' }))
    const before = Math.floor(Date.now() / 1000)
    fireEvent.change(within(row()).getByTestId('rule-silence'), { target: { value: '3600' } })
    await waitFor(() => expect(api.patchRule).toHaveBeenCalledTimes(2))
    const until = api.patchRule.mock.calls[1][1].silenced_until
    expect(until - before).toBeGreaterThanOrEqual(3600)
    expect(until - before).toBeLessThan(3660)
    fireEvent.click(within(row()).getByTestId('rule-toggle'))
    await waitFor(() => expect(api.patchRule).toHaveBeenLastCalledWith('mine', { enabled: false }))
    fireEvent.click(within(row()).getByTestId('rule-delete'))
    await waitFor(() => expect(api.deleteRule).toHaveBeenCalledWith('mine'))
  })

  it('shows silenced and turned-off rules as such', async () => {
    const later = Date.now() / 1000 + 3600
    const api = fakeApi({
      rules: vi.fn(async () => ({
        rules: [ruleBody({ id: 'a', name: 'A', silenced_until: later }), ruleBody({ id: 'b', name: 'B', enabled: false })],
      })),
    })
    render(<RulesPanel api={api} />)
    const rows = await screen.findAllByTestId('rule-row')
    expect(rows[0]).toHaveAttribute('data-state', 'silenced')
    expect(within(rows[0]).getByTestId('rule-state')).toHaveTextContent(/^silenced until (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d$/) // a date when it ends on another day
    expect(within(rows[0]).getByTestId('rule-unsilence')).toBeInTheDocument()
    expect(rows[1]).toHaveAttribute('data-state', 'off')
  })

  it('asks for the API key on 401, keeps it for the tab and retries with it', async () => {
    sessionStorage.clear()
    const calls = []
    const fetchImpl = async (url, init) => {
      calls.push({ url, method: init?.method ?? 'GET', key: init?.headers?.['X-API-Key'] ?? null })
      if (url === '/api/rules' && (init?.method ?? 'GET') === 'GET') return { ok: true, status: 200, json: async () => ({ rules: [] }) }
      const ok = init?.headers?.['X-API-Key'] === 's3cret'
      return ok
        ? { ok: true, status: 201, json: async () => ruleBody() }
        : { ok: false, status: 401, json: async () => ({ error: 'missing or wrong X-API-Key header', status: 401 }) }
    }
    render(<RulesPanel api={createApi(fetchImpl)} />)
    fireEvent.change(screen.getByTestId('rule-text'), { target: { value: 'rate > 1' } })
    fireEvent.click(screen.getByTestId('rule-save'))
    expect(await screen.findByTestId('rule-error')).toHaveTextContent('requires an API key')
    fireEvent.change(screen.getByTestId('api-key-input'), { target: { value: 's3cret' } })
    await act(async () => fireEvent.click(screen.getByTestId('api-key-save')))
    await waitFor(() => expect(calls.filter((c) => c.method === 'POST').map((c) => c.key)).toEqual([null, 's3cret']))
    expect(sessionStorage.getItem(API_KEY_STORAGE)).toBe('s3cret')
    await waitFor(() => expect(screen.queryByTestId('api-key-prompt')).toBeNull())
  })
})

describe('rule extras', () => {
  it('describe a below-threshold rule the other way round', () => {
    const r = normalizeRule(ruleBody({ rule: 'rate < 1 severity warning', signal: 'rate', clear_threshold: 2 }))
    expect(ruleExtras(r)).toBe('clears > 2')
  })
})
