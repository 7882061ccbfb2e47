// Read and check the rules file. Every mistake is reported at once, each with
// the file, line and column, the key path, and what to write instead; a file
// with any mistake is refused as a whole (at start caje does not start; on
// reload the rules already running stay).

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Node, parseDocument } from 'yaml'
import { FILE_SHAPE, type Shape } from './schema.ts'
import type { RulesFile, RuleSpec } from './types.ts'

export interface RulesProblem {
  line: number
  column: number
  /** Key path, e.g. `sites[0].rules[2].edge_ttl.mode`. */
  key: string
  message: string
}

export class RulesFileError extends Error {
  constructor(
    readonly file: string,
    readonly problems: RulesProblem[],
  ) {
    super(`${file}: ${problems.length} mistake${problems.length === 1 ? '' : 's'}:\n${problems.map((p) => `  ${file}:${p.line}:${p.column}: ${p.key || '(top)'}: ${p.message}`).join('\n')}`)
    this.name = 'RulesFileError'
  }
}

/**
 * The yaml package, loaded by the first rules file read: about 1 MB of the event loop's V8 heap
 * for as long as the process lives (V8 sizes the heap by what is live), which a node without a
 * rules file does not carry. Required, not imported: a rules file is read synchronously.
 */
let yamlModule: typeof import('yaml') | undefined
const yaml = (): typeof import('yaml') => (yamlModule ??= createRequire(import.meta.url)('yaml') as typeof import('yaml'))

/** Read, parse and check a rules file; throws RulesFileError listing every mistake. */
export function loadRulesFile(file: string): RulesFile {
  let text: string
  try {
    // Read synchronously: a small file, read at start (before serving) and on reload.
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new RulesFileError(file, [{ line: 0, column: 0, key: '', message: `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check the path in CAJE_CONFIG` }])
  }
  return parseRulesText(file, text)
}

/** Parse and check the text of a rules file (YAML, or JSON, which YAML 1.2 includes). */
export function parseRulesText(file: string, text: string): RulesFile {
  const lineCounter = new (yaml().LineCounter)()
  const doc = yaml().parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const problems: RulesProblem[] = []
  const at = (offset: number | undefined) => {
    const pos = lineCounter.linePos(offset ?? 0)
    return { line: pos.line, column: pos.col }
  }
  for (const e of doc.errors) problems.push({ ...at(e.pos[0]), key: '', message: `${e.message.split('\n')[0]}; fix the YAML syntax here` })
  if (problems.length) throw new RulesFileError(file, problems)
  const root = doc.contents
  if (root === null) return {}
  const value = check(root as Node, FILE_SHAPE, '', (node, key, message) => problems.push({ ...at(node?.range?.[0]), key, message })) as RulesFile
  if (problems.length === 0) semanticChecks(doc, value, (key, message) => problems.push({ ...at(nodeAt(doc, key)?.range?.[0]), key, message }))
  if (problems.length) throw new RulesFileError(file, problems)
  return value
}

type Report = (node: Node | null | undefined, key: string, message: string) => void

function describe(node: Node): string {
  if (yaml().isMap(node)) return 'a mapping'
  if (yaml().isSeq(node)) return 'a list'
  if (yaml().isScalar(node)) return node.value === null ? 'empty' : JSON.stringify(node.value)
  return 'this value'
}

/** Check a node against a shape, report each mistake, return the plain value. */
function check(node: Node | null | undefined, shape: Shape, key: string, report: Report): unknown {
  if (node == null) {
    report(node, key, 'has no value; give one or remove the key')
    return undefined
  }
  const scalar = yaml().isScalar(node) ? node.value : undefined
  switch (shape.type) {
    case 'string':
      if (typeof scalar !== 'string') return report(node, key, `is ${describe(node)}; write ${shape.hint}`)
      if (shape.pattern && !shape.pattern.test(scalar)) return report(node, key, `"${scalar}" is not valid; write ${shape.hint}`)
      return scalar
    case 'integer':
      if (typeof scalar !== 'number' || !Number.isInteger(scalar)) return report(node, key, `is ${describe(node)}; write a whole number of seconds, e.g. 60`)
      if (scalar < shape.min || scalar > shape.max) return report(node, key, `${scalar} is out of range; write a number from ${shape.min} to ${shape.max}`)
      return scalar
    case 'boolean':
      if (typeof scalar !== 'boolean') return report(node, key, `is ${describe(node)}; write true or false`)
      return scalar
    case 'enum':
      if (typeof scalar !== 'string' || !shape.values.includes(scalar)) return report(node, key, `is ${describe(node)}; write one of ${shape.values.join(', ')}`)
      return scalar
    case 'status': {
      if (typeof scalar === 'number' && Number.isInteger(scalar) && scalar >= 100 && scalar <= 599) return scalar
      if (typeof scalar === 'string' && statusRange(scalar)) return scalar
      return report(node, key, `is ${describe(node)}; write a status such as 404 or a range such as "500-504"`)
    }
    case 'list': {
      if (!yaml().isSeq(node)) {
        if (shape.single && !yaml().isMap(node)) {
          const one = check(node, shape.of, key, report)
          return one === undefined ? undefined : [one]
        }
        return report(node, key, `is ${describe(node)}; write a list (- item per line)`)
      }
      return node.items.map((item, i) => check(item as Node, shape.of, `${key}[${i}]`, report))
    }
    case 'map': {
      if (!yaml().isMap(node)) return report(node, key, `is ${describe(node)}; write a mapping of ${shape.keyHint} to a value`)
      const out: Record<string, unknown> = {}
      for (const pair of node.items) {
        const k = yaml().isScalar(pair.key) ? String(pair.key.value) : ''
        const sub = key ? `${key}.${k}` : k
        if (!shape.keyPattern.test(k) || (shape.keyHint.includes('status') && !statusRange(k))) report(pair.key as Node, sub, `"${k}" is not valid; write ${shape.keyHint}`)
        else out[k] = check(pair.value as Node, shape.value, sub, report)
      }
      return out
    }
    case 'object': {
      if (!yaml().isMap(node)) return report(node, key, `is ${describe(node)}; write a mapping with keys such as ${Object.keys(shape.props).slice(0, 3).join(', ')}`)
      const out: Record<string, unknown> = {}
      for (const pair of node.items) {
        const k = yaml().isScalar(pair.key) ? String(pair.key.value) : ''
        const sub = key ? `${key}.${k}` : k
        const prop = Object.hasOwn(shape.props, k) ? shape.props[k] : undefined
        if (!prop) {
          const near = closest(k, Object.keys(shape.props))
          report(pair.key as Node, sub, `unknown key "${k}"; ${near ? `did you mean "${near}"? ` : ''}the keys here are ${Object.keys(shape.props).join(', ')}`)
          continue
        }
        out[k] = check(pair.value as Node, prop, sub, report)
      }
      for (const r of shape.required ?? []) if (!(r in out)) report(node, key, `is missing "${r}"; add it`)
      return out
    }
  }
}

