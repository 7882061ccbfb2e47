import { raw } from 'hono/html'
import type { FC, PropsWithChildren } from 'hono/jsx'
import type { NodeStatus } from '../src/admin/actions.ts'
import { Csrf, FlashMessage, type Flash } from './components.tsx'
import { formatBytes, formatCount, formatRatio } from './format.ts'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export interface Chrome {
  adminName: string
  csrfToken: string
  status: NodeStatus
  current: 'list' | 'traffic' | 'purges' | 'explain' | 'access'
}

export interface LayoutProps {
  title: string
  /** Header with status and navigation, for signed-in pages. */
  chrome?: Chrome
  flash?: Flash
  /** Module scripts from public/, e.g. `sign-in.js`. */
  scripts?: string[]
  /** Narrow centred card (sign-in, invite, confirm). */
  narrow?: boolean
}

const StatusBar: FC<{ status: NodeStatus }> = ({ status }) => (
  <dl data-component="status">
    <div>
      <dt>{TEXT.status.node}</dt>
      <dd data-slot="node">{status.nodeId}</dd>
    </div>
    <div>
      <dt>{TEXT.status.region}</dt>
      <dd>{status.region}</dd>
    </div>
    <div>
      <dt>Role</dt>
      <dd>
        <span data-component="badge" data-kind={status.role} title={TEXT.status.roleTitle[status.role]}>
          {TEXT.status.role[status.role]}
        </span>
      </dd>
    </div>
    <div>
      <dt>{TEXT.status.hitRatio}</dt>
      <dd>{formatRatio(status.hitRatio) ?? TEXT.status.noHits}</dd>
    </div>
    <div>
      <dt>{TEXT.status.cacheBytes}</dt>
      <dd>{formatBytes(status.cacheBytes)}</dd>
    </div>
    <div>
      <dt>{TEXT.status.entries}</dt>
      <dd>{formatCount(status.entries)}</dd>
    </div>
  </dl>
)

const Header: FC<{ chrome: Chrome }> = ({ chrome }) => (
  <header data-component="header">
    <div data-slot="bar">
      <a href={PATHS.list} data-slot="brand">
        {TEXT.brand}
        <small>{TEXT.brandSub}</small>
      </a>
      <nav>
        <a href={PATHS.list} aria-current={chrome.current === 'list' ? 'page' : undefined}>
          {TEXT.nav.list}
        </a>
        <a href={PATHS.traffic} aria-current={chrome.current === 'traffic' ? 'page' : undefined}>
          {TEXT.nav.traffic}
        </a>
        <a href={PATHS.purges} aria-current={chrome.current === 'purges' ? 'page' : undefined}>
          {TEXT.nav.purges}
        </a>
        <a href={PATHS.explain} aria-current={chrome.current === 'explain' ? 'page' : undefined}>
          {TEXT.nav.explain}
        </a>
        <a href={PATHS.access} aria-current={chrome.current === 'access' ? 'page' : undefined}>
          {TEXT.nav.access}
        </a>
      </nav>
      <div data-slot="who">
        <span>{chrome.adminName}</span>
        <form method="post" action={PATHS.logout} data-component="inline-form">
          <Csrf token={chrome.csrfToken} />
          <button type="submit" data-variant="quiet">
            {TEXT.nav.signOut}
          </button>
        </form>
      </div>
    </div>
    <StatusBar status={chrome.status} />
  </header>
)

export const Layout: FC<PropsWithChildren<LayoutProps>> = (props) => (
  <>
    {raw('<!doctype html>')}
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="robots" content="noindex, nofollow" />
        {props.chrome ? <meta name="csrf-token" content={props.chrome.csrfToken} /> : null}
        <title>{`${props.title} · ${TEXT.brand}`}</title>
        <link rel="stylesheet" href={PATHS.asset('admin.css')} />
        <link rel="icon" href={PATHS.asset('favicon.svg')} type="image/svg+xml" />
        {['admin.js', ...(props.scripts ?? [])].map((s) => (
          <script type="module" src={PATHS.asset(s)}></script>
        ))}
      </head>
      <body data-layout={props.narrow ? 'narrow' : 'wide'}>
        {props.chrome ? <Header chrome={props.chrome} /> : null}
        <main>
          <FlashMessage flash={props.flash} />
          {props.children}
        </main>
      </body>
    </html>
  </>
)
