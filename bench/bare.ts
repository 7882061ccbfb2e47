// The practical ceiling: a bare node:http server answering every benchmark path
// with the same bytes and headers as the origin, straight from memory (all
// 10,000 objects are built at start into one buffer, so serving them makes no
// garbage). A cache in front of an origin cannot beat this on one core; the
// report shows every system as a fraction of it.
//
// Run alone: node --import tsx bench/bare.ts --port 0   (prints {"port":N})

import http from 'node:http'
import { FIXED_SIZES, OBJECT_COUNT, OBJECT_SIZE, contentFor, objectIndex, type Content } from './content.ts'
import { isMain, serveFromCli } from './origin.ts'

export function createBareServer(): http.Server {
  const fixed = new Map<string, Content>()
  for (const p of Object.keys(FIXED_SIZES)) fixed.set(p, contentFor(p)!)
  const slab = Buffer.allocUnsafe(OBJECT_COUNT * OBJECT_SIZE)
  const objects: Content[] = []
  for (let n = 0; n < OBJECT_COUNT; n++) {
    const c = contentFor(`/obj/${n}`)!
    c.body.copy(slab, n * OBJECT_SIZE)
    objects.push({ ...c, body: slab.subarray(n * OBJECT_SIZE, (n + 1) * OBJECT_SIZE) })
  }
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q < 0 ? url : url.slice(0, q)
    const n = path.startsWith('/obj/') ? objectIndex(path) : undefined
    const content = n !== undefined ? objects[n] : fixed.get(path)
    if (!content) {
      res.writeHead(404, { 'content-length': '0' })
      res.end()
      return
    }
    res.writeHead(200, content.headers)
    res.end(req.method === 'HEAD' ? undefined : content.body)
  })
  server.keepAliveTimeout = 65_000
  return server
}

if (isMain(import.meta.url)) {
  await serveFromCli(createBareServer(), process.argv.slice(2))
}
