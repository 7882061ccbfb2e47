// The two WebAuthn ceremonies (options → verify), with @simplewebauthn/server.
// Each options call stores a challenge server-side; each verify call consumes
// it first, so a challenge is answered at most once whatever the outcome.
// Sign-in is usernameless: discoverable credentials, no allowCredentials list.

import type {
  AuthenticationResponseJSON,
  AuthenticatorTransportFuture,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
} from '@simplewebauthn/server'
import { TEXT } from '../../views/text.ts'
import type { Shared } from './context.ts'
import * as repo from './repo.ts'
import { hashToken, randomToken } from './secrets.ts'

export const CHALLENGE_TTL_MS = 5 * 60_000

/**
 * @simplewebauthn/server, loaded by the first ceremony rather than at start: with its ASN.1 and
 * X.509 parsers, a DI container and Node's web crypto it takes about 4 MB of the event loop's V8
 * heap for as long as the process lives (and about 6 MB of a node's memory at rest), on every
 * node, where most never see an admin sign in (a proxy at full load, say).
 */
let library: Promise<typeof import('@simplewebauthn/server')> | undefined
const webauthn = () => (library ??= import('@simplewebauthn/server'))

export type Result<T> = { ok: true; value: T } | { ok: false; status: 400 | 401 | 409; message: string; reason: string }

const fail = (status: 400 | 401 | 409, message: string, reason: string): Result<never> => ({ ok: false, status, message, reason })

/** Who a registration is for: the signed-in admin, or a new admin arriving with an invite. */
export type RegistrationTarget = { kind: 'admin'; adminId: string; adminName: string } | { kind: 'invite'; inviteToken: string; name: string }

/** A new admin's id, derived from the registration challenge so the browser cannot choose it. */
export function inviteeAdminId(challengeId: string): string {
  return `adm_${hashToken(`invitee:${challengeId}`).slice(0, 32)}`
}

export function newAdminId(): string {
  return `adm_${randomToken(16)}`
}

/** Store a challenge for one ceremony (and sweep expired ones while at it). */
async function storeChallenge(
  shared: Shared,
  ch: { id: string; challenge: string; kind: 'registration' | 'authentication'; adminId: string | null },
): Promise<void> {
  const now = shared.now()
  await shared.write(async (trx) => {
    await repo.deleteExpired(trx, now)
    await repo.insertChallenge(trx, { ...ch, expiresAt: now + CHALLENGE_TTL_MS })
  })
}

// ── authentication ──────────────────────────────────────────────────────

export async function authenticationOptions(shared: Shared): Promise<{ challengeId: string; options: PublicKeyCredentialRequestOptionsJSON }> {
  const options = await (await webauthn()).generateAuthenticationOptions({
    rpID: shared.config.rpId,
    userVerification: 'required',
    timeout: CHALLENGE_TTL_MS,
  })
  const challengeId = randomToken(18)
  await storeChallenge(shared, { id: challengeId, challenge: options.challenge, kind: 'authentication', adminId: null })
  return { challengeId, options }
}

function isCredentialJson(v: unknown): v is { id: string; rawId: string; type: string; response: Record<string, unknown> } {
  if (!v || typeof v !== 'object') return false
  const o = v as Record<string, unknown>
  return typeof o.id === 'string' && typeof o.rawId === 'string' && o.type === 'public-key' && !!o.response && typeof o.response === 'object'
}

export async function verifyAuthentication(
  shared: Shared,
  input: { challengeId: string; response: unknown },
): Promise<Result<{ adminId: string; passkeyId: string }>> {
  const now = shared.now()
  // Consumed before anything else: a replay, a failure and a success all use it up.
  // (While another process holds the manifest's lock nothing is written, this
  // included: the request is answered 503 and the challenge can be answered again.)
  const challengeId = input.challengeId
  const challenge = challengeId ? await shared.write((trx) => repo.takeChallenge(trx, challengeId, now)) : undefined
  if (!challenge || challenge.kind !== 'authentication') return fail(400, TEXT.ceremony.expired, 'challenge_unknown')
  if (!isCredentialJson(input.response)) return fail(400, TEXT.ceremony.badRequest, 'malformed_response')
  const response = input.response as unknown as AuthenticationResponseJSON

  const passkey = await repo.getPasskey(shared.db, response.id)
  if (!passkey) return fail(401, TEXT.ceremony.unknownPasskey, 'unknown_credential')

  let verification
  try {
    verification = await (await webauthn()).verifyAuthenticationResponse({
      response,
      expectedChallenge: challenge.challenge,
      expectedOrigin: shared.config.publicOrigin,
      expectedRPID: shared.config.rpId,
      requireUserVerification: true,
      credential: {
        id: passkey.id,
        publicKey: new Uint8Array(passkey.public_key),
        counter: passkey.counter,
        transports: parseTransports(passkey.transports),
      },
    })
  } catch (err) {
    shared.log({ event: 'admin.passkey_verify_failed', ceremony: 'authentication', passkey: passkey.id, error: String(err) })
    return fail(401, TEXT.ceremony.failed, 'verify_threw')
  }
  if (!verification.verified) return fail(401, TEXT.ceremony.failed, 'not_verified')

  const info = verification.authenticationInfo
  await shared.write((trx) => repo.recordPasskeyUse(trx, passkey.id, { counter: info.newCounter, backedUp: info.credentialBackedUp, at: now }))
  return { ok: true, value: { adminId: passkey.admin_id, passkeyId: passkey.id } }
}

