// Alert rules as the API lists them (docs/analytics.md); like everything from the server, only the
// documented fields with their types are kept.

const str = (v) => (v == null ? null : String(v))
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null)

export function normalizeRule(raw) {
  if (!raw || typeof raw !== 'object' || typeof raw.id !== 'string') return null
  return {
    id: raw.id,
    name: str(raw.name) ?? raw.id,
    rule: str(raw.rule) ?? '',
    metric: str(raw.metric),
    signal: str(raw.signal),
    severity: raw.severity === 'critical' ? 'critical' : 'warning',
    builtin: raw.builtin === true,
    enabled: raw.enabled !== false,
    silenced_until: num(raw.silenced_until),
    window_s: num(raw.window_s),
    min_rate: num(raw.min_rate),
    clear_threshold: num(raw.clear_threshold),
    critical: num(raw.critical),
    critical_clear: num(raw.critical_clear),
    baseline_factor: num(raw.baseline_factor),
    has_field: str(raw.has_field),
  }
}

export function normalizeRules(body) {
  const list = Array.isArray(body?.rules) ? body.rules : []
  return list
    .map(normalizeRule)
    .filter(Boolean)
    .sort((a, b) => Number(b.builtin) - Number(a.builtin) || a.name.localeCompare(b.name))
}

/** The rule text without the "severity x" tail the form has a control for. */
export function ruleTextForEdit(rule) {
  return rule.rule.replace(/\s+severity\s+(warning|critical)\s*$/, '')
}

const level = (rule, v) => (rule.signal === 'error_rate' ? `${Number((v * 100).toFixed(3))}%` : String(v))

/** What a rule adds to its text: "over 1m · clears < 1% · critical > 5% (clears < 2%) · ≥ 120/min". */
export function ruleExtras(rule) {
  const parts = []
  if (rule.window_s) parts.push(`over ${rule.window_s >= 60 && rule.window_s % 60 === 0 ? `${rule.window_s / 60}m` : `${rule.window_s}s`}`)
  const back = rule.rule.includes('>') ? '<' : '>'
  if (rule.clear_threshold != null) parts.push(`clears ${back} ${level(rule, rule.clear_threshold)}`)
  if (rule.critical != null) {
    const clear = rule.critical_clear != null ? ` (back ${back} ${level(rule, rule.critical_clear)})` : ''
    parts.push(`critical ${back === '<' ? '>' : '<'} ${level(rule, rule.critical)}${clear}`)
  }
  if (rule.baseline_factor != null) parts.push(`and > ${rule.baseline_factor}× baseline`)
  if (rule.min_rate != null) parts.push(`needs ≥ ${Math.round(rule.min_rate * 60)} events/min`)
  if (rule.has_field) parts.push(`metrics with ${rule.has_field}`)
  return parts.join(' · ')
}

export const SILENCE_CHOICES = [
  { value: 900, label: '15 min' },
  { value: 3600, label: '1 h' },
  { value: 4 * 3600, label: '4 h' },
  { value: 24 * 3600, label: '24 h' },
]

export const isSilenced = (rule, nowMs = Date.now()) => rule.silenced_until != null && rule.silenced_until * 1000 > nowMs
