import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import App from './App.jsx'
import { initialTheme } from './hooks/useTheme.js'
import './styles.css'

document.documentElement.dataset.theme = initialTheme()

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
)
