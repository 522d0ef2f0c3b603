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

// The API key for writes (INGEST_API_KEY on the server), entered by the user when the server
// answers 401; kept for the tab only (sessionStorage), sent as X-API-Key.
export const API_KEY_STORAGE = 'pulseboard:api-key'

function session() {
  try {
    return globalThis.sessionStorage ?? null
  } catch {
    return null
  }
}

export const apiKeyStore = {
  get: () => session()?.getItem(API_KEY_STORAGE) || null,
  set: (key) => {
    const s = session()
    if (!s) return
    if (key) s.setItem(API_KEY_STORAGE, key)
    else s.removeItem(API_KEY_STORAGE)
  },
}

export function createApi(fetchImpl = (...args) => globalThis.fetch(...args), keys = apiKeyStore) {
  async function request(path, init) {
    let res
    try {
      res = await fetchImpl(path, { headers: { Accept: 'application/json' }, ...init })
    } catch (err) {
      throw new ApiError(`network error: ${err?.message ?? err}`, 0)
    }
    let body
    try {
      body = await res.json()
    } catch {
      body = null
    }
    if (!res.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`
      const err = new ApiError(msg, res.status)
      err.field = body && typeof body.field === 'string' ? body.field : null
      throw err
    }
    return body
  }

  /** A change: JSON body, and the API key when the user gave one. */
  function write(path, method, body) {
    const headers = { Accept: 'application/json' }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const key = keys?.get()
    if (key) headers['X-API-Key'] = key
    return request(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
  }
  const rulePath = (id) => `/api/rules/${encodeURIComponent(id)}`

  return {
    health: ({ signal } = {}) => request('/api/health', { signal }),
    recent: ({ limit = 200, metric, after } = {}) => request(`/api/metrics/recent${query({ limit, metric, after })}`),
    // from/to: ISO strings (an absolute range); tag: "endpoint=/api/orders" (timeseries only)
    aggregate: ({ window, metric, from, to } = {}, { signal } = {}) =>
      request(`/api/metrics/aggregate${query({ window, metric, from, to })}`, { signal }),
    timeseries: ({ window, step, metric, field, from, to, tag } = {}, { signal } = {}) =>
      request(`/api/metrics/timeseries${query({ window, step, metric, field, from, to, tag })}`, { signal }),
    // Reads take an optional `signal`: a poll whose answer is no longer wanted is aborted, not left running.
    alerts: ({ state = 'all', limit } = {}, { signal } = {}) => request(`/api/alerts${query({ state, limit })}`, { signal }),
    ackAlert: (id) => write(`/api/alerts/${encodeURIComponent(id)}/ack`, 'POST'),
    rules: ({ signal } = {}) => request('/api/rules', { signal }),
    createRule: (body) => write('/api/rules', 'POST', body),
    replaceRule: (id, body) => write(rulePath(id), 'PUT', body),
    patchRule: (id, body) => write(rulePath(id), 'PATCH', body),
    deleteRule: (id) => write(rulePath(id), 'DELETE'),
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
