// The rules file as caje reads it (CAJE_CONFIG, YAML or JSON): sites, and the
// ordered rules that decide per request what the cache does. caje.schema.json
// at the repository root describes the same shape for editors; load.ts checks
// it with line numbers.

export type EdgeTtlMode = 'force' | 'default'

export interface RuleMatchSpec {
  /** Host names, `*` matches one label or more (`*.example.com`). */
  host?: string[]
  /** Path prefixes. */
  path?: string[]
  /** Path globs: `*` one segment, `**` any number, `:name` one segment captured for tags. */
  path_glob?: string[]
  /** A regular expression on the path (query excluded); named groups are captured for tags. */
  path_regex?: string
  method?: string[]
  /** Request header fields that must be present. */
  header?: string[]
  /** Cookies that must be present in the request. */
  cookie?: string[]
  /** Response statuses, a number or a range "500-504". */
  status?: Array<number | string>
  /** Response media types, `text/html` or `image/*`. */
  content_type?: string[]
}

export interface CacheKeySpec {
  ignore_query?: boolean
  sort_query?: boolean
  /** Query parameter names to leave out; `*` matches any run of characters (`utm_*`). */
  drop_query?: string[]
  /** Request header values to add to the key. */
  headers?: string[]
  /** Cookie values to add to the key. */
  cookies?: string[]
}

export interface RuleSpec {
  name: string
  match?: RuleMatchSpec
  bypass?: boolean
  edge_ttl?: { seconds: number; mode: EdgeTtlMode }
  browser_ttl?: number
  /** Status (or "lo-hi") → seconds. */
  status_ttl?: Record<string, number>
  stale_while_revalidate?: number
  stale_if_error?: number
  cache_key?: CacheKeySpec
  /** Purge tags; `:name` is replaced by that path capture. */
  tags?: string[]
  continue?: boolean
}

export interface SiteSpec {
  host: string[]
  origin?: string
  rules?: RuleSpec[]
}

export interface RulesFile {
  $schema?: string
  origin?: string
  sites?: SiteSpec[]
  /** Rules for every host, tried after the site's own. */
  rules?: RuleSpec[]
}
