/**
 * The least time a test's poll waits before it fails: a guard that turns a hang into a failure
 * naming what was awaited, shortly before the test's own timeout (vitest.config.ts, 30 s), and
 * never a threshold that a slow, loaded machine could miss.
 */
export const WAIT_GUARD_MS = 25_000
