import { describe, expect, it } from 'vitest'
import { canonicalTarget, canonicalTargetOf, canonicalUrlPrefix } from './canonical-url.ts'

describe('canonicalTarget', () => {
  it.each([
    // Already canonical: unchanged (the fast path).
    ['/', '/'],
    ['/a/b.css?x=1&y=2', '/a/b.css?x=1&y=2'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/..b/c.', '/a/..b/c.'],
    // RFC 3986 §5.2.4 dot segments, also percent-encoded.
    ['/docs/%2e%2e/legal/old', '/legal/old'],
    ['/docs/%2E%2E/legal/old', '/legal/old'],
    ['/docs/.%2e/legal/old', '/legal/old'],
    ['/docs/../legal/old', '/legal/old'],
    ['/a/./b', '/a/b'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/..', '/'],
    ['/../../x', '/x'],
    ['/a/../b?c=/../d', '/b?c=/../d'],
    ['//a/../b', '//b'],
    // §6.2.2.2 unreserved characters decoded; §6.2.2.1 other escapes upper-cased.
    ['/%7euser/%41%62c', '/~user/Abc'],
    ['/a%2fb', '/a%2Fb'],
    ['/a?q=%2b%7e', '/a?q=%2B~'],
    // Characters a target may not hold plain, encoded as the WHATWG parser (and undici) would.
    ['/a"b<c>', '/a%22b%3Cc%3E'],
    ['/a\\b', '/a%5Cb'],
    ['/a|b^c`d{e}', '/a%7Cb%5Ec%60d%7Be%7D'],
    ["/it's?q='x'", "/it's?q=%27x%27"],
    ['/caf\u00e9', '/caf%C3%A9'],
    // A '%' that starts no escape is a literal percent sign.
    ['/100%', '/100%25'],
    ['/a%zz', '/a%25zz'],
    ['/a%2', '/a%252'],
    // An empty query is no query.
    ['/a?', '/a'],
    ['/a??', '/a??'],
    ['*', '*'],
  ])('%s → %s', (input, expected) => {
    expect(canonicalTarget(input)).toBe(expected)
    expect(canonicalTarget(expected)).toBe(expected)
  })

  it('is what undici sends: the WHATWG parser leaves the canonical form as it is', () => {
    for (const t of ['/a%22b', "/x?q=%27", '/a%5Cb', '/b?c=/../d', '//b', '/a%2Fb', '/%25']) {
      const u = new URL(`http://origin.test${t}`)
      expect(u.pathname + u.search).toBe(t)
    }
  })
})

describe('canonicalTargetOf (URLs an operator writes)', () => {
  it.each([
    ['http://site.test/docs/%2e%2e/legal/old', '/legal/old'],
    ['https://site.test', '/'],
    ['https://site.test?x=1', '/?x=1'],
    ['http://site.test/a\\b#frag', '/a%5Cb'],
    ['http://site.test/%7Euser?q=%27', '/~user?q=%27'],
  ])('%s → %s', (written, expected) => {
    expect(canonicalTargetOf(new URL(written), written)).toBe(expected)
  })
})

describe('canonicalUrlPrefix (purge by prefix)', () => {
  it.each([
    ['https://Site.Test/blog/', 'https://site.test/blog/'],
    ['https://site.test:443/%7euser/a%2fb', 'https://site.test/~user/a%2Fb'],
    ['https://site.test/docs/../legal/', 'https://site.test/legal/'],
    ['https://site.test/docs/%2E%2E/legal/ol', 'https://site.test/legal/ol'],
    // The unfinished end is a prefix of something longer: kept as it is.
    ['https://site.test/a/..', 'https://site.test/a/..'],
    ['https://site.test/a/.', 'https://site.test/a/.'],
    ['https://site.test/caf%c3%a', 'https://site.test/caf%C3%A'],
    ['https://site.test/100%', 'https://site.test/100%'],
    ['https://site.test/a?', 'https://site.test/a?'],
    ['https://site.test/a?q=%7e&r=%2f', 'https://site.test/a?q=~&r=%2F'],
    ['https://site.test?x', 'https://site.test/?x'],
    // No path, or no URL: as written.
    ['https://site.test', 'https://site.test'],
    ['/blog/', '/blog/'],
    ['ftp://site.test/x', 'ftp://site.test/x'],
  ])('%s → %s', (written, expected) => {
    expect(canonicalUrlPrefix(written)).toBe(expected)
  })

  it('covers the canonical form of every target it covered as written', () => {
    for (const [prefix, target] of [
      ['http://h/%7Euser/', '/~user/page'],
      ['http://h/docs/', '/docs/%2e/a'],
      ['http://h/caf%c3%a', '/caf%C3%A9'],
      ['http://h/a/..', '/a/..x'],
    ] as const) {
      expect(`http://h${canonicalTarget(target)}`.startsWith(canonicalUrlPrefix(prefix)), `${prefix} ${target}`).toBe(true)
    }
  })
})
