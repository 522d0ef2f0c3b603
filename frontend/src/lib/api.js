// REST client. Every URL is relative: the dashboard is served by the same Flask app.

export class ApiError extends Error {
  constructor(message, status) {
    super(message)
    this.name = 'ApiError'
    this.status = status
  }
}

function query(params) {
  const qs = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, String(v))
  const s = qs.toString()
  return s ? `?${s}` : ''
}

export function createApi(fetchImpl = (...args) => globalThis.fetch(...args)) {
  async function request(path, init) {
    let res
    try {
      res = await fetchImpl(path, { headers: { Accept: 'application/json' }, ...init })
    } catch (err) {
      throw new ApiError(`network error: ${err?.message ?? err}`, 0)
    }
    let body = null
    try {
      body = await res.json()
    } catch {
      body = null
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`
      throw new ApiError(msg, res.status)
    }
    return body
  }

  return {
    health: () => request('/api/health'),
    recent: ({ limit = 200, metric, after } = {}) => request(`/api/metrics/recent${query({ limit, metric, after })}`),
    aggregate: ({ window, metric } = {}) => request(`/api/metrics/aggregate${query({ window, metric })}`),
    timeseries: ({ window, step, metric, field } = {}) =>
      request(`/api/metrics/timeseries${query({ window, step, metric, field })}`),
    // Reads take an optional `signal`: a poll whose answer is no longer wanted is aborted, not left running.
    alerts: ({ state = 'all', limit } = {}, { signal } = {}) => request(`/api/alerts${query({ state, limit })}`, { signal }),
    ackAlert: (id) => request(`/api/alerts/${encodeURIComponent(id)}/ack`, { method: 'POST' }),
    trends: ({ window, metric } = {}, { signal } = {}) =>
      request(`/api/metrics/trends${query({ window, metric })}`, { signal }),
    top: ({ by, window, metric, n, order, field } = {}, { signal } = {}) =>
      request(`/api/metrics/top${query({ by, window, metric, n, order, field })}`, { signal }),
    getGenerator: () => request('/api/generator'),
    setGenerator: (body) =>
      request('/api/generator', {
        method: 'POST',
        headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      }),
  }
}

export const defaultApi = createApi()
