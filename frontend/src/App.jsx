import { useCallback, useEffect, useMemo, useRef, useState } from 'react'
import { AlertFeed } from './components/AlertFeed.jsx'
import { ErrorChart, LatencyChart, ThroughputChart } from './components/Charts.jsx'
import { EventLog } from './components/EventLog.jsx'
import { GeneratorControls } from './components/GeneratorControls.jsx'
import { Header } from './components/Header.jsx'
import { MetricTable } from './components/MetricTable.jsx'
import { RangeBar, tagPairs } from './components/RangeBar.jsx'
import { RulesPanel } from './components/RulesPanel.jsx'
import { GapNotice } from './components/Notices.jsx'
import { StatCards } from './components/StatCards.jsx'
import { TopPanel } from './components/TopPanel.jsx'
import { useHealth } from './hooks/useHealth.js'
import { useRangeAggregate, useRangeSeries } from './hooks/useRangeSeries.js'
import { connectSocket, usePulse } from './hooks/usePulse.js'
import { useTagCatalog } from './hooks/useTagCatalog.js'
import { useTheme } from './hooks/useTheme.js'
import { useTrends } from './hooks/useTrends.js'
import { openCounts } from './lib/alerts.js'
import { defaultApi } from './lib/api.js'
import { pickLatencyField } from './lib/latency.js'
import { loadPrefs, savePrefs } from './lib/prefs.js'
import { readUrlState, writeUrlState } from './lib/urlstate.js'

// What the link asked for, read once: it wins over the saved preferences for this page load.
const fromUrl = () => (typeof window === 'undefined' ? {} : readUrlState(window.location.search))

