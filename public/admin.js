// Every page: one-time secrets (invite links, API tokens) select themselves and can be copied.
function selectAll(node) {
  const range = document.createRange()
  range.selectNodeContents(node)
  const selection = window.getSelection()
  selection.removeAllRanges()
  selection.addRange(range)
}
for (const value of document.querySelectorAll('[data-copy]')) {
  value.addEventListener('focus', () => selectAll(value))
  const copy = document.createElement('button')
  copy.type = 'button'
  copy.textContent = 'Copy'
  copy.dataset.variant = 'quiet'
  copy.addEventListener('click', async () => {
    selectAll(value)
    try {
      await navigator.clipboard.writeText(value.textContent.trim())
      copy.textContent = 'Copied'
    } catch {
      copy.textContent = 'Press Ctrl+C'
    }
  })
  value.after(copy)
}
