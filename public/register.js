// Register a passkey: the signed-in admin adding one, or an invitee accepting an invite.
import { browserSupportsWebAuthn, startRegistration } from './webauthn/index.js'
import { failureText, postJson, say } from './api.js'

for (const root of document.querySelectorAll('[data-component="passkey-register"]')) {
  const button = root.querySelector('[data-action="passkey-register"]')
  const live = root.querySelector('[data-slot="live"]')
  const texts = { working: root.dataset.textWorking, failed: root.dataset.textFailed }
  const invite = root.dataset.mode === 'invite' ? root.dataset.invite : undefined
  const nameInput = root.querySelector('input[name="passkey-name"]')
  const adminInput = root.querySelector('input[name="admin-name"]')
  if (!browserSupportsWebAuthn()) {
    button.disabled = true
    say(live, 'This browser cannot use passkeys.', 'error')
    continue
  }
  button.addEventListener('click', async () => {
    if (adminInput && !adminInput.reportValidity()) return
    button.disabled = true
    say(live, texts.working, 'busy')
    const extra = invite ? { invite, adminName: adminInput ? adminInput.value.trim() : '' } : {}
    try {
      const { challengeId, options } = await postJson('/_caje/register/options', extra)
      const response = await startRegistration({ optionsJSON: options })
      const name = nameInput ? nameInput.value.trim() : ''
      const done = await postJson('/_caje/register/verify', { ...extra, challengeId, response, name })
      window.location.assign(done.redirect)
    } catch (err) {
      say(live, failureText(err, texts), 'error')
      button.disabled = false
    }
  })
}