/** `500-504` → [500, 504]; `404` → [404, 404]; undefined when not a range of statuses. */
export function statusRange(text: string): [number, number] | undefined {
  const m = /^([1-5]\d\d)(?:-([1-5]\d\d))?$/.exec(text)
  if (!m) return undefined
  const lo = Number(m[1])
  const hi = m[2] === undefined ? lo : Number(m[2])
  return lo <= hi ? [lo, hi] : undefined
}

/** The key (of a short list) nearest to a misspelt one, by edit distance. */
function closest(word: string, options: string[]): string | undefined {
  let best: string | undefined
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1
  for (const o of options) {
    const d = distance(word.toLowerCase().replace(/-/g, '_'), o)
    if (d < bestD) {
      bestD = d
      best = o
    }
  }
  return best
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]!
}

/** The node at a key path such as `rules[2].match.path_regex`. */
function nodeAt(doc: ReturnType<typeof parseDocument>, key: string): Node | undefined {
  const path: Array<string | number> = []
  for (const m of key.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) path.push(m[2] !== undefined ? Number(m[2]) : m[1]!)
  const n = doc.getIn(path, true)
  return n && typeof n === 'object' ? (n as Node) : undefined
}

/** Path captures a rule's path_glob / path_regex define, for its tags. */
export function pathCaptures(rule: RuleSpec): Set<string> {
  const names = new Set<string>()
  for (const g of rule.match?.path_glob ?? []) for (const m of g.matchAll(/:([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]!)
  if (rule.match?.path_regex) for (const m of rule.match.path_regex.matchAll(/\(\?<([A-Za-z_][A-Za-z0-9_]*)>/g)) names.add(m[1]!)
  return names
}

/** What the shape cannot say: regexes compile, names are unique, actions fit the phase they run in. */
function semanticChecks(_doc: ReturnType<typeof parseDocument>, file: RulesFile, report: (key: string, message: string) => void): void {
  const names = new Map<string, string>()
  const lists: Array<[string, RuleSpec[] | undefined]> = [['rules', file.rules], ...(file.sites ?? []).map((s, i) => [`sites[${i}].rules`, s.rules] as [string, RuleSpec[] | undefined])]
  for (const [base, rules] of lists) {
    rules?.forEach((rule, i) => {
      const key = `${base}[${i}]`
      const seen = names.get(rule.name)
      if (seen) report(`${key}.name`, `"${rule.name}" is already the name of ${seen}; give each rule its own name (Cache-Status reports it)`)
      else names.set(rule.name, key)
      if (rule.match?.path_regex !== undefined) {
        try {
          new RegExp(rule.match.path_regex)
        } catch (err) {
          report(`${key}.match.path_regex`, `does not compile (${(err as Error).message}); write a JavaScript regular expression such as ^/v[0-9]+/`)
        }
      }
      const onResponse = rule.match?.status !== undefined || rule.match?.content_type !== undefined
      if (onResponse && rule.bypass) report(`${key}.bypass`, 'is decided before the response exists, so it cannot depend on status or content_type; move bypass to a rule without them')
      if (onResponse && rule.cache_key) report(`${key}.cache_key`, 'is decided before the response exists, so it cannot depend on status or content_type; move cache_key to a rule without them')
      const captures = pathCaptures(rule)
      rule.tags?.forEach((tag, t) => {
        for (const m of tag.matchAll(/:([A-Za-z_][A-Za-z0-9_]*)/g)) {
          if (!captures.has(m[1]!)) report(`${key}.tags[${t}]`, `uses :${m[1]}, which the rule's path_glob or path_regex does not capture; add it to match.path_glob (e.g. /blog/:${m[1]}) or remove it`)
        }
      })
      const actions = rule.bypass || rule.edge_ttl || rule.browser_ttl !== undefined || rule.status_ttl || rule.stale_while_revalidate !== undefined || rule.stale_if_error !== undefined || rule.cache_key || rule.tags
      if (!actions) report(key, `rule "${rule.name}" does nothing; give it an action: bypass, edge_ttl, browser_ttl, status_ttl, stale_while_revalidate, stale_if_error, cache_key or tags`)
    })
  }
}
