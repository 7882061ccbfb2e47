import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { removeTempDirs, tempDir, tempDirSync } from './temp-dirs.ts'

describe('temp dirs for tests', () => {
  it('removes every dir made, with what was written in it, and tolerates one a test removed itself', async () => {
    const a = await tempDir('caje-temp-dirs-')
    const b = tempDirSync('caje-temp-dirs-')
    const gone = tempDirSync('caje-temp-dirs-')
    fs.mkdirSync(path.join(a, 'cache', 'content'), { recursive: true })
    fs.writeFileSync(path.join(a, 'cache', 'content', 'body'), 'x'.repeat(1000))
    fs.writeFileSync(path.join(b, 'manifest.db'), 'db')
    fs.rmSync(gone, { recursive: true })

    await removeTempDirs()

    for (const dir of [a, b, gone]) expect(fs.existsSync(dir)).toBe(false)
    // Nothing is left to remove a second time.
    await removeTempDirs()
  })
})
