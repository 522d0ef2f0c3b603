import { vi } from 'vitest'

class Emitter {
  constructor() {
    this.handlers = new Map()
  }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set())
    this.handlers.get(event).add(fn)
    return this
  }
  off(event, fn) {
    this.handlers.get(event)?.delete(fn)
    return this
  }
  fire(event, ...args) {
    for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args)
  }
  listenerCount(event) {
    return this.handlers.get(event)?.size ?? 0
  }
}

/** Stands in for a socket.io-client Socket (and its Manager at `.io`), driven by the test. */
export class FakeSocket extends Emitter {
  constructor() {
    super()
    this.io = new Emitter()
    this.connected = false
    this.emitted = []
    this.connectCalls = 0
    this.disconnectCalls = 0
  }
  emit(event, ...args) {
    this.emitted.push([event, ...args])
    return this
  }
  connect() {
    this.connectCalls += 1
    return this
  }
  disconnect() {
    this.disconnectCalls += 1
    this.connected = false
    return this
  }
  // --- what the server / network does ---
  serverConnect() {
    this.connected = true
    this.fire('connect')
  }
  drop(reason = 'transport close') {
    this.connected = false
    this.fire('disconnect', reason)
  }
  reconnectAttempt(n) {
    this.io.fire('reconnect_attempt', n)
  }
  send(event, body) {
    this.fire(event, body)
  }
  subscriptions() {
    return this.emitted.filter(([e]) => e === 'subscribe').map(([, body]) => body)
  }
}

export function fakeIo(socket) {
  return vi.fn(() => socket)
}

export const BASE_TIME = Date.parse('2026-03-18T12:00:00.000Z')

/** A normalized event; `at` is ms after BASE_TIME. */
export function ev(seq, { at = seq, ...extra } = {}) {
  return {
    id: `id-${seq}`,
    seq,
    metric: 'http_request',
    value: { ms: 10 + (seq % 7), bytes: 100 },
    ts: new Date(BASE_TIME + at).toISOString(),
    status: 'ok',
    source: 'test',
    ...extra,
  }
}

/**
 * Event `n` of ingest partition `k` with `partitions` partitions: seq = n*P + k (docs/api.md).
 * `at` (ms after BASE_TIME) defaults to n*10 + k: partitions interleave in time.
 */
export function pev(n, k, partitions, { at = n * 10 + k, ...extra } = {}) {
  return ev(n * partitions + k, { at, ...extra })
}

/**
 * `api.recent` of a server with `partitions` ingest partitions that still holds `history` (any
 * order), as the contract says: `after` is a seq or "s1,s2,..." naming partitions (seq % P);
 * for a named partition the events with a larger seq, for the others their whole history,
 * merged by ts then seq, the newest `limit` (order=desc, the only order the log asks for).
 */
export function partitionedRecent(history, partitions) {
  const part = (seq) => ((seq % partitions) + partitions) % partitions
  const oldestFirst = (a, b) => Date.parse(a.ts) - Date.parse(b.ts) || a.seq - b.seq
  return async ({ limit = 200, after } = {}) => {
    const named = new Map()
    if (after != null) for (const s of String(after).split(',')) named.set(part(Number(s)), Number(s))
    const picked = history.filter((e) => !named.has(part(e.seq)) || e.seq > named.get(part(e.seq))).sort(oldestFirst)
    const page = picked.slice(-(limit ?? 500)).reverse()
    return { count: page.length, metrics: page, complete: page.length === picked.length }
  }
}

export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

export function aggregateBody(windowSec = 60, { total = 1200, errors = 30 } = {}) {
  return {
    window_seconds: windowSec,
    from: '2026-03-18T11:59:00Z',
    to: '2026-03-18T12:00:00Z',
    aggregate: { http_request: 900, orders: 300 },
    metrics: {
      http_request: {
        count: 900,
        errors: 27,
        error_rate: 0.03,
        rate_per_sec: 15,
        fields: {
          ms: { count: 900, sum: 45000, avg: 50, min: 1, max: 900, p50: 42, p95: 180.5, p99: 420 },
          bytes: { count: 900, sum: 9000, avg: 10, min: 1, max: 90, p50: 9, p95: 50, p99: 80 },
        },
      },
      orders: {
        count: 300,
        errors: 3,
        error_rate: 0.01,
        rate_per_sec: 5,
        fields: { amount: { count: 300, sum: 3000, avg: 10, min: 1, max: 99, p50: 8, p95: 40, p99: 90 } },
      },
    },
    total: { count: total, errors, error_rate: errors / total, rate_per_sec: total / windowSec },
  }
}

