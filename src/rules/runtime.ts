// The rules in force on this node, and their reload (SIGHUP or the admin's
// button). A reload swaps one reference: requests already running keep the
// RuleMatch they got, new ones get the new rules, no connection is touched. A
// file with mistakes is refused whole and the running rules stay.

import { loadRulesFile, RulesFileError } from './load.ts'
import { compileRules, NO_RULES, type RuleSet } from './match.ts'
import type { RulesFile } from './types.ts'

export interface RulesStatus {
  /** The file, or undefined without CAJE_CONFIG. */
  path: string | undefined
  ruleCount: number
  /** Epoch ms the running rules were loaded. */
  loadedAt: number
  /** Why the last reload was refused (null again after a good one). */
  lastError: string | null
}

export type ReloadOutcome = { ok: true; ruleCount: number } | { ok: false; error: string }

export interface RulesRuntime {
  current(): RuleSet
  reload(): ReloadOutcome
  status(): RulesStatus
}

export function createRulesRuntime(opts: { path: string | undefined; initial: RulesFile | undefined; log: (entry: Record<string, unknown>) => void; now?: () => number }): RulesRuntime {
  const now = opts.now ?? Date.now
  let rules = opts.initial ? compileRules(opts.initial) : NO_RULES
  let loadedAt = now()
  let lastError: string | null = null
  return {
    current: () => rules,
    reload() {
      if (opts.path === undefined) return { ok: false, error: 'no rules file: set CAJE_CONFIG to a file and restart caje' }
      try {
        const next = compileRules(loadRulesFile(opts.path))
        rules = next
        loadedAt = now()
        lastError = null
        opts.log({ msg: 'rules reloaded', file: opts.path, rules: next.ruleCount })
        return { ok: true, ruleCount: next.ruleCount }
      } catch (err) {
        lastError = err instanceof RulesFileError ? err.message : `could not load ${opts.path}: ${(err as Error).message}`
        opts.log({ level: 'error', msg: 'rules reload refused; the previous rules stay in force', file: opts.path, error: lastError })
        return { ok: false, error: lastError }
      }
    },
    status: () => ({ path: opts.path, ruleCount: rules.ruleCount, loadedAt, lastError }),
  }
}