/** `io` and `api` are injectable so tests can drive the whole page with fakes. */
export default function App({ io = connectSocket, api = defaultApi }) {
  const [url] = useState(fromUrl)
  const [windowSec, setWindowSec] = useState(() => url.window ?? loadPrefs().window)
  const [range, setRange] = useState(url.range ?? null) // {from, to} ms: an absolute range; null: live
  const [tag, setTag] = useState(url.tag ?? null) // "endpoint=/api/orders": the charts' slice
  const [logScale, setLogScale] = useState(Boolean(url.logScale))
  const [logFilters, setLogFilters] = useState({ metric: url.logMetric ?? '', text: url.logText ?? '' })
  const { theme, toggle: toggleTheme } = useTheme()
  const pulse = usePulse({ windowSec, io, api })
  const health = useHealth(api)
  const trends = useTrends(api, windowSec)
  const tagCatalog = useTagCatalog(pulse.events)
  const openAlerts = useMemo(() => openCounts(pulse.alerts.items), [pulse.alerts])

  // Pause freezes what the log and charts show; the hook keeps counting underneath.
  const [frozen, setFrozen] = useState(null)
  const paused = frozen !== null
  const togglePause = useCallback(() => {
    // `eventsReceived` matches the events on screen, so "N new events" counts exactly what the
    // frozen log doesn't show.
    setFrozen((f) => (f ? null : { events: pulse.events, series: pulse.series, received: pulse.eventsReceived }))
  }, [pulse.events, pulse.series, pulse.eventsReceived])
  const resume = useCallback(() => setFrozen(null), [])

  const changeWindow = useCallback((w) => {
    savePrefs({ window: w })
    setWindowSec(w)
    setRange(null) // a preset is a live window
  }, [])

  // The view in the URL (replaceState: no history entry per keystroke), so a link reproduces it.
  useEffect(() => {
    const search = writeUrlState({ window: windowSec, range, tag, logScale, logMetric: logFilters.metric, logText: logFilters.text })
    if (search !== window.location.search) window.history.replaceState(null, '', `${window.location.pathname}${search}${window.location.hash}`)
  }, [windowSec, range, tag, logScale, logFilters])

  const liveLatency = useMemo(() => pickLatencyField(pulse.aggregate?.metrics), [pulse.aggregate])
  const metricNames = useMemo(() => Object.keys(pulse.aggregate?.metrics ?? {}), [pulse.aggregate])
  const view = frozen ?? pulse
  // A frozen snapshot taken before the window changed would plot on the wrong scale.
  const liveSeries = view.series && view.series.windowSec === windowSec ? view.series : pulse.series
  // An absolute range or a tag filter: charts from the server alone (the live path is untouched).
  const ranged = useRangeSeries(api, { range, tag, windowSec, latency: liveLatency })
  const series = ranged ? ranged.series : liveSeries
  const chartWindow = range ? Math.max(1, Math.round((range.to - range.from) / 1000)) : windowSec
  const rangeAggregate = useRangeAggregate(api, range)
  const rangeLatency = useMemo(() => pickLatencyField(rangeAggregate?.metrics), [rangeAggregate])
  const latency = (range && rangeLatency) || liveLatency
  const [suggestions, setSuggestions] = useState([])
  const eventsRef = useRef(pulse.events)
  useEffect(() => {
    eventsRef.current = pulse.events
  })
  // Computed when the tag box gets focus, not with every log commit.
  const suggestTags = useCallback(() => setSuggestions(tagPairs(eventsRef.current)), [])

  return (
    <div className="app">
      <Header
        status={pulse.status}
        attempt={pulse.attempt}
        ratePerSec={pulse.ratePerSec}
        redisDown={health?.redis === 'down'}
        serverStatus={pulse.serverStatus}
        openAlerts={openAlerts}
        windowSec={windowSec}
        onWindowChange={changeWindow}
        paused={paused}
        onTogglePause={togglePause}
        theme={theme}
        onToggleTheme={toggleTheme}
      />
      <main className="content">
        <GapNotice gap={pulse.gap} error={pulse.backfillError} onDismiss={pulse.dismissGap} />
        <GeneratorControls api={api} live={pulse.generator} />
        <RangeBar
          range={range}
          windowSec={windowSec}
          onRange={setRange}
          tag={tag}
          onTag={setTag}
          logScale={logScale}
          onLogScale={setLogScale}
          tagSuggestions={suggestions}
          onSuggest={suggestTags}
        />
        <StatCards
          aggregate={range ? rangeAggregate : pulse.aggregate}
          latency={latency}
          windowSec={range ? Math.round((range.to - range.from) / 1000) : windowSec}
          stale={range ? null : pulse.stale}
        />
        {/* Every row pairs a wide panel with a narrow one; the feed sits first, next to throughput. */}
        <div className="panel-grid">
          <ThroughputChart alerts={pulse.alerts.items} onZoom={setRange} series={series} windowSec={chartWindow} theme={theme} className="span-2" />
          <AlertFeed alerts={pulse.alerts} api={api} onUpdate={pulse.upsertAlert} />
          <MetricTable aggregate={pulse.aggregate} trends={trends} className="span-2" />
          <LatencyChart alerts={pulse.alerts.items} onZoom={setRange} logScale={logScale} series={series} windowSec={chartWindow} theme={theme} />
          <TopPanel api={api} windowSec={windowSec} catalog={tagCatalog} className="span-2" />
          <ErrorChart alerts={pulse.alerts.items} onZoom={setRange} series={series} windowSec={chartWindow} theme={theme} />
        </div>
        <RulesPanel api={api} />
        <EventLog
          events={view.events}
          metrics={metricNames}
          initialMetric={logFilters.metric}
          initialText={logFilters.text}
          onFiltersChange={setLogFilters}
          paused={paused}
          newCount={paused ? pulse.received - frozen.received : 0}
          onResume={resume}
        />
      </main>
      <footer className="footer">
        Pulseboard · {pulse.lastSeq != null ? `last seq ${pulse.lastSeq}` : 'no events yet'}
      </footer>
    </div>
  )
}
