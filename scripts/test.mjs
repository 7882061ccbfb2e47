#!/usr/bin/env node
// `npm test`: every test caje has, in one run, ending with "N passed, N failed".
//  1. makes sure Debian's Chromium is there for the browser tests (installs it when missing),
//  2. runs all vitest suites (unit, integration, multi-node, e2e in Chromium),
//  3. runs the benchmark's smoke mode once (a few seconds, checks bodies and errors).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'

const run = (cmd, args, opts = {}) => spawnSync(cmd, args, { stdio: 'inherit', ...opts })

if (!existsSync('/usr/bin/chromium')) {
  console.log('Chromium is missing: installing Debian\'s chromium for the browser tests')
  const r = run('sh', ['scripts/install-chromium.sh'])
  if (r.status !== 0) console.error('Could not install chromium; the browser tests will fail. Install it with: apt-get install -y chromium')
}

mkdirSync('test-results', { recursive: true })

let passed = 0
let failed = 0
let skipped = 0

/** Run one vitest configuration and add its counts. */
function vitestRun(name, configArgs) {
  const report = `test-results/vitest-${name}.json`
  rmSync(report, { force: true })
  const r = run(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...configArgs, '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)])
  let counted = false
  try {
    const json = JSON.parse(readFileSync(report, 'utf8'))
    passed += json.numPassedTests
    // A file that failed to load has no failed test of its own: count it as one failure.
    const brokenFiles = (json.testResults ?? []).filter((f) => f.status === 'failed' && !f.assertionResults?.some((a) => a.status === 'failed')).length
    failed += json.numFailedTests + brokenFiles
    skipped += (json.numPendingTests ?? 0) + (json.numTodoTests ?? 0)
    counted = json.numFailedTests + brokenFiles > 0
  } catch {
    console.error(`vitest (${name}) wrote no report (${report}); exit code ${r.status}`)
  }
  if (r.status !== 0 && !counted) failed += 1
}

vitestRun('unit', [])
// Browser tests in Debian Chromium (playwright-core), one file at a time.
if (process.argv.length <= 2) vitestRun('e2e', ['--config', 'e2e/vitest.config.ts'])

if (process.argv.length <= 2) {
  console.log('\nbenchmark smoke run (npm run bench -- --smoke)')
  const smoke = run(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke'])
  if (smoke.status === 0) passed += 1
  else failed += 1
}

console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed === 0 ? 0 : 1)
