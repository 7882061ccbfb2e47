// The 50-rule file of the hit-1k-memory-rules50 scenario: what a busy site's
// rules look like. A request for /1k is checked against every rule: one
// `continue` rule shapes every key (tracking parameters), 48 rules with every
// kind of condition do not match it, and the last one decides.

export const RULES50_DECIDING_RULE = 'everything-else'

export function rules50(): string {
  const lines = ['rules:', '  - name: tracking', '    cache_key: { drop_query: [utm_*, fbclid, gclid], sort_query: true }', '    continue: true']
  for (let i = 0; i < 48; i++) {
    const name = `section-${i}`
    switch (i % 6) {
      case 0:
        lines.push(`  - name: ${name}`, `    match: { path: [/section-${i}/, /archive-${i}/] }`, '    edge_ttl: { seconds: 300, mode: force }')
        break
      case 1:
        lines.push(`  - name: ${name}`, `    match: { path_glob: /blog-${i}/:slug }`, `    tags: [blog-${i}, "post-:slug"]`, '    edge_ttl: { seconds: 600, mode: default }')
        break
      case 2:
        lines.push(`  - name: ${name}`, `    match: { path_regex: "^/v${i}/[a-z]+/[0-9]+$" }`, '    browser_ttl: 60')
        break
      case 3:
        lines.push(`  - name: ${name}`, `    match: { cookie: session-${i} }`, '    bypass: true')
        break
      case 4:
        lines.push(`  - name: ${name}`, `    match: { header: x-preview-${i}, method: [GET, HEAD] }`, '    bypass: true')
        break
      case 5:
        lines.push(`  - name: ${name}`, `    match: { host: "*.tenant-${i}.test", status: [404, "500-504"] }`, '    status_ttl: { "404": 30, "500-504": 5 }')
        break
    }
  }
  lines.push(`  - name: ${RULES50_DECIDING_RULE}`, '    stale_if_error: 600')
  return lines.join('\n') + '\n'
}
