import type { FC } from 'hono/jsx'
import type { Flash } from './components.tsx'
import { Layout } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export interface InvitePageProps {
  /** The invite token from the link, or undefined when the invite is not usable. */
  token: string | undefined
  flash?: Flash
}

export const InvitePage: FC<InvitePageProps> = ({ token, flash }) => {
  const t = TEXT.invite
  return (
    <Layout title={t.title} flash={flash} scripts={token ? ['register.js'] : []} narrow>
      <div data-component="brand-mark">
        {TEXT.brand}
        <small>{TEXT.brandSub}</small>
      </div>
      {token ? (
        <section data-component="card">
          <h1>{t.heading}</h1>
          <p>{t.lead}</p>
          <div
            data-component="passkey-register"
            data-mode="invite"
            data-invite={token}
            data-text-working={t.working}
            data-text-failed={TEXT.access.addPasskeyFailed}
          >
            <label>
              <span>{t.nameLabel}</span>
              <input type="text" name="admin-name" required maxlength={64} placeholder={t.namePlaceholder} autocomplete="name" />
            </label>
            <button type="button" data-variant="primary" data-size="large" data-action="passkey-register">
              {t.button}
            </button>
            <p data-slot="live" role="status" aria-live="polite"></p>
          </div>
        </section>
      ) : (
        <section data-component="card" data-kind="danger">
          <h1>{t.invalidHeading}</h1>
          <p>{t.invalidBody}</p>
          <p>
            <a href={PATHS.auth}>{TEXT.signIn.heading}</a>
          </p>
        </section>
      )}
    </Layout>
  )
}
