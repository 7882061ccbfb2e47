// The sign-in page as every route that shows it renders it: the sign-in
// route itself, and a form posted after the session ended.

import type { Context } from 'hono'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type { Flash } from '../../views/components.tsx'
import { SignInPage, type PasswordMode } from '../../views/sign-in.tsx'
import type { Shared } from './context.ts'
import { renderPage } from './http.ts'
import * as repo from './repo.ts'

export function passwordMode(shared: Shared, passkeysExist: boolean): PasswordMode {
  if (passkeysExist) return shared.config.allowPasswordLogin && shared.config.adminPassword !== undefined ? 'password-login' : 'none'
  if (shared.config.adminPassword !== undefined) return 'enrol-password'
  return shared.enrolment.code !== undefined && !shared.enrolment.used ? 'enrol-code' : 'code-used'
}

export async function renderSignIn(c: Context, shared: Shared, o: { next: string; flash?: Flash; status?: ContentfulStatusCode }): Promise<Response> {
  const passkeysExist = (await repo.countPasskeys(shared.db)) > 0
  // WebAuthn binds a passkey to CAJE_PUBLIC_ORIGIN (its rpID); opened at 127.0.0.1 or another
  // name, the ceremony can only fail ("Sign-in did not complete"): say so and link there.
  // Hosts are compared, not origins: behind a TLS-terminating proxy the request itself is http.
  const actual = new URL(c.req.url)
  const expected = shared.config.publicOrigin
  const wrongOrigin = actual.host !== new URL(expected).host ? { expected, actual: actual.host } : undefined
  return renderPage(c, SignInPage, { passwordMode: passwordMode(shared, passkeysExist), passkeysExist, next: o.next, flash: o.flash, wrongOrigin }, o.status ?? 200)
}
