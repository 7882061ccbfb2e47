import type { FC } from 'hono/jsx'
import { Badge, Csrf, DataTable, Empty, NumCell, Panel, PostButton, TimeCell, type Flash } from './components.tsx'
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
    <Panel id="passkeys" title={t.passkeysHeading} lead={t.passkeysLead}>
      {p.passkeys.length === 0 ? (
        <Empty text={t.passkeysEmpty} />
      ) : (
        <DataTable name="passkeys" columns={[{ label: t.col.name }, { label: t.col.kind }, { label: t.col.created }, { label: t.col.lastUsed }, { label: 'Actions', align: 'end', hidden: true }]}>
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
                <Badge kind={k.backedUp ? 'synced' : 'node'}>{k.backedUp ? t.synced : t.deviceBound}</Badge>
              </td>
              <TimeCell at={k.createdAt} />
              <TimeCell at={k.lastUsedAt} now={p.now} none={t.never} />
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
        </DataTable>
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
    </Panel>
  )
}

const Admins: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  return (
    <Panel id="admins" title={t.adminsHeading} lead={t.adminsLead}>
      <DataTable name="admins" columns={[{ label: t.col.admin }, { label: t.col.passkeys, align: 'end' }, { label: t.col.created }, { label: 'Actions', align: 'end', hidden: true }]}>
        {p.admins.map((a) => (
          <tr>
            <td>
              {a.name}{' '}
              {a.id === p.adminId ? (
                <Badge kind="self">{t.you}</Badge>
              ) : null}
            </td>
            <NumCell>{a.passkeys}</NumCell>
            <TimeCell at={a.createdAt} />
            <td data-align="end">
              {a.id === p.adminId ? null : (
                <PostButton action={PATHS.adminRemove(a.id)} csrfToken={p.chrome.csrfToken} label={t.removeAdmin} variant="danger" />
              )}
            </td>
          </tr>
        ))}
      </DataTable>
    </Panel>
  )
}

const Invites: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  const csrf = p.chrome.csrfToken
  return (
    <Panel id="invites" title={t.invitesHeading} lead={t.invitesLead} actions={<PostButton action={PATHS.invites} csrfToken={csrf} label={t.inviteButton} variant="primary" />}>
      {p.invites.length === 0 ? (
        <Empty text={t.invitesEmpty} />
      ) : (
        <DataTable name="invites" columns={[{ label: t.col.createdBy }, { label: t.col.created }, { label: t.col.expires }, { label: 'Actions', align: 'end', hidden: true }]}>
          {p.invites.map((i) => (
            <tr>
              <td>{i.createdBy}</td>
              <TimeCell at={i.createdAt} />
              <TimeCell at={i.expiresAt} now={p.now} />
              <td data-align="end">
                <PostButton action={PATHS.inviteRevoke(i.id)} csrfToken={csrf} label={t.revoke} variant="danger" />
              </td>
            </tr>
          ))}
        </DataTable>
      )}
    </Panel>
  )
}

const Tokens: FC<{ p: AccessPageProps }> = ({ p }) => {
  const t = TEXT.access
  const csrf = p.chrome.csrfToken
  return (
    <Panel id="tokens" title={t.tokensHeading} lead={t.tokensLead}>
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
        <DataTable name="tokens" columns={[{ label: t.col.name }, { label: t.col.status }, { label: t.col.createdBy }, { label: t.col.created }, { label: t.col.lastUsed }, { label: 'Actions', align: 'end', hidden: true }]}>
          {p.tokens.map((k) => (
            <tr data-revoked={k.revokedAt ? 'true' : undefined}>
              <td>{k.name}</td>
              <td>
                <Badge kind={k.revokedAt ? 'stale' : 'synced'}>{k.revokedAt ? t.tokenRevoked : t.tokenActive}</Badge>
              </td>
              <td>{k.createdBy}</td>
              <TimeCell at={k.createdAt} />
              <TimeCell at={k.lastUsedAt} now={p.now} none={t.never} />
              <td data-align="end">
                {k.revokedAt ? null : <PostButton action={PATHS.tokenRevoke(k.id)} csrfToken={csrf} label={t.revoke} variant="danger" />}
              </td>
            </tr>
          ))}
        </DataTable>
      )}
    </Panel>
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
      <Panel id="sessions" title={t.sessionsHeading} lead={t.sessionsLead(p.sessions)} actions={<PostButton action={PATHS.logoutAll} csrfToken={p.chrome.csrfToken} label={t.signOutEverywhere} variant="danger" />} />
    </Layout>
  )
}
