import { describe, expect, it } from 'vitest'
import { ExplainPage } from '../../views/explain.tsx'
import type { Chrome } from '../../views/layout.tsx'
import type { Explanation } from './explain.ts'

const chrome: Chrome = {
  adminName: 'ada',
  csrfToken: 'csrf-token-1',
  current: 'list',
  status: { nodeId: 'n1', region: 'local', role: 'primary', hitRatio: null, cacheBytes: 0, entries: 0 },
}

const explanation: Explanation = {
  url: 'https://www.example.com/blog/a?utm_source=x',
  host: 'www.example.com',
  site: 'www.example.com',
  origin: 'http://10.0.0.1/',
  matched: ['tracking', 'blog'],
  rule: 'blog',
  bypass: false,
  key: 'https://www.example.com/blog/a',
  keyChanged: true,
  onOk: { rule: 'blog', edgeTtl: { seconds: 300, mode: 'force' }, browserTtl: 60, staleWhileRevalidate: undefined, staleIfError: undefined, tags: ['blog', 'post-a'] },
  thisNode: [{ variant: '', status: 200, storedAt: 0, staleAt: 1000, deleteAt: 2000, tags: ['blog'] }],
  manifest: [],
  lastCacheStatus: { cacheStatus: 'caje; hit; ttl=10; detail=rule:blog', at: 0 },
}

describe('explain page', () => {
  it('shows the site, rules, key, what is stored, the variants, the last Cache-Status and the reload button', async () => {
    const html = String(await (<ExplainPage chrome={chrome} url={explanation.url} explanation={explanation} rules={{ path: '/etc/caje.yml', ruleCount: 2, loadedAt: 0, lastError: 'caje.yml:3:5: rules[0].bypass: is "maybe"' }} />))
    expect(html).toContain('<dd data-slot="matched">tracking, blog</dd>')
    expect(html).toContain('<dd data-slot="key">https://www.example.com/blog/a</dd>')
    expect(html).toContain('a 200 is kept 300 s (whatever the origin says)')
    expect(html).toContain('caje; hit; ttl=10; detail=rule:blog')
    expect(html).toContain('rules[0].bypass: is &quot;maybe&quot;')
    expect(html).toMatch(/<form method="post" action="\/_caje\/rules\/reload"[^>]*><input type="hidden" name="_csrf" value="csrf-token-1"/)
  })
})
