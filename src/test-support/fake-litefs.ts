// A small real HTTP server speaking the part of LiteFS's API that caje uses
// (LiteFS 0.5.x http/server.go): GET /info and the GET /events stream. Tests
// drive it to promote, demote and lose the primary, as LiteFS would during a
// failover or a deploy, without FUSE or Consul.

import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeLitefs {
  /** Base URL for CAJE_LITEFS_API. */
  url: string
  /** This node holds the lease. */
  promote(): void
  /** This node is a replica connected to `hostname`. */
  follow(hostname: string): void
  /** Not primary and no primary known (failover in progress, no candidate up). */
  losePrimary(): void
  /** A transaction event, as LiteFS sends for every write (caje must ignore it). */
  tx(): void
  /** Cut every open /events stream (caje must reconnect and ask /info). */
  dropStreams(): void
  /** Refuse connections until resumed (LiteFS unreachable). */
  pause(): Promise<void>
  resume(): Promise<void>
  /** Open /events streams right now. */
  streams(): number
  /** Requests seen, by path. */
  requests(path: string): number
  /** Told of each request and of each /events stream opened or closed (see when-reached.ts). */
  subscribe(listener: () => void): () => void
  close(): Promise<void>
}

export async function startFakeLitefs(initial: { isPrimary: boolean; hostname?: string } = { isPrimary: true }): Promise<FakeLitefs> {
  let isPrimary = initial.isPrimary
  let primaryHostname = initial.hostname ?? ''
  let txid = 0
  const open = new Set<http.ServerResponse>()
  const seen = new Map<string, number>()
  const listeners = new Set<() => void>()
  const changed = () => {
    for (const listener of listeners) listener()
  }

  const status = () => ({ isPrimary, hostname: isPrimary ? '' : primaryHostname })
  const send = (res: http.ServerResponse, event: unknown) => res.write(JSON.stringify(event) + '\n')
  const broadcast = (event: unknown) => {
    for (const res of open) send(res, event)
  }

  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    seen.set(path, (seen.get(path) ?? 0) + 1)
    // Like LiteFS: every answer names the node.
    res.setHeader('litefs-id', '00000000000000AA')
    if (path === '/info' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify(
          { clusterID: 'LFSC0000000000000001', isPrimary, candidate: true, path: '/var/lib/litefs', primary: { hostname: isPrimary ? 'self' : primaryHostname } },
          null,
          '  ',
        ) + '\n',
      )
      changed()
      return
    }
    if (path === '/events' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' })
      send(res, { type: 'init', data: status() })
      open.add(res)
      res.on('close', () => {
        open.delete(res)
        changed()
      })
      changed()
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('404 page not found\n')
    changed()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port

  const change = () => broadcast({ type: 'primaryChange', data: status() })
  return {
    url: `http://127.0.0.1:${port}`,
    promote() {
      isPrimary = true
      change()
    },
    follow(hostname) {
      isPrimary = false
      primaryHostname = hostname
      change()
    },
    losePrimary() {
      isPrimary = false
      primaryHostname = ''
      change()
    },
    tx() {
      txid++
      broadcast({ type: 'tx', db: 'manifest.db', data: { txID: txid.toString(16).padStart(16, '0'), postApplyChecksum: 'a'.repeat(16), pageSize: 4096, commit: 2, timestamp: new Date().toISOString() } })
    },
    dropStreams() {
      for (const res of open) res.destroy()
      open.clear()
    },
    async pause() {
      for (const res of open) res.destroy()
      open.clear()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
    async resume() {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, '127.0.0.1', () => resolve())
      })
    },
    streams: () => open.size,
    requests: (p) => seen.get(p) ?? 0,
    subscribe(listener) {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    async close() {
      for (const res of open) res.destroy()
      open.clear()
      server.closeAllConnections()
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))
    },
  }
}
