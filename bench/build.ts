// Benchmarks measure caje as it runs in production: the esbuild bundle
// (`npm run build` → dist/main.js), not the TypeScript sources under a loader.

import { execFileSync } from 'node:child_process'
import path from 'node:path'

/**
 * Build the bundle in `repoDir` (one esbuild run, about a second) and return
 * its path. Each process builds its own file under dist/, so concurrent
 * builds (tests run in parallel) never hand a half-written bundle to node.
 */
export function buildCaje(repoDir: string, name = `main-${process.pid}.js`): string {
  const outfile = path.join(repoDir, 'dist', name)
  execFileSync('npm', ['run', 'build', '--silent', '--', `--outfile=${outfile}`], { cwd: repoDir, stdio: ['ignore', 'ignore', 'inherit'] })
  return outfile
}

/** bench/node-trace.ts as one file node can --import (the bench's instrumentation of each node). */
export function buildTrace(repoDir: string, name: string): string {
  const outfile = path.join(repoDir, 'dist', name)
  execFileSync('npx', ['esbuild', 'bench/node-trace.ts', '--bundle', '--platform=node', '--format=esm', `--outfile=${outfile}`, '--log-level=warning'], { cwd: repoDir, stdio: ['ignore', 'ignore', 'inherit'] })
  return outfile
}
