// End-to-end specs: a real server and Debian's Chromium driven by playwright-core.
// Run with `npx vitest run --config e2e/vitest.config.ts` (needs /usr/bin/chromium:
// scripts/install-chromium.sh). Screenshots land in test-results/.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'hono/jsx' } },
  test: {
    include: ['e2e/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
})
