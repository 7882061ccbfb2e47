// Temp dirs for tests, removed when the test file ends: a test run leaves no
// caches, databases or bodies behind in the machine's temp dir. Removal runs in
// an afterAll that the vitest setup file (remove-temp-dirs.ts) registers before
// any test file's own hooks, so it runs after them, once nodes have stopped.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const made = new Set<string>()

/** A fresh dir under the temp dir, removed when the test file ends. */
export function tempDirSync(prefix = 'caje-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  made.add(dir)
  return dir
}

/** A fresh dir under the temp dir, removed when the test file ends. */
export async function tempDir(prefix = 'caje-test-'): Promise<string> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), prefix))
  made.add(dir)
  return dir
}

/** Remove every dir made so far (a test may have removed some itself). */
export async function removeTempDirs(): Promise<void> {
  const dirs = [...made]
  made.clear()
  await Promise.all(dirs.map((dir) => fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 3 })))
}
