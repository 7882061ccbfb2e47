// The one description of the rules file's shape. load.ts checks a parsed file
// against it (with the line of every mistake); jsonSchema() turns it into the
// JSON Schema shipped as caje.schema.json, so editors complete and check the
// same shape caje accepts (schema.test.ts keeps the two equal).

export type Shape =
  | { type: 'string'; pattern?: RegExp; hint: string; description?: string }
  | { type: 'integer'; min: number; max: number; description?: string }
  | { type: 'boolean'; description?: string }
  | { type: 'enum'; values: readonly string[]; description?: string }
  /** A list; `single` accepts one value in its place (`method: GET`). */
  | { type: 'list'; of: Shape; single?: boolean; description?: string }
  | { type: 'object'; props: Record<string, Shape>; required?: readonly string[]; description?: string }
  | { type: 'map'; keyPattern: RegExp; keyHint: string; value: Shape; description?: string }
  /** A status code or a range of them: 404 or "500-504". */
  | { type: 'status'; description?: string }

const SECONDS: Shape = { type: 'integer', min: 0, max: 2147483647 }
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const HEADER_NAME: Shape = { type: 'string', pattern: TOKEN, hint: 'a header field name such as x-device' }
const COOKIE_NAME: Shape = { type: 'string', pattern: TOKEN, hint: 'a cookie name such as session' }
const ORIGIN: Shape = { type: 'string', pattern: /^https?:\/\/[^/?#\s]+\/?$/, hint: 'an http(s) base URL such as http://127.0.0.1:3000', description: 'Origin base URL' }
const HOST_PATTERN: Shape = { type: 'string', pattern: /^(\*\.)?[a-z0-9.-]+(:\d+)?$|^\*$/i, hint: 'a host name such as www.example.com, or *.example.com' }
const many = (of: Shape, description?: string): Shape => ({ type: 'list', of, single: true, description })

export const MATCH_SHAPE: Shape = {
  type: 'object',
  description: 'Conditions, all of which must hold',
  props: {
    host: many(HOST_PATTERN, 'Request host, * matches one label or more'),
    path: many({ type: 'string', pattern: /^\//, hint: 'a path starting with /, such as /api/' }, 'Path prefix'),
    path_glob: many({ type: 'string', pattern: /^\//, hint: 'a glob starting with /, such as /blog/:slug or /assets/**' }, 'Path glob: * one segment, ** any, :name one segment captured'),
    path_regex: { type: 'string', hint: 'a regular expression such as ^/v[0-9]+/', description: 'Regular expression on the path (no query)' },
    method: many({ type: 'string', pattern: /^[A-Z]+$/, hint: 'a method in capitals such as GET' }),
    header: many(HEADER_NAME, 'Request header fields that must be present'),
    cookie: many(COOKIE_NAME, 'Cookies that must be present'),
    status: many({ type: 'status' }, 'Response status, 404 or "500-504"'),
    content_type: many({ type: 'string', pattern: /^[a-z0-9!#$&^_.+-]+\/([a-z0-9!#$&^_.+-]+|\*)$/i, hint: 'a media type such as text/html or image/*' }, 'Response media type'),
  },
}

export const RULE_SHAPE: Shape = {
  type: 'object',
  required: ['name'],
  props: {
    name: { type: 'string', pattern: /^[A-Za-z][A-Za-z0-9_.-]*$/, hint: 'a name of letters, digits, _ . - starting with a letter, such as static-assets', description: 'Shown in Cache-Status and the explain page' },
    match: MATCH_SHAPE,
    bypass: { type: 'boolean', description: 'Never store or serve from cache' },
    edge_ttl: {
      type: 'object',
      required: ['seconds'],
      description: 'How long caje keeps the response',
      props: {
        seconds: SECONDS,
        mode: { type: 'enum', values: ['force', 'default'], description: 'force: whatever the origin says; default: only when the origin sends no freshness' },
      },
    },
    browser_ttl: { ...SECONDS, description: 'Cache-Control max-age sent to clients' },
    status_ttl: { type: 'map', keyPattern: /^[1-5]\d\d(-[1-5]\d\d)?$/, keyHint: 'a status such as 404 or a range such as 500-504', value: SECONDS, description: 'Seconds to keep a response with this status' },
    stale_while_revalidate: { ...SECONDS, description: 'Default when the origin sends none' },
    stale_if_error: { ...SECONDS, description: 'Default when the origin sends none' },
    cache_key: {
      type: 'object',
      props: {
        ignore_query: { type: 'boolean' },
        sort_query: { type: 'boolean' },
        drop_query: many({ type: 'string', pattern: /^[^&=#\s]+$/, hint: 'a parameter name, * for any characters, such as utm_*' }),
        headers: many(HEADER_NAME),
        cookies: many(COOKIE_NAME),
      },
    },
    tags: many({ type: 'string', pattern: /^[^\s,]+$/, hint: 'a tag without spaces or commas, :name for a path capture, such as post-:slug' }, 'Purge tags'),
    continue: { type: 'boolean', description: 'Keep matching later rules after this one' },
  },
}

export const FILE_SHAPE: Shape = {
  type: 'object',
  props: {
    $schema: { type: 'string', hint: 'the path or URL of caje.schema.json', description: 'For editors: where this schema is' },
    origin: ORIGIN,
    sites: {
      type: 'list',
      of: {
        type: 'object',
        required: ['host'],
        props: { host: many(HOST_PATTERN), origin: ORIGIN, rules: { type: 'list', of: RULE_SHAPE } },
      },
    },
    rules: { type: 'list', of: RULE_SHAPE, description: 'Rules for every host, after the site rules' },
  },
}

type Json = { [k: string]: unknown }

function toJsonSchema(s: Shape): Json {
  const d = s.description ? { description: s.description } : {}
  switch (s.type) {
    case 'string':
      return { type: 'string', ...(s.pattern ? { pattern: s.pattern.source } : {}), ...d }
    case 'integer':
      return { type: 'integer', minimum: s.min, maximum: s.max, ...d }
    case 'boolean':
      return { type: 'boolean', ...d }
    case 'enum':
      return { enum: [...s.values], ...d }
    case 'status':
      return { oneOf: [{ type: 'integer', minimum: 100, maximum: 599 }, { type: 'string', pattern: '^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$' }], ...d }
    case 'list': {
      const list = { type: 'array', items: toJsonSchema(s.of) }
      return s.single ? { oneOf: [toJsonSchema(s.of), list], ...d } : { ...list, ...d }
    }
    case 'map':
      return { type: 'object', propertyNames: { pattern: s.keyPattern.source }, additionalProperties: toJsonSchema(s.value), ...d }
    case 'object':
      return {
        type: 'object',
        additionalProperties: false,
        ...(s.required ? { required: [...s.required] } : {}),
        properties: Object.fromEntries(Object.entries(s.props).map(([k, v]) => [k, toJsonSchema(v)])),
        ...d,
      }
  }
}

/** The JSON Schema (draft 2020-12) of the rules file: caje.schema.json. */
export function jsonSchema(): Json {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://github.com/caje/caje/caje.schema.json',
    title: 'caje rules file (CAJE_CONFIG)',
    ...toJsonSchema(FILE_SHAPE),
  }
}
