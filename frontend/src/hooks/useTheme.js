import { useCallback, useEffect, useLayoutEffect, useState } from 'react'
import { loadPrefs, savePrefs } from '../lib/prefs.js'

const QUERY = '(prefers-color-scheme: dark)'

export function systemTheme() {
  try {
    return globalThis.matchMedia?.(QUERY)?.matches ? 'dark' : 'light'
  } catch {
    return 'light'
  }
}

/** The theme to paint before React renders, so a reload doesn't flash the wrong colours. */
export const initialTheme = () => loadPrefs().theme ?? systemTheme()

/** Follows the system until the user picks a theme; the pick is persisted. */
export function useTheme() {
  const [chosen, setChosen] = useState(() => loadPrefs().theme)
  const [system, setSystem] = useState(systemTheme)

  useEffect(() => {
    const mq = globalThis.matchMedia?.(QUERY)
    if (!mq?.addEventListener) return undefined
    const onChange = (e) => setSystem(e.matches ? 'dark' : 'light')
    mq.addEventListener('change', onChange)
    return () => mq.removeEventListener('change', onChange)
  }, [])

  const theme = chosen ?? system
  useLayoutEffect(() => {
    document.documentElement.dataset.theme = theme
  }, [theme])

  const toggle = useCallback(() => {
    const next = theme === 'dark' ? 'light' : 'dark'
    savePrefs({ theme: next })
    setChosen(next)
  }, [theme])

  return { theme, toggle }
}
