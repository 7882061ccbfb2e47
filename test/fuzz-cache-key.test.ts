// Hardening: property-based tests (fast-check) for the pure functions that
// decide what is "the same request": cache keys, Vary normalisation and
// variant ids, canonical request targets, Cache-Control parsing and hop-by-hop
// stripping.

import { execFile } from 'node:child_process'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { normaliseHost } from '../src/config.ts'
import { canonicalTarget } from '../src/canonical-url.ts'
import { normaliseFieldValue, primaryKey, variantId, variantMatches, varyFields, varyValues } from '../src/proxy/cache-key.ts'
import { HOP_BY_HOP_HEADERS, stripHopByHop, type HeaderBag } from '../src/proxy/headers.ts'
import { parseDirectives } from '../src/proxy/policy.ts'

const RUNS = { numRuns: 300 }

// ---------------------------------------------------------------- generators

/** One character a field value can hold as Node delivers it: SP, HTAB, VCHAR, obs-text (RFC 9110 §5.5). */
const fieldChar = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(' ', '\t', ',', ';', '=', '"') },
  { weight: 6, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
)
const fieldValue = fc.string({ unit: fieldChar, maxLength: 24 })
/** RFC 9110 §5.6.2 token characters. */
const tokenChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&\'*+-.^_`|~'.split(''))
const token = fc.string({ unit: tokenChar, minLength: 1, maxLength: 10 })
const ows = fc.constantFrom('', ' ', '\t', '  ', ' \t ')
// `constructor` and `__proto__` are lower-case names every plain object already "has".
const fieldName = fc.oneof(fc.constantFrom('accept-language', 'x-device', 'origin', 'user-agent', 'accept', 'constructor', '__proto__'), token.map((t) => t.toLowerCase()))
const SECRET = ['cookie', 'authorization', 'proxy-authorization'] as const
const secretName = fc.constantFrom(...SECRET)

/** What RFC 9111 §4.1 lets a cache treat as equal in a general field value: runs of SP/HTAB, and OWS at the ends. */
const canonicalOws = (v: string) => v.replace(/[ \t]+/g, ' ').replace(/^ | $/g, '')

// ---------------------------------------------------------------- canonical target

describe('canonicalTarget', () => {
  // Small alphabets, so dot segments, escapes of unreserved and reserved characters, stray
  // '%' and characters that need encoding all occur often. No space: it ends the request
  // target (RFC 9112 §3), so none arrives inside one.
  const targetChar = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('/', '/', '.', '.', 'a', 'B', '~', '-', '?', '=', '&', "'", ':', '@', '+') },
    { weight: 3, arbitrary: fc.constantFrom('%2e', '%2E', '%2f', '%2F', '%7e', '%41', '%3f', '%25', '%', '%z', '%e9', '%C3%A9') },
    { weight: 1, arbitrary: fc.constantFrom('"', '<', '>', '`', '{', '}', '|', '^', '[', ']', '\u00e9', '\u{1F600}') },
  )
  const target = fc.array(targetChar, { maxLength: 16 }).map((cs) => `/${cs.join('')}`)
  /** The path and query undici would send for a target (it parses `origin + target` with the WHATWG parser). */
  const whatwg = (t: string) => {
    const u = new URL(`http://origin.test${t}`)
    return u.pathname + u.search
  }

  it('is a fixed point: canonicalising twice changes nothing', () => {
    fc.assert(
      fc.property(target, (t) => {
        const c = canonicalTarget(t)
        expect(canonicalTarget(c)).toBe(c)
      }),
      { numRuns: 2000 },
    )
  })

  it('is what the origin receives: the WHATWG parser undici applies leaves it unchanged', () => {
    fc.assert(
      fc.property(target, (t) => {
        const c = canonicalTarget(t)
        expect(whatwg(c)).toBe(c)
      }),
      { numRuns: 2000 },
    )
  })

  it('agrees with the WHATWG parser on which resource is meant (backslash aside, which that parser reads as /)', () => {
    fc.assert(
      fc.property(target, (t) => {
        if (t.includes('\\')) return
        expect(canonicalTarget(whatwg(t))).toBe(canonicalTarget(t))
      }),
      { numRuns: 2000 },
    )
  })

  it('leaves no dot segment in the path, plain or percent-encoded', () => {
    fc.assert(
      fc.property(target, (t) => {
        const path = canonicalTarget(t).split('?', 1)[0]!
        for (const segment of path.split('/')) expect(['.', '..']).not.toContain(segment.replace(/%2e/gi, '.'))
      }),
      { numRuns: 2000 },
    )
  })

  it('changes only the spelling: decoding both gives the same text, escapes of reserved characters stay escapes', () => {
    // Decoding only escapes of unreserved characters and upper-casing the rest must give the
    // same string from a target without dot segments or characters needing encoding.
    const plain = fc.array(fc.constantFrom('a', '/x', '-', '%7e', '%7E', '%2f', '%2F', '%41', '%3f', '?', '=', '%2b'), { maxLength: 12 }).map((cs) => `/${cs.join('')}`)
    fc.assert(
      fc.property(plain, (t) => {
        const c = canonicalTarget(t)
        const decode = (s: string) => s.replace(/%([0-9a-f]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16)))
        // An empty query is dropped (as the WHATWG parser drops it).
        expect(decode(c)).toBe(decode(t.indexOf('?') === t.length - 1 ? t.slice(0, -1) : t))
        expect(c.match(/%2F|%3F|%2B/g) ?? []).toEqual(t.toUpperCase().match(/%2F|%3F|%2B/g) ?? [])
      }),
      { numRuns: 1000 },
    )
  })
})

