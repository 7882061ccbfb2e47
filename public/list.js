// Cache page: follow a running populate until it finishes.
const box = document.querySelector('[data-component="populate"]')
const summary = box && box.querySelector('[data-slot="summary"]')
const button = document.querySelector('form[action="/_caje/populate"] button')

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
      return
    }
  } catch {
    // Network hiccup: try again on the next tick.
  }
  setTimeout(poll, 1500)
}

if (box && box.dataset.poll === 'true') setTimeout(poll, 1000)