/** An alert as the server sends it (docs/analytics.md); `at` is seconds after BASE_TIME. */
export function alertBody({ id = 'a1', at = 0, severity = 'warning', state = 'open', ...extra } = {}) {
  const iso = (s) => new Date(BASE_TIME + s * 1000).toISOString()
  return {
    id,
    kind: 'rule',
    metric: 'http_request',
    field: null,
    signal: 'rate',
    direction: 'above',
    severity,
    state,
    value: 12.5,
    threshold: 10,
    zscore: null,
    baseline: null,
    rule_id: 'r-1',
    rule: 'http_request: rate > 10 severity ' + severity,
    opened_at: iso(at),
    closed_at: state === 'closed' ? iso(at + 30) : null,
    updated_at: iso(state === 'closed' ? at + 30 : at),
    acked: false,
    acked_at: null,
    message: `http_request rate = 12.5 > 10 (${id})`,
    ...extra,
  }
}

/** An API whose every call resolves to something harmless unless overridden. */
export function fakeApi(overrides = {}) {
  return {
    health: vi.fn(async () => ({ status: 'ok', redis: 'ok' })),
    recent: vi.fn(async () => ({ count: 0, metrics: [] })),
    aggregate: vi.fn(async ({ window }) => aggregateBody(window)),
    timeseries: vi.fn(async () => ({ points: [], to: '2026-03-18T12:00:00Z' })),
    getGenerator: vi.fn(async () => ({ available: false, running: false, rate: 0, profile: 'mixed', published: 0 })),
    setGenerator: vi.fn(async (body) => ({ available: true, running: false, rate: 100, profile: 'mixed', published: 0, ...body })),
    alerts: vi.fn(async ({ state = 'all' } = {}) => ({ count: 0, state, alerts: [] })),
    ackAlert: vi.fn(async (id) => alertBody({ id, acked: true })),
    trends: vi.fn(async ({ window } = {}) => ({ window_seconds: window, step_seconds: 1, trends: {} })),
    top: vi.fn(async ({ by, window, metric = null, order = 'count', n = 10 } = {}) => ({
      window_seconds: window,
      metric,
      by,
      order,
      field: 'ms',
      n,
      distinct: 0,
      top: [],
      other: null,
    })),
    rules: vi.fn(async () => ({ count: 0, rules: [] })),
    createRule: vi.fn(async (body) => ruleBody({ id: 'r-new', ...body })),
    replaceRule: vi.fn(async (id, body) => ruleBody({ ...body, id })),
    patchRule: vi.fn(async (id, body) => ruleBody({ ...body, id })),
    deleteRule: vi.fn(async (id) => ({ deleted: id })),
    ...overrides,
  }
}

/** A rule as GET /api/rules lists it. */
export function ruleBody(extra = {}) {
  return {
    id: 'r-1',
    name: 'error_rate > 0.05 severity warning',
    metric: null,
    signal: 'error_rate',
    field: null,
    expr: 'error_rate',
    op: '>',
    threshold: 0.05,
    for_s: 0,
    clear_s: null,
    severity: 'warning',
    source: 'api',
    rule: 'error_rate > 0.05 severity warning',
    builtin: false,
    enabled: true,
    silenced_until: null,
    ...extra,
  }
}

export function mockSystemTheme(dark) {
  window.matchMedia = vi.fn((query) => ({
    matches: query.includes('dark') ? dark : !dark,
    media: query,
    addEventListener: vi.fn(),
    removeEventListener: vi.fn(),
  }))
}