// ---------------------------------------------------------------- primary key

describe('primaryKey', () => {
  // Small alphabets so that near-collisions (a:1 vs a, // vs /, ? placement) actually occur.
  const host = fc.string({ unit: fc.constantFrom('a', 'b', '.', ':', '1', '-', '[', ']'), minLength: 1, maxLength: 6 })
  const path = fc.string({ unit: fc.constantFrom('/', 'a', '?', '=', '&', '%', '2', 'F', '.', '#'), maxLength: 8 }).map((p) => `/${p}`)
  const scheme = fc.constantFrom('http', 'https')
  const parts = fc.tuple(scheme, host, path)

  it('is the request URL, so a longer path extends the key (a script can purge by key, a prefix covers what is under it)', () => {
    fc.assert(
      fc.property(parts, fc.string({ unit: fc.constantFrom('/', 'a', '?', '=', '%'), maxLength: 4 }), ([s, h, p], more) => {
        expect(primaryKey(s, h, p)).toBe(`${s}://${h}${p}`)
        expect(primaryKey(s, h, p + more).startsWith(primaryKey(s, h, p))).toBe(true)
      }),
      RUNS,
    )
  })

  it('never lets two different (scheme, host, path+query) share a key', () => {
    fc.assert(
      fc.property(parts, parts, ([s1, h1, p1], [s2, h2, p2]) => {
        if (s1 === s2 && h1 === h2 && p1 === p2) return
        expect(primaryKey(s1, h1, p1)).not.toBe(primaryKey(s2, h2, p2))
      }),
      { numRuns: 2000 },
    )
  })

  it('gives one key for equivalent spellings of a host (case, default port, trailing dot)', () => {
    const name = fc.string({ unit: fc.constantFrom('a', 'B', 'c', '1', '-'), minLength: 1, maxLength: 8 }).map((n) => `${n}.test`)
    fc.assert(
      fc.property(name, fc.constantFrom('', ':80', ':8080'), fc.boolean(), fc.boolean(), path, (n, port, upper, dot, p) => {
        const spelled = `${upper ? n.toUpperCase() : n.toLowerCase()}${dot ? '.' : ''}${port}`
        const plain = `${n.toLowerCase()}${port === ':80' ? '' : port}`
        expect(normaliseHost(spelled)).toBe(plain)
        expect(primaryKey('http', normaliseHost(spelled), p)).toBe(primaryKey('http', plain, p))
      }),
      RUNS,
    )
  })
})

// ---------------------------------------------------------------- Vary normalisation

