// "Sign in with a passkey": usernameless, discoverable credentials.
import { browserSupportsWebAuthn, startAuthentication } from './webauthn/index.js'
import { failureText, postJson, say } from './api.js'

const root = document.querySelector('[data-component="passkey-sign-in"]')
if (root) {
  const button = root.querySelector('[data-action="passkey-sign-in"]')
  const live = root.querySelector('[data-slot="live"]')
  const texts = {
    working: root.dataset.textWorking,
    failed: root.dataset.textFailed,
    cancelled: root.dataset.textCancelled,
  }
  if (!browserSupportsWebAuthn()) {
    button.disabled = true
    say(live, root.dataset.textUnsupported, 'error')
  }
  button.addEventListener('click', async () => {
    button.disabled = true
    say(live, texts.working, 'busy')
    try {
      const { challengeId, options } = await postJson('/_caje/auth/options', {})
      const response = await startAuthentication({ optionsJSON: options })
      const done = await postJson('/_caje/auth/verify', { challengeId, response, next: root.dataset.next })
      window.location.assign(done.redirect)
    } catch (err) {
      say(live, failureText(err, texts), 'error')
      button.disabled = false
    }
  })
}
