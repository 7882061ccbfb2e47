// Shared by the page scripts: JSON POSTs to the admin API with the page's CSRF token.

const csrfMeta = document.querySelector('meta[name="csrf-token"]')

/** POST a JSON body; resolves to the parsed answer, rejects with the server's message. */
export async function postJson(url, body) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' }
  if (csrfMeta) headers['X-CSRF-Token'] = csrfMeta.content
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin' })
  let data = {}
  try {
    data = await res.json()
  } catch {
    // Not JSON (a proxy error page): fall through with the status.
  }
  if (!res.ok) {
    const err = new Error(typeof data.error === 'string' ? data.error : `Request failed (${res.status}).`)
    err.status = res.status
    err.fromServer = typeof data.error === 'string'
    throw err
  }
  return data
}

/** Write a message into a live region; kind is 'ok', 'error' or 'busy'. */
export function say(live, text, kind) {
  if (!live) return
  live.textContent = text
  live.dataset.kind = kind
}

/** Message for a failed ceremony: the server's (user-safe) text, or one for the browser's refusal. */
export function failureText(err, texts) {
  if (err && err.fromServer) return err.message
  if (err && (err.name === 'NotAllowedError' || err.name === 'AbortError')) return texts.cancelled || texts.failed
  if (err && err.name === 'InvalidStateError') return err.message || texts.failed
  return texts.failed
}