describe('normaliseFieldValue', () => {
  it('is idempotent for every non-secret field', () => {
    fc.assert(
      fc.property(fc.oneof(fieldName, fc.constant('accept-encoding')), fieldValue, (name, value) => {
        const once = normaliseFieldValue(name, value)
        expect(normaliseFieldValue(name, once)).toBe(once)
      }),
      { numRuns: 1000 },
    )
  })

  it('merges general field values only when they differ in HTTP whitespace (SP/HTAB) or list spacing, never otherwise', () => {
    // Small alphabet with NBSP (obs-text, which JavaScript's \s also matches) to provoke collisions.
    const v = fc.string({ unit: fc.constantFrom('a', 'b', ' ', '\t', '\u00a0', ','), maxLength: 6 })
    // RFC 9110 §5.6.1: the OWS around a list comma is not part of either member.
    const canonicalList = (x: string) => canonicalOws(x).replace(/ ?, ?/g, ',')
    fc.assert(
      fc.property(
        fieldName.filter((n) => n !== 'accept-language'),
        v,
        v,
        (name, a, b) => {
          const same = normaliseFieldValue(name, a) === normaliseFieldValue(name, b)
          expect(same).toBe(canonicalList(a) === canonicalList(b))
        },
      ),
      { numRuns: 2000 },
    )
  })

  it('reads Accept-Language as a weighted set: order of equal weights, case and whitespace do not matter, weights do', () => {
    const range = fc.record({ tag: fc.constantFrom('en', 'en-us', 'de', 'fr', '*'), upper: fc.boolean(), q: fc.constantFrom('', ';q=1', ';q=0.5', ';q=0.50', '; Q=0.5', ';q=0.1'), before: ows, after: ows })
    type Range = { tag: string; upper: boolean; q: string; before: string; after: string }
    const render = (rs: Range[]) => rs.map((r) => `${r.before}${r.upper ? r.tag.toUpperCase() : r.tag}${r.q}${r.after}`).join(',')
    /** tag → weight, the meaning the origin reads (no tag twice, to keep the meaning unambiguous). */
    const meaning = (rs: Range[]) => [...new Set(rs.map((r) => `${r.tag}=${Number(/q=([\d.]+)/i.exec(r.q)?.[1] ?? 1)}`))].sort().join(' ')
    const ranges = fc.uniqueArray(range, { selector: (r) => r.tag, minLength: 1, maxLength: 4 })
    fc.assert(
      fc.property(ranges, ranges, (a, b) => {
        const same = normaliseFieldValue('accept-language', render(a)) === normaliseFieldValue('accept-language', render(b))
        expect(same).toBe(meaning(a) === meaning(b))
      }),
      { numRuns: 2000 },
    )
  })

  it('never matches an absent field with a present one, even an empty one (RFC 9111 §4.1)', () => {
    fc.assert(
      fc.property(fc.oneof(fieldName, secretName, fc.constant('accept-encoding')), fc.oneof(fieldValue, fc.constantFrom('', ' ', '\t')), (name, value) => {
        expect(normaliseFieldValue(name, value)).not.toBe(normaliseFieldValue(name, undefined))
        expect(variantMatches(varyValues([name], {}), [name], { [name]: value })).toBe(false)
        expect(variantMatches(varyValues([name], { [name]: value }), [name], {})).toBe(false)
      }),
      RUNS,
    )
  })

  describe('Accept-Encoding', () => {
    const CODINGS = ['gzip', 'br', 'deflate', 'zstd', 'identity', 'compress', '*', 'x-gzip']
    const Q = ['', ';q=1', ';q=0.5', ';q=0.001', ';q=0', ';q=0.0', ';q=0.000', ';Q=0', ' ; q=0', ';q=1.0']
    const item = fc.record({
      coding: fc.constantFrom(...CODINGS),
      upper: fc.boolean(),
      q: fc.constantFrom(...Q),
      before: ows,
      after: ows,
    })
    const render = (items: Array<{ coding: string; upper: boolean; q: string; before: string; after: string }>) =>
      items.map((i) => `${i.before}${i.upper ? i.coding.toUpperCase() : i.coding}${i.q}${i.after}`).join(',')
    /** The codings a request accepts: some occurrence with a non-zero q (x-gzip is gzip, RFC 9110 §8.4.1.3). */
    const accepted = (items: Array<{ coding: string; q: string }>) =>
      new Set(items.filter((i) => !/q=0(\.0*)?$/i.test(i.q.replace(/\s/g, ''))).map((i) => (i.coding === 'x-gzip' ? 'gzip' : i.coding)))

    it('is insensitive to order, case and whitespace', () => {
      fc.assert(
        fc.property(fc.array(item, { maxLength: 6 }).chain((items) => fc.tuple(fc.constant(items), fc.shuffledSubarray(items, { minLength: items.length, maxLength: items.length }))), ([items, shuffled]) => {
          const a = normaliseFieldValue('accept-encoding', render(items))
          const b = normaliseFieldValue('accept-encoding', render(shuffled.map((i) => ({ ...i, upper: !i.upper, before: '', after: ' ' }))))
          expect(b).toBe(a)
          expect(variantId({ 'accept-encoding': a })).toBe(variantId({ 'accept-encoding': b }))
        }),
        RUNS,
      )
    })

    it('tells different sets of accepted codings apart', () => {
      fc.assert(
        fc.property(fc.array(item, { minLength: 1, maxLength: 5 }), fc.array(item, { minLength: 1, maxLength: 5 }), (x, y) => {
          const sameSet = [...accepted(x)].sort().join() === [...accepted(y)].sort().join()
          const sameValue = normaliseFieldValue('accept-encoding', render(x)) === normaliseFieldValue('accept-encoding', render(y))
          expect(sameValue).toBe(sameSet)
        }),
        { numRuns: 1000 },
      )
    })

    it('turns `gzip, br` and `br,gzip` into one variant', () => {
      expect(normaliseFieldValue('accept-encoding', 'gzip, br')).toBe(normaliseFieldValue('accept-encoding', 'br,gzip'))
    })
  })

  describe('secret fields (Cookie, Authorization, Proxy-Authorization)', () => {
    const secret = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 8, maxLength: 40 })

    it('are kept only as a digest, never in clear, in the values and ids that are stored', () => {
      fc.assert(
        fc.property(secretName, secret, fieldValue, (name, value, other) => {
          const stored = varyValues([name, 'accept-language'], { [name]: value, 'accept-language': other })
          expect(stored[name]).toMatch(/^sha256:[A-Za-z0-9_-]{43}$/)
          const serialised = JSON.stringify(stored) + variantId(stored)
          expect(serialised).not.toContain(value)
          expect(serialised).not.toContain(JSON.stringify(value).slice(1, -1))
        }),
        RUNS,
      )
    })

    it('cannot be matched by presenting the stored digest (no pass-the-hash)', () => {
      fc.assert(
        fc.property(secretName, secret, (name, value) => {
          const stored = varyValues([name], { [name]: value })
          expect(variantMatches(stored, [name], { [name]: value })).toBe(true)
          expect(variantMatches(stored, [name], { [name]: stored[name]! })).toBe(false)
        }),
        RUNS,
      )
    })

    it('tell different secrets apart', () => {
      fc.assert(
        fc.property(secretName, secret, secret, (name, a, b) => {
          fc.pre(canonicalOws(a) !== canonicalOws(b))
          expect(normaliseFieldValue(name, a)).not.toBe(normaliseFieldValue(name, b))
        }),
        RUNS,
      )
    })
  })
})

