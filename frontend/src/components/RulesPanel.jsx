import { memo, useCallback, useMemo, useRef, useState } from 'react'
import { usePoll } from '../hooks/usePoll.js'
import { formatAlertTime } from '../lib/alerts.js'
import { SILENCE_CHOICES, isSilenced, normalizeRules, ruleExtras, ruleTextForEdit } from '../lib/rules.js'
import { ApiKeyPrompt } from './ApiKeyPrompt.jsx'

export const RULES_POLL_MS = 10000
const EMPTY_FORM = { id: null, name: '', rule: '', severity: 'warning' }

/**
 * Alert rules: the built-in ones and those created here or through the API. Create, edit (text
 * form), silence for a while, turn off, delete. Every refusal shows the API's own message; a 401
 * asks for the API key and retries.
 */
export const RulesPanel = memo(function RulesPanel({ api, className = '' }) {
  const [version, setVersion] = useState(0) // bumped after a change: reload at once
  const { data: fresh, error: loadError } = usePoll((signal) => api.rules({ signal }), RULES_POLL_MS, `rules:${version}`)
  // A reload after a change starts a new poll (no answer yet): keep showing the last list meanwhile.
  const last = useRef(null)
  if (fresh) last.current = fresh
  const data = fresh ?? last.current
  const rules = useMemo(() => normalizeRules(data), [data])
  const [form, setForm] = useState(EMPTY_FORM)
  const [formError, setFormError] = useState(null)
  const [rowError, setRowError] = useState(null) // {id, message}
  const [needKey, setNeedKey] = useState(null) // the action to retry once a key is given
  const [busy, setBusy] = useState(false)

  const run = useCallback(
    async (action, onError) => {
      setBusy(true)
      try {
        await action()
        setVersion((v) => v + 1)
        return true
      } catch (err) {
        if (err?.status === 401) {
          setNeedKey(() => () => run(action, onError))
          onError(`Refused: ${err.message}. This server requires an API key for changes.`)
        } else onError(err?.message ?? String(err), err?.field)
        return false
      } finally {
        setBusy(false)
      }
    },
    [],
  )

  const submit = async (e) => {
    e.preventDefault()
    setFormError(null)
    const body = { rule: form.rule.trim(), severity: form.severity }
    if (form.name.trim()) body.name = form.name.trim()
    else if (form.id) body.name = null // back to the rule text
    const ok = await run(
      () => (form.id ? api.patchRule(form.id, body) : api.createRule(body)),
      (message, field) => setFormError(field && field !== 'rule' ? `${field}: ${message}` : message),
    )
    if (ok) setForm(EMPTY_FORM)
  }

  const rowAction = (id, action) =>
    run(action, (message) => setRowError({ id, message })).then((ok) => ok && setRowError(null))

  return (
    <section className={`card rules-card ${className}`} aria-label="Alert rules" data-testid="rules-panel">
      <header className="card-header">
        <h2 className="card-title">Rules</h2>
        <span className="card-subtitle">
          built-in ones work from the start; e.g. <code>http_request: p95(ms) &gt; 800 for 30s</code>
        </span>
      </header>
      <form className="rule-form" data-testid="rule-form" onSubmit={submit}>
        <input
          className="rule-name"
          data-testid="rule-name"
          aria-label="Rule name"
          placeholder="Name (optional)"
          value={form.name}
          onChange={(e) => setForm({ ...form, name: e.target.value })}
        />
        <input
          className="rule-text"
          data-testid="rule-text"
          aria-label="Rule"
          placeholder="error_rate > 5% for 30s"
          required
          value={form.rule}
          onChange={(e) => setForm({ ...form, rule: e.target.value })}
        />
        <select
          data-testid="rule-severity"
          aria-label="Severity"
          value={form.severity}
          onChange={(e) => setForm({ ...form, severity: e.target.value })}
        >
          <option value="warning">warning</option>
          <option value="critical">critical</option>
        </select>
        <button type="submit" className="btn btn-primary btn-small" data-testid="rule-save" disabled={busy || !form.rule.trim()}>
          {form.id ? 'Save' : 'Add rule'}
        </button>
        {form.id && (
          <button
            type="button"
            className="btn btn-small"
            onClick={() => {
              setForm(EMPTY_FORM)
              setFormError(null)
            }}
          >
            Cancel
          </button>
        )}
      </form>
      {formError && (
        <div className="rule-error" role="alert" data-testid="rule-error">
          {formError}
        </div>
      )}
      {needKey && (
        <ApiKeyPrompt
          onSaved={() => {
            const retry = needKey
            setNeedKey(null)
            setFormError(null)
            setRowError(null)
            retry()
          }}
          onCancel={() => setNeedKey(null)}
        />
      )}
      {loadError && !data && (
        <div className="rule-error" role="alert">
          Could not load rules ({loadError.message ?? String(loadError)}).
        </div>
      )}
      <div className="table-scroll rules-scroll">
        <table className="rules-table" data-testid="rules-table">
          <thead>
            <tr>
              <th scope="col">Rule</th>
              <th scope="col">State</th>
              <th scope="col" className="sr-only-col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rules.map((r) => {
              const silenced = isSilenced(r)
              const state = !r.enabled ? 'off' : silenced ? 'silenced' : 'on'
              return (
                <tr
                  key={r.id}
                  data-testid="rule-row"
                  data-rule-id={r.id}
                  data-builtin={r.builtin ? 'true' : 'false'}
                  data-state={state}
                  className={`rule-row rule-${state}`}
                >
                  <td className="rule-cell">
                    <div className="rule-title">
                      <span className={`badge alert-severity sev-${r.severity}`}>{r.severity}</span>
                      <span className="rule-title-name">{r.name}</span>
                      {r.builtin && <span className="badge rule-builtin">built-in</span>}
                    </div>
                    <code className="rule-code">{r.rule}</code>
                    {ruleExtras(r) && <div className="rule-extras">{ruleExtras(r)}</div>}
                    {rowError?.id === r.id && (
                      <div className="rule-error" role="alert">
                        {rowError.message}
                      </div>
                    )}
                  </td>
                  <td className="rule-state" data-testid="rule-state">
                    {state === 'off'
                      ? 'off'
                      : silenced
                        ? `silenced until ${formatAlertTime(new Date(r.silenced_until * 1000).toISOString())}`
                        : 'on'}
                  </td>
                  <td className="rule-actions">
                    <button
                      type="button"
                      className="btn btn-small"
                      data-testid="rule-edit"
                      onClick={() => {
                        setFormError(null)
                        setForm({ id: r.id, name: r.name === r.rule ? '' : r.name, rule: ruleTextForEdit(r), severity: r.severity })
                      }}
                    >
                      Edit
                    </button>
                    {silenced ? (
                      <button
                        type="button"
                        className="btn btn-small"
                        data-testid="rule-unsilence"
                        onClick={() => rowAction(r.id, () => api.patchRule(r.id, { silenced_until: null }))}
                      >
                        Unsilence
                      </button>
                    ) : (
                      <select
                        className="rule-silence"
                        data-testid="rule-silence"
                        aria-label={`Silence ${r.name}`}
                        value=""
                        disabled={!r.enabled}
                        onChange={(e) => {
                          const seconds = Number(e.target.value)
                          if (seconds > 0)
                            rowAction(r.id, () => api.patchRule(r.id, { silenced_until: Math.floor(Date.now() / 1000) + seconds }))
                        }}
                      >
                        <option value="">Silence…</option>
                        {SILENCE_CHOICES.map((c) => (
                          <option key={c.value} value={c.value}>
                            {c.label}
                          </option>
                        ))}
                      </select>
                    )}
                    <button
                      type="button"
                      className="btn btn-small"
                      data-testid="rule-toggle"
                      aria-pressed={r.enabled}
                      onClick={() => rowAction(r.id, () => api.patchRule(r.id, { enabled: !r.enabled }))}
                    >
                      {r.enabled ? 'Turn off' : 'Turn on'}
                    </button>
                    {!r.builtin && (
                      <button
                        type="button"
                        className="btn btn-small btn-danger"
                        data-testid="rule-delete"
                        aria-label={`Delete ${r.name}`}
                        onClick={() => rowAction(r.id, () => api.deleteRule(r.id))}
                      >
                        Delete
                      </button>
                    )}
                  </td>
                </tr>
              )
            })}
          </tbody>
        </table>
        {!rules.length && <div className="empty">{data ? 'No rules.' : 'Loading rules…'}</div>}
      </div>
    </section>
  )
})
