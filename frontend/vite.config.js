import { availableParallelism } from 'node:os'
import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

// The built files are served by Flask at `/`, so every URL in the app is relative (same origin).
// In dev, Vite serves the app and forwards the API and the Socket.IO connection to Flask.
// PULSEBOARD_BACKEND points the dev proxy at a server on another port.
const backend = process.env.PULSEBOARD_BACKEND || 'http://127.0.0.1:5000'

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/api': backend,
      '/socket.io': { target: backend, ws: true },
    },
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.jsx'],
    include: ['src/**/*.test.{js,jsx}'],
    restoreMocks: true,
    // Vitest's default (cores - 1) is one worker on a 2-core machine: the test files then run
    // one after another, mostly waiting on jsdom set-up. Two workers: 37 s -> 25 s there.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    // The files share their worker processes instead of each starting a fresh one (setup.jsx
    // cleans the DOM, storage, URL and timers after every test): 24 s -> 7 s on 2 cores.
    isolate: false,
  },
})