describe('varyFields, varyValues and variantId', () => {
  const headers = fc.dictionary(fieldName, fieldValue, { maxKeys: 5 })

  it('reads Vary the same whatever its case, order, whitespace and duplicates', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fieldName, { minLength: 1, maxLength: 5 }), ows, (names, space) => {
        const a = varyFields(names.join(','))
        const b = varyFields([...names].reverse().map((n) => `${space}${n.toUpperCase()}${space}`).concat(names[0]!).join(','))
        expect(b).toEqual(a)
      }),
      RUNS,
    )
  })

  it('gives a stable id that does not depend on the order fields were read in', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fieldName, { maxLength: 5 }), headers, (fields, h) => {
        const values = varyValues(fields, h)
        const reordered = Object.fromEntries(Object.entries(values).reverse())
        expect(variantId(reordered)).toBe(variantId(values))
        // Headers given in another order (as another client sends them) give the same id.
        const shuffledHeaders = Object.fromEntries(Object.entries(h).reverse())
        expect(variantId(varyValues([...fields].reverse(), shuffledHeaders))).toBe(variantId(values))
      }),
      RUNS,
    )
  })

  it('gives different ids to requests whose Vary’d fields differ after normalisation', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fieldName, { minLength: 1, maxLength: 4 }), headers, headers, (fields, h1, h2) => {
        const v1 = varyValues(fields, h1)
        const v2 = varyValues(fields, h2)
        const same = fields.every((f) => v1[f] === v2[f])
        expect(variantId(v1) === variantId(v2)).toBe(same)
        // The matcher agrees with the ids.
        expect(variantMatches(v1, fields, h2)).toBe(same)
      }),
      { numRuns: 1000 },
    )
  })

  it('never confuses which field a value belongs to', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fieldName, { minLength: 2, maxLength: 2 }), fieldValue, ([a, b], value) => {
        fc.pre(canonicalOws(value) !== '')
        expect(variantId(varyValues([a!, b!], { [a!]: value }))).not.toBe(variantId(varyValues([a!, b!], { [b!]: value })))
      }),
      RUNS,
    )
  })

  it('gives no id without Vary, and a different one with any Vary field', () => {
    expect(variantId({})).toBe('')
    fc.assert(
      fc.property(fieldName, (name) => {
        expect(variantId(varyValues([name], {}))).not.toBe('')
      }),
    )
  })
})

