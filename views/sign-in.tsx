import type { FC } from 'hono/jsx'
import type { Flash } from './components.tsx'
import { Layout } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

/**
 * Which password form the page offers:
 * - `enrol-password` / `enrol-code`: no passkey exists yet; the password (or start-up code) signs in once;
 * - `code-used`: no passkey yet and the code is spent;
 * - `password-login`: passkeys exist but CAJE_ALLOW_PASSWORD_LOGIN keeps the password working;
 * - `none`: passkeys only.
 */
export type PasswordMode = 'enrol-password' | 'enrol-code' | 'code-used' | 'password-login' | 'none'

export interface SignInPageProps {
  passwordMode: PasswordMode
  /** Whether any passkey exists (otherwise the passkey button is pointless). */
  passkeysExist: boolean
  /** Where to go after signing in (an /_caje/ path). */
  next: string
  flash?: Flash
  /** Set when the page was opened at another address than CAJE_PUBLIC_ORIGIN, where passkeys cannot work. */
  wrongOrigin?: { expected: string; actual: string }
}

const Heading: FC<{ main: boolean; text: string }> = ({ main, text }) => (main ? <h1>{text}</h1> : <h2>{text}</h2>)

const PasswordForm: FC<{ mode: PasswordMode; next: string; main: boolean }> = ({ mode, next, main }) => {
  if (mode === 'none') return null
  const t = TEXT.signIn
  if (mode === 'code-used') {
    return (
      <section data-component="card" data-slot="setup">
        <Heading main={main} text={t.setupHeading} />
        <p>{t.setupCodeUsed}</p>
      </section>
    )
  }
  const enrol = mode === 'enrol-password' || mode === 'enrol-code'
  return (
    <section data-component="card" data-slot="setup">
      <Heading main={main} text={enrol ? t.setupHeading : t.passwordHeading} />
      <p>{mode === 'enrol-password' ? t.setupLeadPassword : mode === 'enrol-code' ? t.setupLeadCode : t.passwordLead}</p>
      <form method="post" action={PATHS.authPassword} data-component="form">
        <input type="hidden" name="next" value={next} />
        {enrol ? (
          <label>
            <span>{t.nameLabel}</span>
            <input type="text" name="name" autocomplete="username" placeholder={t.namePlaceholder} maxlength={64} />
          </label>
        ) : null}
        <label>
          <span>{mode === 'enrol-code' ? t.codeLabel : t.passwordLabel}</span>
          <input
            type={mode === 'enrol-code' ? 'text' : 'password'}
            name="password"
            required
            autocomplete={mode === 'enrol-code' ? 'one-time-code' : 'current-password'}
            spellcheck={false}
          />
        </label>
        <div data-slot="actions">
          <button type="submit" data-variant={enrol ? 'primary' : 'quiet'}>
            {t.passwordButton}
          </button>
        </div>
      </form>
    </section>
  )
}

export const SignInPage: FC<SignInPageProps> = (props) => {
  const t = TEXT.signIn
  return (
    <Layout title={t.title} flash={props.flash} scripts={props.passkeysExist ? ['sign-in.js'] : []} narrow>
      <div data-component="brand-mark">
        {TEXT.brand}
        <small>{TEXT.brandSub}</small>
      </div>
      {props.wrongOrigin ? (
        <div data-component="flash" data-kind="warn" role="alert" data-slot="wrong-origin">
          <p data-slot="text">
            {t.wrongOrigin(props.wrongOrigin.actual)}{' '}
            <a href={`${props.wrongOrigin.expected}${PATHS.auth}`}>{t.wrongOriginLink(props.wrongOrigin.expected)}</a>
          </p>
        </div>
      ) : null}
      {props.passkeysExist ? (
        <section data-component="card" data-slot="passkey">
          <h1>{t.heading}</h1>
          <p>{t.lead}</p>
          <div
            data-component="passkey-sign-in"
            data-next={props.next}
            data-text-working={t.working}
            data-text-failed={t.failed}
            data-text-cancelled={t.cancelled}
            data-text-unsupported={t.noWebAuthn}
          >
            <button type="button" data-variant="primary" data-size="large" data-action="passkey-sign-in">
              <svg viewBox="0 0 24 24" aria-hidden="true" width="20" height="20">
                <path
                  fill="currentColor"
                  d="M9 11a4 4 0 1 1 0-8 4 4 0 0 1 0 8Zm0 2c2.7 0 8 1.3 8 4v3H1v-3c0-2.7 5.3-4 8-4Zm11.5-6.5a2.5 2.5 0 0 1-1.5 2.3V13l-1 1 1 1-1 1 1 1-1.5 1.5L17 17V8.8a2.5 2.5 0 1 1 3.5-2.3Zm-2.5-.75a.75.75 0 1 0 0 1.5.75.75 0 0 0 0-1.5Z"
                />
              </svg>
              {t.button}
            </button>
            <p data-slot="live" role="status" aria-live="polite"></p>
          </div>
        </section>
      ) : null}
      <PasswordForm mode={props.passwordMode} next={props.next} main={!props.passkeysExist} />
    </Layout>
  )
}
