// Every page: one-time secrets (invite links, API tokens) select themselves and can be copied.
for (const input of document.querySelectorAll('input[data-select-on-focus]')) {
  input.addEventListener('focus', () => input.select())
  const copy = document.createElement('button')
  copy.type = 'button'
  copy.textContent = 'Copy'
  copy.dataset.variant = 'quiet'
  copy.addEventListener('click', async () => {
    input.select()
    try {
      await navigator.clipboard.writeText(input.value)
      copy.textContent = 'Copied'
    } catch {
      copy.textContent = 'Press Ctrl+C'
    }
  })
  input.after(copy)
}
