import { describe, expect, it } from 'vitest'
import { createApi } from './api.js'

function recorder(answer = () => ({ ok: true, status: 200, body: {} })) {
  const calls = []
  const fetchImpl = async (url, init) => {
    calls.push({ url, method: init?.method ?? 'GET', signal: init?.signal })
    const { ok, status, body } = answer(url, init)
    return { ok, status, json: async () => body }
  }
  return { api: createApi(fetchImpl), calls }
}

describe('api client: analytics', () => {
  it('builds the documented URLs, leaving out empty parameters', async () => {
    const { api, calls } = recorder()
    const ctrl = new AbortController()
    await api.alerts({ state: 'all', limit: 50 }, { signal: ctrl.signal })
    await api.ackAlert('9c1e/0b')
    await api.trends({ window: 60 })
    await api.top({ by: 'endpoint', window: 300, metric: '', n: 10, order: 'p95' })
    await api.top({ by: 'region', window: 60, metric: 'http_request', n: 5, order: 'count' })
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      'GET /api/alerts?state=all&limit=50',
      'POST /api/alerts/9c1e%2F0b/ack',
      'GET /api/metrics/trends?window=60',
      'GET /api/metrics/top?by=endpoint&window=300&n=10&order=p95',
      'GET /api/metrics/top?by=region&window=60&metric=http_request&n=5&order=count',
    ])
    expect(calls[0].signal).toBe(ctrl.signal) // polls can be aborted
  })

  it('surfaces the status and message of a refused ack and of a disabled top-N', async () => {
    const { api } = recorder((url) =>
      url.includes('/ack')
        ? { ok: false, status: 401, body: { error: 'missing or wrong X-API-Key header', status: 401 } }
        : { ok: false, status: 409, body: { error: 'per-tag counters are off (TOP_MAX_TAG_VALUES=0)', status: 409 } },
    )
    await expect(api.ackAlert('a')).rejects.toMatchObject({ status: 401, message: 'missing or wrong X-API-Key header' })
    await expect(api.top({ by: 'endpoint' })).rejects.toMatchObject({ status: 409 })
  })
})
