// One caje node of a local cluster, as its own process: tests that run several
// nodes on one manifest file give each a fixed port, so peers can be named in
// each other's environment before they start.

import http from 'node:http'
import { startCajeProcess, type CajeProcess, type StartOptions } from './caje-process.ts'

export interface ClusterNode extends CajeProcess {
  name: string
  env: Record<string, string>
}

/**
 * caje with exactly `env` (no test defaults; `env.PORT` is fixed), reached at 127.0.0.1 on that
 * port. Several nodes start together, so each gets 150 s: start-up is not what these tests test.
 */
export async function startClusterNode(name: string, env: Record<string, string>, opts: Pick<StartOptions, 'entry' | 'nodeArgs' | 'keepOutputChars'> = {}): Promise<ClusterNode> {
  const p = await startCajeProcess(env, { ...opts, name, defaults: false, startTimeoutMs: 150_000 })
  return { ...p, name, env, url: `http://127.0.0.1:${env.PORT}` }
}

/**
 * A proxied GET with its own Host (fetch cannot set Host), as behind one public
 * name, so every node makes the same cache keys.
 */
export function getWithHost(node: CajeProcess, host: string, pathname: string, headers: Record<string, string> = {}): Promise<{ status: number; cacheStatus: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: node.port, path: pathname, headers: { host, ...headers }, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode!, cacheStatus: String(res.headers['cache-status'] ?? ''), body }))
      })
      .on('error', reject)
  })
}
