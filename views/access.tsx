import type { FC } from 'hono/jsx'
import { Csrf, Empty, PostButton, type Flash } from './components.tsx'
import { formatRelative, formatTime, isoTime } from './format.ts'
import { Layout, type Chrome } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export interface PasskeyView {
  id: string
  name: string
  createdAt: number
  lastUsedAt: number | null
  backedUp: boolean
}

export interface AdminView {
  id: string
  name: string
  createdAt: number
  passkeys: number
}

export interface InviteView {
  /** Short public id (prefix of the token hash), never the token. */
  id: string
  createdAt: number
  expiresAt: number
  createdBy: string
}

export interface ApiTokenView {
  id: string
  name: string
  createdAt: number
  lastUsedAt: number | null
  revokedAt: number | null
  createdBy: string
}

export interface AccessPageProps {
  chrome: Chrome
  flash?: Flash
  now: number
  adminId: string
  passkeys: PasskeyView[]
  admins: AdminView[]
  invites: InviteView[]
  tokens: ApiTokenView[]
  sessions: number
}

const Passkeys: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  const csrf = p.chrome.csrfToken
  const last = p.passkeys.length <= 1
  return (
    <section data-component="panel" id="passkeys">
      <header data-slot="panel-head">
        <div>
          <h2>{t.passkeysHeading}</h2>
          <p>{t.passkeysLead}</p>
        </div>
      </header>
      {p.passkeys.length === 0 ? (
        <Empty text={t.passkeysEmpty} />
      ) : (
        <div data-component="table-wrap">
          <table data-component="table" data-table="passkeys">
            <thead>
              <tr>
                <th scope="col">{t.col.name}</th>
                <th scope="col">{t.col.kind}</th>
                <th scope="col">{t.col.created}</th>
                <th scope="col">{t.col.lastUsed}</th>
                <th scope="col" data-align="end">
                  <span data-visually-hidden="">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {p.passkeys.map((k) => (
                <tr data-passkey={k.id}>
                  <td>
                    <form method="post" action={PATHS.passkeyRename(k.id)} data-component="rename">
                      <Csrf token={csrf} />
                      <input type="text" name="name" value={k.name} required maxlength={64} aria-label={`${t.col.name}: ${k.name}`} />
                      <button type="submit" data-variant="quiet">
                        {t.rename}
                      </button>
                    </form>
                  </td>
                  <td>
                    <span data-component="badge" data-kind={k.backedUp ? 'synced' : 'node'}>
                      {k.backedUp ? t.synced : t.deviceBound}
                    </span>
                  </td>
                  <td data-slot="time" title={isoTime(k.createdAt)}>
                    {formatTime(k.createdAt)}
                  </td>
                  <td data-slot="time" title={isoTime(k.lastUsedAt)}>
                    {k.lastUsedAt ? formatRelative(k.lastUsedAt, p.now) : t.never}
                  </td>
                  <td data-align="end">
                    <PostButton
                      action={PATHS.passkeyRemove(k.id)}
                      csrfToken={csrf}
                      label={t.remove}
                      variant="danger"
                      disabled={last}
                      title={last ? t.removeLastTitle : undefined}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div
        data-component="passkey-register"
        data-mode="add"
        data-text-working={t.addPasskeyWorking}
        data-text-failed={t.addPasskeyFailed}
      >
        <label>
          <span>{t.addPasskeyNameLabel}</span>
          <input type="text" name="passkey-name" maxlength={64} placeholder={t.addPasskeyNamePlaceholder} />
        </label>
        <button type="button" data-variant="primary" data-action="passkey-register">
          {t.addPasskey}
        </button>
        <p data-slot="live" role="status" aria-live="polite"></p>
      </div>
    </section>
  )
}

const Admins: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  return (
    <section data-component="panel" id="admins">
      <header data-slot="panel-head">
        <div>
          <h2>{t.adminsHeading}</h2>
          <p>{t.adminsLead}</p>
        </div>
      </header>
      <div data-component="table-wrap">
        <table data-component="table" data-table="admins">
          <thead>
            <tr>
              <th scope="col">{t.col.admin}</th>
              <th scope="col" data-align="end">
                {t.col.passkeys}
              </th>
              <th scope="col">{t.col.created}</th>
              <th scope="col" data-align="end">
                <span data-visually-hidden="">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {p.admins.map((a) => (
              <tr>
                <td>
                  {a.name}{' '}
                  {a.id === p.adminId ? (
                    <span data-component="badge" data-kind="self">
                      {t.you}
                    </span>
                  ) : null}
                </td>
                <td data-align="end" data-slot="num">
                  {a.passkeys}
                </td>
                <td data-slot="time">{formatTime(a.createdAt)}</td>
                <td data-align="end">
                  {a.id === p.adminId ? null : (
                    <PostButton action={PATHS.adminRemove(a.id)} csrfToken={p.chrome.csrfToken} label={t.removeAdmin} variant="danger" />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  )
}

const Invites: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  const csrf = p.chrome.csrfToken
  return (
    <section data-component="panel" id="invites">
      <header data-slot="panel-head">
        <div>
          <h2>{t.invitesHeading}</h2>
          <p>{t.invitesLead}</p>
        </div>
        <PostButton action={PATHS.invites} csrfToken={csrf} label={t.inviteButton} variant="primary" />
      </header>
      {p.invites.length === 0 ? (
        <Empty text={t.invitesEmpty} />
      ) : (
        <div data-component="table-wrap">
          <table data-component="table" data-table="invites">
            <thead>
              <tr>
                <th scope="col">{t.col.createdBy}</th>
                <th scope="col">{t.col.created}</th>
                <th scope="col">{t.col.expires}</th>
                <th scope="col" data-align="end">
                  <span data-visually-hidden="">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {p.invites.map((i) => (
                <tr>
                  <td>{i.createdBy}</td>
                  <td data-slot="time">{formatTime(i.createdAt)}</td>
                  <td data-slot="time" title={isoTime(i.expiresAt)}>
                    {formatRelative(i.expiresAt, p.now)}
                  </td>
                  <td data-align="end">
                    <PostButton action={PATHS.inviteRevoke(i.id)} csrfToken={csrf} label={t.revoke} variant="danger" />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}

const Tokens: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  const csrf = p.chrome.csrfToken
  return (
    <section data-component="panel" id="tokens">
      <header data-slot="panel-head">
        <div>
          <h2>{t.tokensHeading}</h2>
          <p>{t.tokensLead}</p>
        </div>
      </header>
      <form method="post" action={PATHS.tokens} data-component="form" data-layout="row">
        <Csrf token={csrf} />
        <input type="text" name="name" required maxlength={64} aria-label={t.tokenNameLabel} placeholder={t.tokenNamePlaceholder} />
        <button type="submit" data-variant="primary">
          {t.tokenButton}
        </button>
      </form>
      {p.tokens.length === 0 ? (
        <Empty text={t.tokensEmpty} />
      ) : (
        <div data-component="table-wrap">
          <table data-component="table" data-table="tokens">
            <thead>
              <tr>
                <th scope="col">{t.col.name}</th>
                <th scope="col">{t.col.status}</th>
                <th scope="col">{t.col.createdBy}</th>
                <th scope="col">{t.col.created}</th>
                <th scope="col">{t.col.lastUsed}</th>
                <th scope="col" data-align="end">
                  <span data-visually-hidden="">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {p.tokens.map((k) => (
                <tr data-revoked={k.revokedAt ? 'true' : undefined}>
                  <td>{k.name}</td>
                  <td>
                    <span data-component="badge" data-kind={k.revokedAt ? 'stale' : 'synced'}>
                      {k.revokedAt ? t.tokenRevoked : t.tokenActive}
                    </span>
                  </td>
                  <td>{k.createdBy}</td>
                  <td data-slot="time">{formatTime(k.createdAt)}</td>
                  <td data-slot="time">{k.lastUsedAt ? formatRelative(k.lastUsedAt, p.now) : t.never}</td>
                  <td data-align="end">
                    {k.revokedAt ? null : <PostButton action={PATHS.tokenRevoke(k.id)} csrfToken={csrf} label={t.revoke} variant="danger" />}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}

export const AccessPage: FC<AccessPageProps> = (p) => {
  const t = TEXT.access
  return (
    <Layout title={t.title} chrome={p.chrome} flash={p.flash} scripts={['register.js']}>
      <Passkeys p={p} />
      <div data-component="columns">
        <Admins p={p} />
        <Invites p={p} />
      </div>
      <Tokens p={p} />
      <section data-component="panel" id="sessions">
        <header data-slot="panel-head">
          <div>
            <h2>{t.sessionsHeading}</h2>
            <p>{t.sessionsLead(p.sessions)}</p>
          </div>
          <PostButton action={PATHS.logoutAll} csrfToken={p.chrome.csrfToken} label={t.signOutEverywhere} variant="danger" />
        </header>
      </section>
    </Layout>
  )
}
