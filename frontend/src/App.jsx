import { useCallback, useMemo, useState } from 'react'
import { AlertFeed } from './components/AlertFeed.jsx'
import { ErrorChart, LatencyChart, ThroughputChart } from './components/Charts.jsx'
import { EventLog } from './components/EventLog.jsx'
import { GeneratorControls } from './components/GeneratorControls.jsx'
import { Header } from './components/Header.jsx'
import { MetricTable } from './components/MetricTable.jsx'
import { RulesPanel } from './components/RulesPanel.jsx'
import { GapNotice } from './components/Notices.jsx'
import { StatCards } from './components/StatCards.jsx'
import { TopPanel } from './components/TopPanel.jsx'
import { useHealth } from './hooks/useHealth.js'
import { connectSocket, usePulse } from './hooks/usePulse.js'
import { useTagCatalog } from './hooks/useTagCatalog.js'
import { useTheme } from './hooks/useTheme.js'
import { useTrends } from './hooks/useTrends.js'
import { openCounts } from './lib/alerts.js'
import { defaultApi } from './lib/api.js'
import { pickLatencyField } from './lib/latency.js'
import { loadPrefs, savePrefs } from './lib/prefs.js'

/** `io` and `api` are injectable so tests can drive the whole page with fakes. */
export default function App({ io = connectSocket, api = defaultApi }) {
  const [windowSec, setWindowSec] = useState(() => loadPrefs().window)
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
  }, [])

  const latency = useMemo(() => pickLatencyField(pulse.aggregate?.metrics), [pulse.aggregate])
  const metricNames = useMemo(() => Object.keys(pulse.aggregate?.metrics ?? {}), [pulse.aggregate])
  const view = frozen ?? pulse
  // A frozen snapshot taken before the window changed would plot on the wrong scale.
  const series = view.series && view.series.windowSec === windowSec ? view.series : pulse.series

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
        <StatCards aggregate={pulse.aggregate} latency={latency} windowSec={windowSec} stale={pulse.stale} />
        {/* Every row pairs a wide panel with a narrow one; the feed sits first, next to throughput. */}
        <div className="panel-grid">
          <ThroughputChart alerts={pulse.alerts.items} series={series} windowSec={windowSec} theme={theme} className="span-2" />
          <AlertFeed alerts={pulse.alerts} api={api} onUpdate={pulse.upsertAlert} />
          <MetricTable aggregate={pulse.aggregate} trends={trends} className="span-2" />
          <LatencyChart alerts={pulse.alerts.items} series={series} windowSec={windowSec} theme={theme} />
          <TopPanel api={api} windowSec={windowSec} catalog={tagCatalog} className="span-2" />
          <ErrorChart alerts={pulse.alerts.items} series={series} windowSec={windowSec} theme={theme} />
        </div>
        <RulesPanel api={api} />
        <EventLog
          events={view.events}
          metrics={metricNames}
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
