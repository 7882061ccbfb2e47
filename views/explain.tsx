import type { FC } from 'hono/jsx'
import type { Explanation, ExplainedVariant } from '../src/rules/explain.ts'
import type { RulesStatus } from '../src/rules/runtime.ts'
import { PostButton } from './components.tsx'
import { Layout, type Chrome } from './layout.tsx'

export interface ExplainPageProps {
  chrome: Chrome
  url: string
  explanation?: Explanation
  error?: string
  rules: RulesStatus
}

const when = (ms: number) => new Date(ms).toISOString()

const Variants: FC<{ title: string; variants: ExplainedVariant[] }> = ({ title, variants }) => (
  <section data-component="card">
    <h2>{title}</h2>
    {variants.length === 0 ? (
      <p>None.</p>
    ) : (
      <table>
        <thead>
          <tr>
            <th>Variant</th>
            <th>Status</th>
            <th>Stored</th>
            <th>Stale at</th>
            <th>Tags</th>
            <th>Nodes</th>
          </tr>
        </thead>
        <tbody>
          {variants.map((v) => (
            <tr>
              <td>{v.variant || '(only)'}</td>
              <td>{v.status}</td>
              <td>{when(v.storedAt)}</td>
              <td>{when(v.staleAt)}</td>
              <td>{v.tags.join(' ')}</td>
              <td>{v.nodes?.join(' ') ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    )}
  </section>
)

/** What caje will do with one URL, and why; and the rules file's state with its reload button. */
export const ExplainPage: FC<ExplainPageProps> = ({ chrome, url, explanation: e, error, rules }) => (
  <Layout title="Explain a URL" chrome={chrome}>
    <section data-component="card">
      <h1>Explain a URL</h1>
      <form method="get" action="/_caje/explain" data-component="form">
        <label>
          URL <input type="url" name="url" value={url} required placeholder="https://www.example.com/path?query" />
        </label>
        <button type="submit">Explain</button>
      </form>
      {error && <p data-slot="message" data-kind="error">{error}</p>}
    </section>
    {e && (
      <section data-component="card" data-slot="explanation">
        <dl>
          <dt>Site</dt>
          <dd>{e.site ?? '(no site: the default origin and the global rules)'}</dd>
          <dt>Origin</dt>
          <dd>{e.origin ?? 'none: caje answers 421'}</dd>
          <dt>Rules that match</dt>
          <dd data-slot="matched">{e.matched.length ? e.matched.join(', ') : 'none'}</dd>
          <dt>Deciding rule</dt>
          <dd data-slot="rule">{e.onOk.rule ?? e.rule ?? 'none: the origin’s headers decide'}</dd>
          <dt>Cache key</dt>
          <dd data-slot="key">{e.key}</dd>
          <dt>Stored?</dt>
          <dd data-slot="stored">
            {e.bypass
              ? 'never: bypassed'
              : e.onOk.edgeTtl
                ? `a 200 is kept ${e.onOk.edgeTtl.seconds} s (${e.onOk.edgeTtl.mode === 'force' ? 'whatever the origin says' : 'when the origin sends no freshness'})`
                : 'when the origin’s Cache-Control allows it, for as long as it says'}
          </dd>
          {e.onOk.browserTtl !== undefined && (
            <>
              <dt>Browser TTL</dt>
              <dd>{e.onOk.browserTtl} s</dd>
            </>
          )}
          <dt>Last Cache-Status here</dt>
          <dd data-slot="last-status">{e.lastCacheStatus ? `${e.lastCacheStatus.cacheStatus} (${when(e.lastCacheStatus.at)})` : 'none since this node started'}</dd>
          {e.onOk.tags.length > 0 && (
            <>
              <dt>Tags from the path</dt>
              <dd>{e.onOk.tags.join(' ')}</dd>
            </>
          )}
        </dl>
      </section>
    )}
    {e && <Variants title="Variants on this node" variants={e.thisNode} />}
    {e && <Variants title="Variants in the manifest" variants={e.manifest} />}
    <section data-component="card">
      <h2>Rules file</h2>
      <p>
        {rules.path ?? 'No rules file (set CAJE_CONFIG).'} {rules.path && `${rules.ruleCount} rules, loaded ${when(rules.loadedAt)}.`}
      </p>
      {rules.lastError && <pre data-slot="message" data-kind="error">{rules.lastError}</pre>}
      {rules.path && <PostButton action="/_caje/rules/reload" csrfToken={chrome.csrfToken} label="Reload rules" />}
    </section>
  </Layout>
)
