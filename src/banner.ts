// What `npm start` prints once a node listens: where the proxy and the admin
// are, and what to try first. Pure, so the wording is tested without a process.

import type { Config } from './config.ts'

export interface BannerInput {
  config: Pick<Config, 'nodeId' | 'region' | 'origin' | 'sites' | 'publicOrigin'>
  /** The address the node listens on, e.g. http://127.0.0.1:8080. */
  url: string
  /** Set when no origin is configured and the built-in demo origin runs. */
  demoOrigin?: { url: string }
  /** Set when CAJE_INTERNAL_LISTEN gives peers a listener of their own. */
  internalListenUrl?: string
  notices: string[]
}

export function startBanner(b: BannerInput): string[] {
  const { config } = b
  const listening = new URL(b.url)
  const pub = new URL(config.publicOrigin)
  const isLocal = (h: string) => h === 'localhost' || h === '127.0.0.1' || h === '[::1]' || h === '::1'
  // One address throughout: the public origin when it names this node (passkeys work only there),
  // else the listening address (the default CAJE_PUBLIC_ORIGIN of a node started with PORT=0).
  const samePort = (pub.port || (pub.protocol === 'https:' ? '443' : '80')) === listening.port
  const base = !isLocal(pub.hostname) || samePort ? config.publicOrigin : b.url
  const lines = [
    `caje is listening on ${b.url} (node ${config.nodeId}, region ${config.region})`,
    b.demoOrigin
      ? `  no origin configured (CAJE_ORIGIN / CAJE_SITES): fronting the built-in demo origin at ${b.demoOrigin.url}`
      : `  origin: ${config.origin?.href ?? '(per host, CAJE_SITES)'}${config.sites.size ? `; sites: ${[...config.sites.keys()].join(', ')}` : ''}`,
    b.demoOrigin
      ? `  try:    curl -i ${base}/cacheable   (twice: watch Cache-Status go from fwd=uri-miss to hit)`
      : `  try:    curl -i ${base}/   (any path of your origin; twice: Cache-Status shows whether it was stored)`,
    `  admin:  ${config.publicOrigin}/_caje/`,
    `          passkeys work only at this address (CAJE_PUBLIC_ORIGIN; WebAuthn refuses IP addresses such as 127.0.0.1)`,
    `  health: ${base}/_caje/health`,
    ...(b.internalListenUrl ? [`  internal routes (peers only): ${b.internalListenUrl}/_caje/internal/`] : []),
    ...b.notices.map((n) => `  ${n}`),
  ]
  return lines
}
