// A software WebAuthn authenticator (ES256, attestation "none") for route tests,
// so the ceremonies run for real against @simplewebauthn/server without a
// browser. Test support only; the e2e spec uses Chromium's virtual authenticator.

import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'

type Cbor = number | string | Uint8Array | Map<Cbor, Cbor> | Cbor[]

function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n])
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n])
  if (n < 0x10000) return Buffer.from([(major << 5) | 25, n >> 8, n & 0xff])
  const b = Buffer.alloc(5)
  b[0] = (major << 5) | 26
  b.writeUInt32BE(n, 1)
  return b
}

/** Minimal CBOR encoder: the types a COSE key and an attestation object need. */
export function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v)
  if (typeof v === 'string') {
    const s = Buffer.from(v, 'utf8')
    return Buffer.concat([head(3, s.length), s])
  }
  if (v instanceof Uint8Array) return Buffer.concat([head(2, v.length), Buffer.from(v)])
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(cbor)])
  const parts: Buffer[] = [head(5, v.size)]
  for (const [k, val] of v) parts.push(cbor(k), cbor(val))
  return Buffer.concat(parts)
}

const b64url = (b: Uint8Array) => Buffer.from(b).toString('base64url')
const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest()

export interface SoftCredential {
  id: string
  rawId: Buffer
  privateKey: KeyObject
  rpId: string
  userHandle: string
  counter: number
}

export interface CreationOptions {
  challenge: string
  rp: { id?: string; name: string }
  user: { id: string; name: string }
}

export interface RequestOptions {
  challenge: string
  rpId?: string
}

/** What navigator.credentials.create() + @simplewebauthn/browser would send back. */
export function createCredential(options: CreationOptions, origin: string): { credential: SoftCredential; response: Record<string, unknown> } {
  const rpId = options.rp.id ?? new URL(origin).hostname
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = publicKey.export({ format: 'jwk' })
  const coseKey = new Map<Cbor, Cbor>([
    [1, 2], // kty: EC2
    [3, -7], // alg: ES256
    [-1, 1], // crv: P-256
    [-2, Buffer.from(jwk.x!, 'base64url')],
    [-3, Buffer.from(jwk.y!, 'base64url')],
  ])
  const rawId = randomBytes(16)
  const flags = 0x01 | 0x04 | 0x40 // UP, UV, AT
  const counter = 0
  const authData = Buffer.concat([
    sha256(rpId),
    Buffer.from([flags]),
    Buffer.from([0, 0, 0, counter]),
    Buffer.alloc(16), // aaguid
    Buffer.from([rawId.length >> 8, rawId.length & 0xff]),
    rawId,
    cbor(coseKey),
  ])
  const clientDataJSON = Buffer.from(JSON.stringify({ type: 'webauthn.create', challenge: options.challenge, origin, crossOrigin: false }))
  const attestationObject = cbor(
    new Map<Cbor, Cbor>([
      ['fmt', 'none'],
      ['attStmt', new Map()],
      ['authData', authData],
    ]),
  )
  const credential: SoftCredential = { id: b64url(rawId), rawId, privateKey, rpId, userHandle: options.user.id, counter }
  return {
    credential,
    response: {
      id: credential.id,
      rawId: credential.id,
      type: 'public-key',
      clientExtensionResults: {},
      authenticatorAttachment: 'platform',
      response: {
        clientDataJSON: b64url(clientDataJSON),
        attestationObject: b64url(attestationObject),
        transports: ['internal'],
      },
    },
  }
}

/** What navigator.credentials.get() would send back; bumps the signature counter unless told otherwise. */
export function getAssertion(
  credential: SoftCredential,
  options: RequestOptions,
  origin: string,
  opts: { counter?: number; tamper?: boolean } = {},
): Record<string, unknown> {
  credential.counter = opts.counter ?? credential.counter + 1
  const c = credential.counter
  const authData = Buffer.concat([sha256(credential.rpId), Buffer.from([0x01 | 0x04]), Buffer.from([c >>> 24, (c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff])])
  const clientDataJSON = Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge: options.challenge, origin, crossOrigin: false }))
  let signature = sign('sha256', Buffer.concat([authData, sha256(clientDataJSON)]), credential.privateKey)
  if (opts.tamper) signature = Buffer.from(signature.map((b, i) => (i === signature.length - 1 ? b ^ 1 : b)))
  return {
    id: credential.id,
    rawId: credential.id,
    type: 'public-key',
    clientExtensionResults: {},
    authenticatorAttachment: 'platform',
    response: {
      clientDataJSON: b64url(clientDataJSON),
      authenticatorData: b64url(authData),
      signature: b64url(signature),
      userHandle: credential.userHandle,
    },
  }
}
