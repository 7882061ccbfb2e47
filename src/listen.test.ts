// Where a node listens: dual stack by default (Fly's private network is IPv6
// only, local clients use 127.0.0.1), a clear answer on hosts without IPv6,
// and the optional internal listener that alone serves /_caje/internal/*.

import http from 'node:http'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { INTERNAL_ONLY_TEXT, listen } from './app.ts'
import { startNode, startOrigin, type TestNode, type TestOrigin } from './test-support/servers.ts'

const SECRET = 'cluster-secret-for-the-listener-test'

/** GET over a given address family, without fetch's name resolution in the way. */
function getVia(host: string, port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path, headers, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode!, body }))
      })
      .on('error', reject)
  })
}

/** A server on which binding `::` fails as it does on a kernel without IPv6 (booted with ipv6.disable=1). */
class NoIpv6Server extends net.Server {
  override listen(...args: unknown[]): this {
    const opts = args[0] as net.ListenOptions
    if (opts.host === '::') {
      const err = Object.assign(new Error('listen EAFNOSUPPORT: address family not supported :::0'), { code: 'EAFNOSUPPORT' })
      process.nextTick(() => this.emit('error', err))
      return this
    }
    return super.listen(opts)
  }
}

describe('listeners', () => {
  const cleanups: (() => Promise<void> | void)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function origin(): Promise<TestOrigin> {
    const o = await startOrigin((_req, res) => {
      res.writeHead(200, { 'cache-control': 'max-age=60' })
      res.end('origin body')
    })
    cleanups.push(() => o.close())
    return o
  }
  async function node(o: TestOrigin, env: Record<string, string>): Promise<TestNode> {
    const n = await startNode(o.url, env)
    cleanups.push(() => n.close())
    return n
  }

  it('listens on :: by default and answers over IPv6 (::1) and IPv4 (127.0.0.1)', async () => {
    // Unset CAJE_LISTEN_HOST: the default, as in fly.toml.
    const n = await node(await origin(), { CAJE_LISTEN_HOST: '' })
    expect(n.config.listenHost).toBe('::')
    for (const host of ['::1', '127.0.0.1']) {
      expect((await getVia(host, n.port, '/_caje/health')).status, host).toBe(200)
      expect((await getVia(host, n.port, '/page')).body, host).toBe('origin body')
    }
  })

  it('falls back to 0.0.0.0, and says so, where :: cannot be bound and was only the default', async () => {
    const logs: Record<string, unknown>[] = []
    const server = new NoIpv6Server()
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())))
    const address = await listen(server, { host: '::', port: 0, variable: 'CAJE_LISTEN_HOST', fallbackToIpv4: true, log: (o) => logs.push(o) })
    expect(address.address).toBe('0.0.0.0')
    expect(logs).toEqual([expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/no IPv6 \(EAFNOSUPPORT\).*0\.0\.0\.0/) })])
  })

  it('stops with the setting to change where :: was asked for and the host has no IPv6, or the port is taken', async () => {
    const server = new NoIpv6Server()
    await expect(listen(server, { host: '::', port: 0, variable: 'CAJE_LISTEN_HOST', log: () => {} })).rejects.toThrow(
      /^CAJE_LISTEN_HOST: cannot listen on :: because this host has no IPv6 \(EAFNOSUPPORT\); set CAJE_LISTEN_HOST to 0\.0\.0\.0/,
    )
    const taken = net.createServer()
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
    cleanups.push(() => new Promise<void>((r) => taken.close(() => r())))
    const port = (taken.address() as net.AddressInfo).port
    await expect(listen(net.createServer(), { host: '127.0.0.1', port, variable: 'CAJE_INTERNAL_LISTEN', log: () => {} })).rejects.toThrow(
      `CAJE_INTERNAL_LISTEN: port ${port} on 127.0.0.1 is already in use`,
    )
  })

  it('with CAJE_INTERNAL_LISTEN, internal routes answer on that listener only and the public port refuses them', async () => {
    const n = await node(await origin(), { CAJE_INTERNAL_LISTEN: '[::]:0', CAJE_CLUSTER_SECRET: SECRET })
    expect(n.internalListenUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const internalPort = Number(new URL(n.internalListenUrl!).port)
    expect(internalPort).not.toBe(n.port)
    const auth = { authorization: `Bearer ${SECRET}` }

    // The internal listener: internal routes, over both families; nothing else.
    for (const host of ['::1', '127.0.0.1']) {
      const role = await getVia(host, internalPort, '/_caje/internal/role', auth)
      expect(role.status, host).toBe(200)
      expect(JSON.parse(role.body)).toMatchObject({ nodeId: 'test-node', role: 'primary' })
    }
    expect((await getVia('127.0.0.1', internalPort, '/_caje/health')).status).toBe(404)
    expect((await getVia('127.0.0.1', internalPort, '/page')).status).toBe(404)

    // The public port: everything but internal routes, even with the right secret.
    const refused = await getVia('127.0.0.1', n.port, '/_caje/internal/role', auth)
    expect(refused).toEqual({ status: 404, body: INTERNAL_ONLY_TEXT })
    const post = await fetch(`${n.url}/_caje/internal/manifest`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"ops":[]}' })
    expect(post.status).toBe(404)
    expect((await getVia('127.0.0.1', n.port, '/_caje/health')).status).toBe(200)
    expect((await getVia('127.0.0.1', n.port, '/page')).body).toBe('origin body')

    // Peers are told to use the internal listener (the heartbeat records it through the writer's queue).
    await n.manifest.writer.flush()
    const row = await n.manifest.readDb().selectFrom('nodes').select('internal_url').where('id', '=', 'test-node').executeTakeFirst()
    expect(row?.internal_url).toBe(n.internalListenUrl)
  })

  it('without CAJE_INTERNAL_LISTEN the public port serves internal routes (behind the cluster secret)', async () => {
    const n = await node(await origin(), { CAJE_CLUSTER_SECRET: SECRET })
    expect(n.internalListenUrl).toBeUndefined()
    expect((await getVia('127.0.0.1', n.port, '/_caje/internal/role', { authorization: `Bearer ${SECRET}` })).status).toBe(200)
    expect((await getVia('127.0.0.1', n.port, '/_caje/internal/role')).status).toBe(401)
  })
})
