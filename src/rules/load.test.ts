import fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parseRulesText, RulesFileError } from './load.ts'
import { jsonSchema } from './schema.ts'

function problems(text: string): string[] {
  try {
    parseRulesText('caje.yml', text)
  } catch (err) {
    if (err instanceof RulesFileError) return err.message.split('\n').slice(1).map((l) => l.trim())
    throw err
  }
  return []
}

describe('rules file checks', () => {
  it('accepts a complete file in YAML and the same in JSON', () => {
    const yaml = `
origin: http://127.0.0.1:3000
sites:
  - host: [www.example.com, "*.example.org"]
    origin: http://10.0.0.2:8080
    rules:
      - name: api
        match: { path: /api/ }
        bypass: true
rules:
  - name: tracking
    cache_key: { drop_query: [utm_*, fbclid], sort_query: true }
    continue: true
  - name: errors
    match: { status: [404, "500-504"] }
    status_ttl: { "404": 60, "500-504": 5 }
  - name: blog
    match: { path_glob: /blog/:slug }
    tags: [blog, "post-:slug"]
    edge_ttl: { seconds: 300, mode: default }
`
    const file = parseRulesText('caje.yml', yaml)
    expect(file.rules?.[0]?.cache_key?.drop_query).toEqual(['utm_*', 'fbclid'])
    expect(file.sites?.[0]?.host).toEqual(['www.example.com', '*.example.org'])
    expect(parseRulesText('caje.json', JSON.stringify(file))).toEqual(file)
  })

  it('names the line, column and key of every mistake, with what to write instead', () => {
    const found = problems(`rules:
  - name: one
    match: { pathh: /x }
    edge_ttl: { seconds: soon, mode: forced }
  - name: one
    match: { path_regex: "([a-z" }
    bypass: yes
  - name: two
    match: { status: 404 }
    cache_key: { ignore_query: true }
    tags: ["post-:slug"]
`)
    expect(found).toEqual([
      expect.stringMatching(/^caje\.yml:3:14: rules\[0\]\.match\.pathh: unknown key "pathh"; did you mean "path"\?/),
      expect.stringMatching(/^caje\.yml:4:26: rules\[0\]\.edge_ttl\.seconds: is "soon"; write a whole number of seconds/),
      expect.stringMatching(/^caje\.yml:4:38: rules\[0\]\.edge_ttl\.mode: is "forced"; write one of force, default/),
      expect.stringMatching(/^caje\.yml:7:13: rules\[1\]\.bypass: is "yes"; write true or false/),
    ])
    // Shape mistakes first; once the shape is right, what only the whole file can tell.
    const semantic = problems(`rules:
  - name: one
    match: { path: /x }
    bypass: true
  - name: one
    match: { path_regex: "([a-z" }
    bypass: true
  - name: two
    match: { status: 404 }
    cache_key: { ignore_query: true }
    tags: ["post-:slug"]
`)
    expect(semantic).toEqual([
      expect.stringMatching(/^caje\.yml:5:11: rules\[1\]\.name: "one" is already the name of rules\[0\]/),
      expect.stringMatching(/^caje\.yml:6:26: rules\[1\]\.match\.path_regex: does not compile/),
      expect.stringMatching(/^caje\.yml:10:16: rules\[2\]\.cache_key: is decided before the response exists/),
      expect.stringMatching(/^caje\.yml:11:12: rules\[2\]\.tags\[0\]: uses :slug, which the rule's path_glob or path_regex does not capture/),
    ])
  })

  it('reports YAML syntax errors with their line', () => {
    expect(problems('rules:\n  - name: a\n   bypass: true\n')[0]).toMatch(/^caje\.yml:3:\d+: \(top\): .*fix the YAML syntax here/)
  })

  it('accepts the README example, and a JSON file naming its schema', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const example = /## Rules file[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)![1]!
    const file = parseRulesText('README.md', example)
    expect(file.rules?.map((r) => r.name)).toEqual(['tracking', 'logged-in', 'api', 'static', 'errors', 'blog', 'by-language'])
    expect(parseRulesText('caje.json', '{"$schema": "./caje.schema.json", "rules": []}')).toEqual({ $schema: './caje.schema.json', rules: [] })
  })

  it('ships caje.schema.json generated from the shape caje checks', () => {
    expect(JSON.parse(fs.readFileSync(new URL('../../caje.schema.json', import.meta.url), 'utf8'))).toEqual(jsonSchema())
  })
})
