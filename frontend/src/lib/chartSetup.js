// The only place Chart.js parts are registered (tree-shaken: line charts on a linear axis).
// A linear x axis of unix ms with a tick formatter avoids needing a date adapter.
import { Chart, Filler, Legend, LinearScale, LineController, LineElement, LogarithmicScale, PointElement, Tooltip } from 'chart.js'

import { alertMarkerPlugin } from './markers.js'

Chart.register(LineController, LineElement, PointElement, LinearScale, LogarithmicScale, Filler, Legend, Tooltip, alertMarkerPlugin)

export { Chart }
