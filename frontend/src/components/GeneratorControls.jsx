import { useEffect, useRef, useState } from 'react'
import { formatCount } from '../lib/format.js'

// The slider is logarithmic so 1/s and 100k/s are both reachable; the number box is exact. Both
// stop at the server's maximum (backend/api/generator.py MAX_RATE).
export const RATE_MIN = 1
export const RATE_MAX = 100000
// What the bench measured this stack to deliver without loss (README, "Performance"): above it the
// dashboard asks before applying.
export const CONFIRM_ABOVE = 20000
const LOG_MAX = Math.log10(RATE_MAX)
const SLIDER_DEBOUNCE_MS = 300

const toSlider = (rate) => Math.min(LOG_MAX, Math.max(0, Math.log10(Math.max(RATE_MIN, Number(rate) || RATE_MIN))))
const fromSlider = (v) => {
  const r = 10 ** Number(v)
  return r >= 100 ? Math.round(r / 10) * 10 : Math.round(r)
}

/**
 * Start/stop and rate for the built-in generator. Hidden unless the server says one is
 * `available`. The server's `generator` socket event (`live`) keeps every tab in sync.
 */
export function GeneratorControls({ api, live }) {
  const [gen, setGen] = useState(null)
  const [draft, setDraft] = useState('')
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const [confirm, setConfirm] = useState(null) // a rate above CONFIRM_ABOVE waiting for a yes
  const editing = useRef(false)
  const timer = useRef(null)

  useEffect(() => {
    let alive = true
    api
      .getGenerator()
      .then((g) => alive && g && typeof g === 'object' && setGen((cur) => cur ?? g))
      .catch(() => alive && setGen((cur) => cur ?? { available: false }))
    return () => {
      alive = false
    }
  }, [api])

  // A push from the server (another tab, the CLI): adopt it during render, React's pattern for
  // state that follows a prop (no extra effect pass).
  const [seenLive, setSeenLive] = useState(live)
  if (live !== seenLive) {
    setSeenLive(live)
    if (live) setGen(live)
  }

  useEffect(() => {
    if (gen && !editing.current && gen.rate != null) setDraft(String(gen.rate))
  }, [gen])

  useEffect(() => () => clearTimeout(timer.current), [])

  if (!gen || gen.available !== true) return null

  async function send(body) {
    setBusy(true)
    try {
      const next = await api.setGenerator(body)
      setError(null)
      if (next && typeof next === 'object') setGen(next)
    } catch (err) {
      setError(err?.message ?? String(err))
      if (gen.rate != null) setDraft(String(gen.rate))
    } finally {
      setBusy(false)
    }
  }

  function commitRate(value = draft) {
    editing.current = false
    clearTimeout(timer.current)
    const rate = Number(value)
    if (String(value).trim() === '' || !Number.isFinite(rate) || rate <= 0 || rate > RATE_MAX) {
      setError(`Rate must be a number of events per second from ${RATE_MIN} to ${formatCount(RATE_MAX)}`)
      setDraft(String(gen.rate ?? ''))
      return
    }
    if (rate === gen.rate) return
    if (rate > CONFIRM_ABOVE) {
      setError(null)
      setConfirm(rate)
      return
    }
    send({ rate })
  }

  function onSlider(e) {
    const rate = fromSlider(e.target.value)
    editing.current = true
    setDraft(String(rate))
    clearTimeout(timer.current)
    timer.current = setTimeout(() => commitRate(rate), SLIDER_DEBOUNCE_MS)
  }

  const running = Boolean(gen.running)
  return (
    <section className="card generator" aria-label="Event generator">
      <div className="generator-info">
        <span className={`gen-dot ${running ? 'on' : ''}`} aria-hidden="true" />
        <div>
          <div className="generator-title">Generator {running ? 'running' : 'stopped'}</div>
          <div className="card-subtitle">
            profile {String(gen.profile ?? '—')} · {formatCount(Number(gen.published))} published
          </div>
        </div>
      </div>
      <div className="generator-controls">
        <label className="rate-field">
          <span className="select-label">Rate</span>
          <input
            type="range"
            aria-label="Generator rate (logarithmic)"
            min={0}
            max={LOG_MAX}
            step={0.01}
            value={toSlider(draft || gen.rate)}
            onChange={onSlider}
          />
          <input
            type="number"
            data-testid="generator-rate"
            aria-label="Generator rate, events per second"
            min={RATE_MIN}
            max={RATE_MAX}
            step="any"
            inputMode="decimal"
            value={draft}
            onFocus={() => {
              editing.current = true
            }}
            onChange={(e) => {
              editing.current = true
              setDraft(e.target.value)
            }}
            onBlur={() => commitRate()}
            onKeyDown={(e) => {
              if (e.key === 'Enter') e.currentTarget.blur() // blur commits, exactly once
            }}
          />
          <span className="unit">/s</span>
        </label>
        <button
          type="button"
          className={`btn ${running ? '' : 'btn-primary'}`}
          data-testid="generator-toggle"
          disabled={busy}
          onClick={() => send({ running: !running })}
        >
          {running ? 'Stop' : 'Start'}
        </button>
      </div>
      {confirm !== null && (
        <div className="generator-confirm" role="alertdialog" aria-label="Confirm the rate" data-testid="generator-confirm">
          <span>
            {formatCount(confirm)}/s is above the {formatCount(CONFIRM_ABOVE)} events/s the bench measured without loss
            here; the dashboard and Redis may fall behind.
          </span>
          <button
            type="button"
            className="btn btn-small btn-primary"
            data-testid="generator-confirm-yes"
            onClick={() => {
              setConfirm(null)
              send({ rate: confirm })
            }}
          >
            Apply {formatCount(confirm)}/s
          </button>
          <button
            type="button"
            className="btn btn-small"
            data-testid="generator-confirm-no"
            onClick={() => {
              setConfirm(null)
              setDraft(String(gen.rate ?? ''))
            }}
          >
            Keep {formatCount(Number(gen.rate))}/s
          </button>
        </div>
      )}
      {error && (
        <div className="generator-error" role="alert">
          {error}
        </div>
      )}
    </section>
  )
}
