// Which origin serves a host. Two places name origins, the environment (CAJE_SITES,
// CAJE_ORIGIN) and the rules file (a site's `origin`, the top-level `origin`), and the built-in
// demo origin stands in when neither does; this module keeps their order in one place.

import type { Config } from '../config.ts'
import type { RuleSet } from './match.ts'

export type OriginSettings = Pick<Config, 'sites' | 'origin'>

/** Whether nothing names an origin, so the built-in demo origin serves every host. */
export function needsDemoOrigin(config: OriginSettings, rules: RuleSet): boolean {
  return !config.origin && config.sites.size === 0 && !rules.hasSites
}

/**
 * The origin for a host, under the rules in force at each call (they can be reloaded):
 * environment before file (CAJE_SITES, then CAJE_ORIGIN over the file's top-level origin), but a
 * site's own origin in the file is more specific than either default; the demo origin last.
 * Undefined: caje serves no such site (a 421).
 */
export function originResolver(config: OriginSettings, rules: () => RuleSet, demo?: URL): (host: string) => URL | undefined {
  return (host) => {
    const current = rules()
    return config.sites.get(host) ?? current.origin(host) ?? config.origin ?? current.defaultOrigin ?? demo
  }
}
