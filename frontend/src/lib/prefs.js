// User preferences (window, theme) live in one localStorage entry so they travel together.
export const PREFS_KEY = 'pulseboard:prefs'

export const WINDOWS = [
  { value: 10, label: '10 s' },
  { value: 60, label: '1 m' },
  { value: 300, label: '5 m' },
  { value: 900, label: '15 m' },
  { value: 3600, label: '1 h' },
]
export const DEFAULT_WINDOW = 60
const WINDOW_VALUES = new Set(WINDOWS.map((w) => w.value))
const THEMES = new Set(['light', 'dark'])

function storage() {
  try {
    return globalThis.localStorage ?? null
  } catch {
    return null // e.g. disabled storage in a sandboxed iframe
  }
}

/** Read preferences, ignoring anything malformed (the value is user-editable). */
export function loadPrefs() {
  let raw
  try {
    raw = JSON.parse(storage()?.getItem(PREFS_KEY) ?? 'null')
  } catch {
    raw = null
  }
  const prefs = { window: DEFAULT_WINDOW, theme: null }
  if (raw && typeof raw === 'object') {
    if (WINDOW_VALUES.has(raw.window)) prefs.window = raw.window
    if (THEMES.has(raw.theme)) prefs.theme = raw.theme
  }
  return prefs
}

export function savePrefs(patch) {
  const next = { ...loadPrefs(), ...patch }
  try {
    storage()?.setItem(PREFS_KEY, JSON.stringify(next))
  } catch {
    // Quota or privacy mode: preferences just don't persist.
  }
  return next
}

export function windowLabel(seconds) {
  return WINDOWS.find((w) => w.value === seconds)?.label ?? `${seconds} s`
}
