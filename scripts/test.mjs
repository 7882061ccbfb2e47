#!/usr/bin/env node
// `npm test`: every test caje has, in one run, ending with "N passed, N failed".
//  1. makes sure Debian's Chromium is there for the browser tests (installs it when missing),
//  2. runs all vitest suites (unit, integration, multi-node, e2e in Chromium),
//  3. runs the benchmark's smoke mode once (a few seconds, checks bodies and errors).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'

const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { stdio: 'inherit', ...opts })

if (!existsSync('/usr/bin/chromium')) {
  console.log('Chromium is missing: installing Debian\'s chromium for the browser tests')
  const r = run('sh', ['scripts/install-chromium.sh'])
  if (r.status !== 0) console.error('Could not install chromium; the browser tests will fail. Install it with: apt-get install -y chromium')
}

mkdirSync('test-results', { recursive: true })
const report = 'test-results/vitest.json'
const vitest = run(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)])

let passed = 0
let failed = 0
let skipped = 0
try {
  const r = JSON.parse(readFileSync(report, 'utf8'))
  passed = r.numPassedTests
  // A file that failed to load has no failed test of its own: count it as one failure.
  const brokenFiles = (r.testResults ?? []).filter((f) => f.status === 'failed' && !f.assertionResults?.some((a) => a.status === 'failed')).length
  failed = r.numFailedTests + brokenFiles
  skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0)
} catch {
  failed += 1
  console.error(`vitest wrote no report (${report}); exit code ${vitest.status}`)
}
if (vitest.status !== 0 && failed === 0) failed = 1

if (process.argv.length <= 2) {
  console.log('\nbenchmark smoke run (npm run bench -- --smoke)')
  const smoke = run(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke'])
  if (smoke.status === 0) passed += 1
  else failed += 1
}

console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed === 0 ? 0 : 1)