// ---------------------------------------------------------------- Cache-Control

describe('parseDirectives', () => {
  type Dir = { name: string; value: { kind: 'none' } | { kind: 'token'; text: string } | { kind: 'quoted'; text: string; escapeAll: boolean } }
  const quotedText = fc.string({ unit: fc.oneof(fieldChar, fc.constantFrom('\\', '"', ',')), maxLength: 12 })
  const directive: fc.Arbitrary<Dir> = fc.record({
    name: token,
    value: fc.oneof(
      fc.constant({ kind: 'none' as const }),
      token.map((text) => ({ kind: 'token' as const, text })),
      fc.record({ kind: fc.constant('quoted' as const), text: quotedText, escapeAll: fc.boolean() }),
    ),
  })
  const render = (d: Dir): string => {
    if (d.value.kind === 'none') return d.name
    if (d.value.kind === 'token') return `${d.name}=${d.value.text}`
    const escaped = d.value.escapeAll ? d.value.text.replace(/[\s\S]/g, (c) => (c === ' ' || c === '\t' ? c : `\\${c}`)) : d.value.text.replace(/["\\]/g, (c) => `\\${c}`)
    return `${d.name}="${escaped}"`
  }
  /** RFC 9111 §5.2 / §4.2.1: names case-insensitive, first occurrence wins, quoted-string unquoted. */
  const model = (dirs: Dir[]) => {
    const out = new Map<string, string | true>()
    for (const d of dirs) {
      const name = d.name.toLowerCase()
      if (out.has(name)) continue
      out.set(name, d.value.kind === 'none' ? true : d.value.text)
    }
    return out
  }

  it('parses any well-formed list like the RFC model (case, duplicates, quoted commas and escapes)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(ows, directive, ows), { maxLength: 6 }), (items) => {
        const text = items.map(([a, d, b]) => `${a}${render(d)}${b}`).join(',')
        expect(parseDirectives(text)).toEqual(model(items.map(([, d]) => d)))
      }),
      { numRuns: 1000 },
    )
  })

  it('never throws and only yields trimmed, lower-case, non-empty names', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.oneof(fieldChar, fc.constantFrom('\\', '"', ',', '=')), maxLength: 40 }), (text) => {
        for (const [name] of parseDirectives(text)) {
          expect(name).toBe(name.trim().toLowerCase())
          expect(name).not.toBe('')
        }
      }),
      { numRuns: 1000 },
    )
  })

  it('takes linear time on unterminated quoted strings (a client controls request Cache-Control)', async ({ onTestFinished }) => {
    // Backslash runs inside an unterminated quote once made the splitting regex backtrack
    // exponentially (26 pairs took about a second, a few more froze the event loop), and `\"`
    // runs made even the corrected regex quadratic (250 ms for one 16 KB header). Here 40 pairs
    // would backtrack for hours and the long inputs (80 such headers) take a quadratic scan
    // minutes, far past the test's timeout; a linear one parses them all in milliseconds.
    // They are parsed in a process of their own: the test's timeout cannot stop a synchronous
    // loop on its own thread, only its waiting for another process's answer.
    const script = `
      const { parseDirectives } = await import(${JSON.stringify(new URL('../src/proxy/policy.ts', import.meta.url).href)})
      const texts = [
        'a="' + 'a\\\\'.repeat(40),
        '"' + '\\\\'.repeat(40),
        'no-cache="' + 'x\\\\,'.repeat(20),
        'max-age=1, x="' + 'a\\\\'.repeat(640_000),
        '"' + '\\\\"'.repeat(640_000),
        'x\\\\"'.repeat(430_000),
      ]
      process.stdout.write(JSON.stringify(texts.map((text) => [text.length, parseDirectives(text).size])))
    `
    const child = execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { maxBuffer: 1 << 20 })
    onTestFinished(() => void child.kill('SIGKILL'))
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    expect(code).toBe(0)
    const parsed = JSON.parse(out) as Array<[number, number]>
    expect(parsed.map(([length]) => length)).toEqual([83, 41, 70, 1_280_014, 1_280_001, 1_290_000])
    for (const [, size] of parsed) expect(size).toBeGreaterThan(0)
  })
})

