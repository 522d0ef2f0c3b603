import { useState } from 'react'
import { apiKeyStore } from '../lib/api.js'

/**
 * Shown where a change was refused with 401: the server has INGEST_API_KEY. The key is kept for
 * this tab only (sessionStorage) and sent as X-API-Key; `onSaved` retries what was refused.
 */
export function ApiKeyPrompt({ onSaved, onCancel, store = apiKeyStore }) {
  const [key, setKey] = useState('')
  return (
    <form
      className="api-key-prompt"
      data-testid="api-key-prompt"
      onSubmit={(e) => {
        e.preventDefault()
        if (!key.trim()) return
        store.set(key.trim())
        onSaved?.()
      }}
    >
      <label className="api-key-label">
        <span>This server requires an API key for changes:</span>
        <input
          type="password"
          autoComplete="off"
          data-testid="api-key-input"
          value={key}
          onChange={(e) => setKey(e.target.value)}
          aria-label="API key"
          placeholder="X-API-Key"
        />
      </label>
      <button type="submit" className="btn btn-small btn-primary" data-testid="api-key-save" disabled={!key.trim()}>
        Use key
      </button>
      {onCancel && (
        <button type="button" className="btn btn-small" onClick={onCancel}>
          Cancel
        </button>
      )}
      <span className="api-key-note">kept for this tab only</span>
    </form>
  )
}