// ── registration ────────────────────────────────────────────────────────

export async function registrationOptions(
  shared: Shared,
  target: RegistrationTarget,
): Promise<Result<{ challengeId: string; options: PublicKeyCredentialCreationOptionsJSON }>> {
  const now = shared.now()
  let adminId: string | null
  let userName: string
  let exclude: { id: string; transports?: AuthenticatorTransportFuture[] }[] = []
  const challengeId = randomToken(18)
  if (target.kind === 'admin') {
    adminId = target.adminId
    userName = target.adminName
    exclude = (await repo.listPasskeys(shared.db, target.adminId)).map((p) => ({ id: p.id, transports: parseTransports(p.transports) }))
  } else {
    const invite = await repo.getOpenInvite(shared.db, hashToken(target.inviteToken), now)
    if (!invite) return fail(400, TEXT.ceremony.inviteGone, 'invite_unusable')
    adminId = null
    userName = target.name || 'admin'
  }
  const userId = target.kind === 'admin' ? target.adminId : inviteeAdminId(challengeId)
  const options = await (await webauthn()).generateRegistrationOptions({
    rpName: shared.config.rpName,
    rpID: shared.config.rpId,
    userName,
    userDisplayName: userName,
    userID: new TextEncoder().encode(userId),
    timeout: CHALLENGE_TTL_MS,
    attestationType: 'none',
    excludeCredentials: exclude,
    authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
  })
  await storeChallenge(shared, { id: challengeId, challenge: options.challenge, kind: 'registration', adminId })
  return { ok: true, value: { challengeId, options } }
}

export async function verifyRegistration(
  shared: Shared,
  input: { challengeId: string; response: unknown; passkeyName: string; target: RegistrationTarget },
): Promise<Result<{ adminId: string; passkeyId: string; passkeyName: string }>> {
  const now = shared.now()
  const challengeId = input.challengeId
  const challenge = challengeId ? await shared.write((trx) => repo.takeChallenge(trx, challengeId, now)) : undefined
  const target = input.target
  const expectedAdmin = target.kind === 'admin' ? target.adminId : null
  if (!challenge || challenge.kind !== 'registration' || challenge.admin_id !== expectedAdmin) {
    return fail(400, TEXT.ceremony.expired, 'challenge_unknown')
  }
  if (!isCredentialJson(input.response)) return fail(400, TEXT.ceremony.badRequest, 'malformed_response')
  const response = input.response as unknown as RegistrationResponseJSON

  let inviteHash: string | undefined
  if (target.kind === 'invite') {
    inviteHash = hashToken(target.inviteToken)
    if (!(await repo.getOpenInvite(shared.db, inviteHash, now))) return fail(400, TEXT.ceremony.inviteGone, 'invite_unusable')
  }

  let verification
  try {
    verification = await (await webauthn()).verifyRegistrationResponse({
      response,
      expectedChallenge: challenge.challenge,
      expectedOrigin: shared.config.publicOrigin,
      expectedRPID: shared.config.rpId,
      requireUserVerification: true,
    })
  } catch (err) {
    shared.log({ event: 'admin.passkey_verify_failed', ceremony: 'registration', error: String(err) })
    return fail(400, TEXT.ceremony.failed, 'verify_threw')
  }
  if (!verification.verified) return fail(400, TEXT.ceremony.failed, 'not_verified')
  const info = verification.registrationInfo
  if (await repo.getPasskey(shared.db, info.credential.id)) return fail(409, TEXT.ceremony.duplicate, 'duplicate_credential')

  // One transaction: an invite is never used up without its admin and passkey.
  return shared.write(async (trx) => {
    let adminId: string
    if (target.kind === 'invite') {
      // One use only: the conditional update fails if another request used it first.
      if (!(await repo.useInvite(trx, inviteHash!, now))) return fail(400, TEXT.ceremony.inviteGone, 'invite_race')
      adminId = inviteeAdminId(challenge.id)
      await repo.insertAdmin(trx, { id: adminId, name: target.name || 'admin', createdAt: now })
    } else {
      adminId = target.adminId
    }
    const count = await repo.countPasskeys(trx, adminId)
    const passkeyName = input.passkeyName || `Passkey ${count + 1}`
    await repo.insertPasskey(trx, {
      id: info.credential.id,
      adminId,
      publicKey: info.credential.publicKey,
      counter: info.credential.counter,
      transports: info.credential.transports,
      deviceType: info.credentialDeviceType,
      backedUp: info.credentialBackedUp,
      name: passkeyName,
      createdAt: now,
    })
    return { ok: true, value: { adminId, passkeyId: info.credential.id, passkeyName } }
  })
}

function parseTransports(raw: string | null): AuthenticatorTransportFuture[] | undefined {
  if (!raw) return undefined
  try {
    const v: unknown = JSON.parse(raw)
    return Array.isArray(v) ? (v.filter((t) => typeof t === 'string') as AuthenticatorTransportFuture[]) : undefined
  } catch {
    return undefined
  }
}
