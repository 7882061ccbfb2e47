import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { integrityOfBytes } from './content-file.ts'
import { PendingBody } from './pending-body.ts'

/** Bytes that differ from position to position, so a shifted or torn copy shows. */
function pattern(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return b
}

describe('PendingBody.buffered', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'caje-pending-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  // Chunks are views into socket reads at any offset, and the memory they are gathered into is
  // shared memory at any offset: every pairing of the two within a word must copy exactly.
  it('gathers chunks at every offset into shared memory at every offset, byte for byte', () => {
    for (let chunkOffset = 0; chunkOffset < 8; chunkOffset++) {
      for (let targetOffset = 0; targetOffset < 8; targetOffset++) {
        // Sizes around the copy's 64 KiB steps as well as small ones.
        const sizes = [1, 7, 10_240, 65_536 + 3, 3, 140_000]
        const read = pattern(sizes.reduce((a, b) => a + b, 0) + chunkOffset + 16, chunkOffset + targetOffset)
        const chunks: Buffer[] = []
        let at = chunkOffset
        for (const size of sizes) {
          chunks.push(read.subarray(at, at + size))
          at += size + 1
        }
        const total = chunks.reduce((a, c) => a + c.length, 0)
        const memory = new SharedArrayBuffer(total + 16)
        const body = new PendingBody({
          tmpDir: dir,
          maxBytes: 1 << 20,
          onFailure: (error) => {
            throw error
          },
          allocateBody: (length) => Buffer.from(memory, targetOffset, length),
        })
        for (const chunk of chunks) expect(body.write(chunk)).toBe('ok')
        const buffered = body.buffered(true)!
        const expected = Buffer.concat(chunks)
        expect(buffered.body.buffer).toBe(memory)
        expect(buffered.body.byteOffset).toBe(targetOffset)
        expect(Buffer.compare(buffered.body, expected), `chunks at +${chunkOffset}, body at +${targetOffset}`).toBe(0)
        expect(buffered.integrity).toBe(integrityOfBytes(expected))
        expect(buffered.size).toBe(total)
      }
    }
  })
})
