// Colours that read on both themes. The generator's metrics have fixed colours (errors are red),
// so a reload looks the same; any other metric gets the next free colour on first sight and keeps
// it for the session, so a line never changes colour when another metric appears.
export const PALETTE = ['#3b82f6', '#10b981', '#f59e0b', '#a855f7', '#06b6d4', '#ef4444', '#ec4899', '#84cc16', '#f97316', '#6366f1', '#14b8a6', '#eab308']

const KNOWN = {
  http_request: '#3b82f6',
  page_views: '#10b981',
  sensor: '#f59e0b',
  latency: '#a855f7',
  orders: '#06b6d4',
  errors: '#ef4444',
  signups: '#ec4899',
}
const REST = PALETTE.filter((c) => !Object.values(KNOWN).includes(c))

const assigned = new Map(Object.entries(KNOWN))
let next = 0

export function metricColor(name) {
  if (!assigned.has(name)) assigned.set(name, REST[next++ % REST.length])
  return assigned.get(name)
}

export const CHART_THEME = {
  light: { text: '#5b6475', grid: 'rgba(15, 23, 42, 0.07)', tooltipBg: '#0f172a' },
  dark: { text: '#9aa4b5', grid: 'rgba(226, 232, 240, 0.08)', tooltipBg: '#020617' },
}
