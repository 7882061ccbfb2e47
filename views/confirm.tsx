import type { FC } from 'hono/jsx'
import { Csrf } from './components.tsx'
import { Layout, type Chrome } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export type ConfirmAction = 'clear_fs' | 'clear_db'

export const CONFIRM_ACTIONS: readonly ConfirmAction[] = ['clear_fs', 'clear_db']

export interface ConfirmPageProps {
  chrome: Chrome
  action: ConfirmAction
}

const TARGET: Record<ConfirmAction, { action: string; fields: Record<string, string> }> = {
  clear_fs: { action: PATHS.clearFs, fields: {} },
  clear_db: { action: PATHS.clearDb, fields: {} },
}

export const ConfirmPage: FC<ConfirmPageProps> = ({ chrome, action }) => {
  const t = TEXT.confirm[action]
  const target = TARGET[action]
  return (
    <Layout title={TEXT.confirm.title} chrome={chrome} narrow>
      <section data-component="card" data-kind="danger">
        <h1>{t.heading}</h1>
        <p>{t.body(chrome.status.nodeId)}</p>
        <form method="post" action={target.action} data-component="form">
          <Csrf token={chrome.csrfToken} />
          <input type="hidden" name="confirm" value="yes" />
          {Object.entries(target.fields).map(([name, value]) => (
            <input type="hidden" name={name} value={value} />
          ))}
          <div data-slot="actions">
            <a href={PATHS.list} data-component="button-link">
              {TEXT.confirm.cancel}
            </a>
            <button type="submit" data-variant="danger">
              {t.button}
            </button>
          </div>
        </form>
      </section>
    </Layout>
  )
}
