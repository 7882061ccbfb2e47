// Small pieces shared by several pages.

import type { Child, FC } from 'hono/jsx'
import { formatBytes, formatRelative, formatTime, isoTime } from './format.ts'

export interface Flash {
  kind: 'ok' | 'error'
  text: string
  /** A value shown once (invite link, API token), rendered in a copyable field. */
  secret?: { label: string; value: string }
}

export const FlashMessage: FC<{ flash: Flash | undefined }> = ({ flash }) => {
  if (!flash) return null
  return (
    <div data-component="flash" data-kind={flash.kind} role={flash.kind === 'error' ? 'alert' : 'status'}>
      <p data-slot="text">{flash.text}</p>
      {flash.secret ? (
        // A block of text, not an input: it wraps at any width and its line box is tall enough
        // for every glyph (an input's clipped underscores in DejaVu Sans Mono at 1x).
        <div data-slot="secret">
          <span id="secret-label">{flash.secret.label}</span>
          <code data-slot="secret-value" tabindex={0} aria-labelledby="secret-label" data-copy="">
            {flash.secret.value}
          </code>
        </div>
      ) : null}
    </div>
  )
}

/** Hidden CSRF field for every state-changing form. */
export const Csrf: FC<{ token: string }> = ({ token }) => <input type="hidden" name="_csrf" value={token} />

/** A one-button POST form. */
export const PostButton: FC<{
  action: string
  csrfToken: string
  label: string
  variant?: 'primary' | 'danger' | 'quiet'
  fields?: Record<string, string>
  disabled?: boolean
  title?: string
}> = (p) => (
  <form method="post" action={p.action} data-component="inline-form">
    <Csrf token={p.csrfToken} />
    {Object.entries(p.fields ?? {}).map(([name, value]) => (
      <input type="hidden" name={name} value={value} />
    ))}
    <button type="submit" data-variant={p.variant ?? 'quiet'} disabled={p.disabled} title={p.title}>
      {p.label}
    </button>
  </form>
)

export const Empty: FC<{ text: string }> = ({ text }) => <p data-component="empty">{text}</p>


/** A card: its heading and lead, any actions beside them, then its content. */
export const Panel: FC<{ id: string; title: Child; lead?: Child; actions?: Child; children?: Child }> = ({ id, title, lead, actions, children }) => (
  <section data-component="panel" id={id}>
    <header data-slot="panel-head">
      <div>
        <h2>{title}</h2>
        {lead === undefined ? null : <p>{lead}</p>}
      </div>
      {actions}
    </header>
    {children}
  </section>
)

export interface Column {
  label: Child
  /** Numbers and actions line up at the end. */
  align?: 'end'
  /** Read by screen readers only (the actions column). */
  hidden?: boolean
}

/** A table that scrolls inside its card on a narrow screen; `name` is its `data-table`, the children its rows. */
export const DataTable: FC<{ name: string; columns: Column[]; children?: Child }> = ({ name, columns, children }) => (
  <div data-component="table-wrap">
    <table data-component="table" data-table={name}>
      <thead>
        <tr>
          {columns.map((c) => (
            <th scope="col" data-align={c.align}>
              {c.hidden ? <span data-visually-hidden="">{c.label}</span> : c.label}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  </div>
)

/** A label with a colour by kind (`fresh`, `stale`, `self`, `node`, `offline`, …; admin.css has them all). */
export const Badge: FC<{ kind: string; title?: string; children?: Child }> = ({ kind, title, children }) => (
  <span data-component="badge" data-kind={kind} title={title}>
    {children}
  </span>
)

/** The URL a row is about; `title` (the full cache key) shows on hover, `children` go under it. */
export const UrlCell: FC<{ url: string; title?: string; children?: Child }> = ({ url, title, children }) => (
  <td data-slot="url">
    <span title={title}>{url}</span>
    {children}
  </td>
)

/** An HTTP status, coloured by its class (2xx, 3xx, 4xx/5xx). */
export const StatusCell: FC<{ status: number }> = ({ status }) => (
  <td data-align="end">
    <span data-component="status-code" data-class={`${Math.floor(status / 100)}xx`}>
      {status}
    </span>
  </td>
)

/** A count or an amount, lined up at the end of its column. */
export const NumCell: FC<{ children?: Child }> = ({ children }) => (
  <td data-align="end" data-slot="num">
    {children}
  </td>
)

export const BytesCell: FC<{ bytes: number }> = ({ bytes }) => <NumCell>{formatBytes(bytes)}</NumCell>

/**
 * A moment: its date, or with `now` how long ago (or until) it is; the exact time on hover.
 * `none` stands where there is no moment (never used, say). `label` names the column where
 * a narrow screen stacks the cells.
 */
export const TimeCell: FC<{ at: number | null; now?: number; none?: string; label?: string }> = ({ at, now, none, label }) => (
  <td data-slot="time" data-label={label} title={isoTime(at)}>
    {at === null && none !== undefined ? none : now === undefined ? formatTime(at) : formatRelative(at, now)}
  </td>
)

/** The row's buttons, at the end of the row and never wrapped. */
export const ActionsCell: FC<{ children?: Child }> = ({ children }) => (
  <td data-align="end" data-slot="row-actions">
    {children}
  </td>
)