// ---------------------------------------------------------------- hop-by-hop

describe('stripHopByHop', () => {
  // Node and undici never deliver a field named __proto__ (their header objects drop it), so it is left out here.
  const names = fc
    .oneof(fc.constantFrom(...HOP_BY_HOP_HEADERS, 'set-cookie', 'cache-control', 'x-custom', 'authorization', 'content-length', 'constructor'), token.map((t) => t.toLowerCase()))
    .filter((n) => n !== '__proto__')
  const value = fc.oneof(fieldValue, fc.array(fieldValue, { minLength: 1, maxLength: 3 }))
  const bag = fc
    .tuple(fc.dictionary(names, value, { maxKeys: 8 }), fc.array(fc.tuple(ows, names, fc.boolean(), ows), { maxLength: 3 }))
    .map(([h, listed]) => {
      const out: HeaderBag = { ...h }
      if (listed.length) out.connection = listed.map(([a, n, upper, b]) => `${a}${upper ? n.toUpperCase() : n}${b}`).join(',')
      return out
    })
  const listedIn = (h: HeaderBag) =>
    new Set(
      [h.connection ?? []]
        .flat()
        .join(',')
        .split(',')
        .map((t) => t.trim().toLowerCase())
        .filter(Boolean),
    )

  it('drops every hop-by-hop field and every field named in Connection (RFC 9110 §7.6.1), keeps the rest', () => {
    fc.assert(
      fc.property(bag, (h) => {
        const before = structuredClone(h)
        const { headers, setCookie } = stripHopByHop(h)
        const dropped = listedIn(h)
        for (const name of Object.keys(headers)) {
          expect(HOP_BY_HOP_HEADERS.has(name)).toBe(false)
          expect(dropped.has(name)).toBe(false)
          expect(name).not.toBe('set-cookie')
        }
        for (const [name, v] of Object.entries(h)) {
          if (v === undefined || HOP_BY_HOP_HEADERS.has(name) || dropped.has(name) || name === 'set-cookie') continue
          expect(headers[name]).toBe(Array.isArray(v) ? v.join(', ') : v)
        }
        const cookies = h['set-cookie']
        expect(setCookie).toEqual(cookies === undefined || dropped.has('set-cookie') ? [] : [cookies].flat())
        expect(h).toEqual(before)
      }),
      { numRuns: 1000 },
    )
  })

  it('is idempotent', () => {
    fc.assert(
      fc.property(bag, (h) => {
        const once = stripHopByHop(h).headers
        expect(stripHopByHop(once).headers).toEqual(once)
      }),
      RUNS,
    )
  })
})
