// Cache page: follow a running populate until it finishes, then show what it
// changed (tables and the header's counts); keep the purge form honest.
const box = document.querySelector('[data-component="populate"]')
const summary = box && box.querySelector('[data-slot="summary"]')
const button = document.querySelector('form[action="/_caje/populate"] button')

/** Re-read this page and swap in the parts a populate changes, keeping scroll position and form input. */
async function refreshTables() {
  const res = await fetch(location.href, { headers: { Accept: 'text/html' }, credentials: 'same-origin' })
  if (!res.ok || !res.headers.get('content-type')?.startsWith('text/html')) return
  const fresh = new DOMParser().parseFromString(await res.text(), 'text/html')
  for (const selector of ['#disk', '#manifest', '[data-component="status"]']) {
    const now = document.querySelector(selector)
    const next = fresh.querySelector(selector)
    if (now && next) now.replaceWith(document.importNode(next, true))
  }
  document.body.dataset.refreshed = String(Date.now())
}

async function poll() {
  try {
    const res = await fetch('/_caje/populate', { headers: { Accept: 'application/json' }, credentials: 'same-origin' })
    if (!res.ok) return
    const data = await res.json()
    if (summary) summary.textContent = data.summary
    const running = Boolean(data.populate && data.populate.running)
    const state = box.querySelector('[data-slot="populate-state"]')
    if (state) state.dataset.running = String(running)
    if (!running) {
      box.dataset.poll = 'false'
      box.querySelector('[data-component="spinner"]')?.remove()
      if (button) button.disabled = false
      await refreshTables()
      box.dataset.done = 'true'
      return
    }
  } catch {
    // Network hiccup: try again on the next tick.
  }
  setTimeout(poll, 1500)
}

if (box && box.dataset.poll === 'true') setTimeout(poll, 1000)

// "Everything" needs no value: the field is disabled and says so.
const kind = document.querySelector('form[action="/_caje/purge"] select[name="kind"]')
const value = document.querySelector('form[action="/_caje/purge"] input[name="value"]')
const PLACEHOLDERS = { url: 'https://example.com/page', prefix: 'https://example.com/blog/', tag: 'a cache tag, e.g. product-7', all: 'everything on every node' }
function syncPurgeForm() {
  if (!kind || !value) return
  const all = kind.value === 'all'
  value.disabled = all
  if (all) value.value = ''
  value.placeholder = PLACEHOLDERS[kind.value] ?? ''
}
kind?.addEventListener('change', syncPurgeForm)
syncPurgeForm()
