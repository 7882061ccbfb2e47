// Small pieces shared by several pages.

import type { Child, FC } from 'hono/jsx'

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
