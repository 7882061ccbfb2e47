import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { BodyReader } from './body-reader.ts'
import { integrityOfBytes } from './content-file.ts'
import { bodyOf, sri, tempDir } from './test-support.ts'
import { threadNices } from '../test-support/threads.ts'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

describe.runIf(process.platform === 'linux')('cache body reader thread', () => {
  it('runs below the event loop and reads a batch whole, each body after its own', async () => {
    const { dir, cleanup } = await tempDir()
    cleanups.push(cleanup)
    const reader = new BodyReader()
    cleanups.push(() => reader.close())
    const bodies = [bodyOf(1000, 1), bodyOf(2500, 2)]
    const files = bodies.map((body, i) => {
      const file = path.join(dir, `body-${i}`)
      fs.writeFileSync(file, body)
      return { path: file, size: body.length, integrity: sri(body), verified: undefined }
    })
    const before = threadNices()
    const mine = before.get(String(process.pid))!
    // The thread starts with its first batch.
    const results = await reader.read([...files, { path: path.join(dir, 'none'), size: 1, integrity: sri(Buffer.alloc(1)), verified: undefined }])
    expect(results.map((r) => (r.ok ? r.body : r.reason))).toEqual([...bodies, 'missing'])
    expect(results.map((r) => r.ok && r.hashed)).toEqual([true, true, false])
    const after = threadNices()
    const lowered = [...after].filter(([tid, nice]) => !before.has(tid) && nice === Math.min(19, mine + 10))
    expect(lowered).toHaveLength(1)
    expect(after.get(String(process.pid))).toBe(mine)
  })

  it('checks each body by the digest its integrity names: sha256, or sha512 for one an older version stored', async () => {
    const { dir, cleanup } = await tempDir()
    cleanups.push(cleanup)
    const reader = new BodyReader()
    cleanups.push(() => reader.close())
    const body = bodyOf(3000, 3)
    const file = path.join(dir, 'body')
    fs.writeFileSync(file, body)
    const read = (integrity: string) => reader.read([{ path: file, size: body.length, integrity, verified: undefined }])
    const [sha256, sha512] = await Promise.all([read(integrityOfBytes(body, 'sha256')), read(integrityOfBytes(body, 'sha512'))])
    expect(sha256[0]).toMatchObject({ ok: true, hashed: true })
    expect(sha512[0]).toMatchObject({ ok: true, hashed: true })
    const [other, unknown] = await Promise.all([read(integrityOfBytes(bodyOf(3000, 4), 'sha512')), read(`sha1-${'A'.repeat(27)}=`)])
    expect(other[0]).toMatchObject({ ok: false, reason: 'corrupt' })
    expect(unknown[0]).toMatchObject({ ok: false, reason: 'corrupt' })
  })
})
