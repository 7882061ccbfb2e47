import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { bufferedLines, createLogger, logRequest } from './log.ts'
import { waitFor } from './test-support/servers.ts'

const run = promisify(execFile)
const here = path.dirname(fileURLToPath(import.meta.url))

describe('bufferedLines', () => {
  it('writes the lines of several turns of the event loop in one write, in order, when the flush comes', async () => {
    const writes: string[] = []
    const flushes: Array<() => void> = []
    const lines = bufferedLines({ write: (c) => writes.push(c) }, { write: () => {} }, (flush) => flushes.push(flush))
    lines.write('a', false)
    await new Promise((resolve) => setImmediate(resolve))
    lines.write('b', false)
    // One flush scheduled for both lines, and nothing written before it runs.
    expect(flushes).toHaveLength(1)
    expect(writes).toEqual([])
    flushes[0]!()
    expect(writes).toEqual(['a\nb\n'])
    lines.write('c', false)
    expect(flushes).toHaveLength(2)
    flushes[1]!()
    expect(writes).toEqual(['a\nb\n', 'c\n'])
  })

  it('writes at once when 64 KiB pile up, without waiting for the flush', () => {
    const writes: string[] = []
    const lines = bufferedLines({ write: (c) => writes.push(c) }, { write: () => {} }, () => {})
    const line = 'x'.repeat(1023)
    for (let i = 0; i < 63; i++) lines.write(line, false)
    expect(writes).toEqual([])
    lines.write(line, false)
    expect(writes).toEqual([`${line}\n`.repeat(64)])
  })

  it('flushes by itself, without being asked', async () => {
    const writes: string[] = []
    const lines = bufferedLines({ write: (c) => writes.push(c) }, { write: () => {} })
    lines.write('a', false)
    await new Promise<void>((resolve) => {
      const poll = () => (writes.length ? resolve() : setImmediate(poll))
      poll()
    })
    expect(writes).toEqual(['a\n'])
  })

  it('writes an error at once, after what was queued before it', () => {
    const out: string[] = []
    const lines = bufferedLines({ write: (c) => out.push(`out:${c}`) }, { write: (c) => out.push(`err:${c}`) })
    lines.write('info', false)
    lines.write('boom', true)
    expect(out).toEqual(['out:info\n', 'err:boom\n'])
  })

  it('loses no line when the process exits right after logging, even when the reader is slow', async () => {
    const script = `
      import { createLogger } from ${JSON.stringify(path.join(here, 'log.ts'))}
      const log = createLogger({ nodeId: 't' })
      for (let i = 0; i < 20000; i++) log({ msg: 'request', i })
      process.exit(0)
    `
    // A reader that starts late (a log collector busy elsewhere): nothing is read until the logger
    // is stuck writing to the full pipe (the kernel says so: its main thread waits in a pipe's or a
    // socket's send; Node's 'pipe' is a socket pair), or has exited. Lines that Node queued behind a
    // full pipe would be dropped by process.exit.
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    let gone = false
    void exited.then(() => (gone = true))
    // Paused: Node reads up to the stream's high-water mark and then leaves the pipe to fill.
    child.stdout.pause()
    const waitChannel = () => readFile(`/proc/${child.pid}/wchan`, 'utf8').catch(() => '')
    await waitFor(async () => gone || /pipe_write|sock_alloc_send|unix_stream_sendmsg/.test(await waitChannel()), 'the logger to block on the full pipe, or to exit', 20_000)
    const chunks: Buffer[] = []
    child.stdout.on('data', (c: Buffer) => chunks.push(c))
    const ended = new Promise<void>((resolve) => child.stdout.once('end', resolve))
    child.stdout.resume()
    expect(await exited).toBe(0)
    // A guard only: a logger that lost lines can leave the stream unended (fails with what came).
    let guard: NodeJS.Timeout | undefined
    await Promise.race([ended, new Promise((resolve) => (guard = setTimeout(resolve, 20_000)))])
    clearTimeout(guard)
    const stdout = Buffer.concat(chunks).toString()
    const got = stdout.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i)
    expect(got).toEqual(Array.from({ length: 20000 }, (_, i) => i))
  })
})

describe('stdout as a file', () => {
  it('gets every line, in order, when the process exits right after logging', async () => {
    const got = await linesOfScriptIntoStdoutFile<{ i: number; text: string }>(`
      import { createLogger } from ${JSON.stringify(path.join(here, 'log.ts'))}
      const log = createLogger({ nodeId: 't' })
      for (let i = 0; i < 20000; i++) log({ msg: 'request', i, text: 'é🙂' })
      process.exit(0)
    `)
    expect(got.map((l) => l.i)).toEqual(Array.from({ length: 20000 }, (_, i) => i))
    expect(got.every((l) => l.text === 'é🙂')).toBe(true)
  })
})

/** The JSON lines a module script (run by a Node child with tsx) wrote to its stdout, a file, as the shell redirects it. */
async function linesOfScriptIntoStdoutFile<T>(script: string): Promise<T[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'caje-log-'))
  try {
    const file = path.join(dir, 'out.log')
    const node = JSON.stringify(process.execPath)
    const quoted = `'${script.replaceAll("'", "'\\''")}'`
    await run('sh', ['-c', `${node} --import tsx --input-type=module -e ${quoted} > ${JSON.stringify(file)}`])
    return (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as T)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

describe('createLogger', () => {
  it('redacts fields that look like credentials', () => {
    const lines: string[] = []
    createLogger({ nodeId: 'n', write: (l) => lines.push(l) })({ msg: 'x', password: 'p', token: 't' })
    expect(JSON.parse(lines[0]!)).toMatchObject({ node: 'n', msg: 'x', password: '[redacted]', token: '[redacted]' })
  })
})

describe('log lines', () => {
  it('are the JSON of time, level, node and the entry, in that order, whatever the entry holds', () => {
    const lines: string[] = []
    const log = createLogger({ nodeId: 'n"1', write: (l) => lines.push(l) })
    log({ msg: 'request', status: 200, skipped: undefined })
    log({})
    log({ level: 'warn', msg: 'w' })
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(parsed.map((p) => Object.keys(p))).toEqual([
      ['time', 'level', 'node', 'msg', 'status'],
      ['time', 'level', 'node'],
      ['time', 'level', 'node', 'msg'],
    ])
    expect(parsed[0]).toMatchObject({ level: 'info', node: 'n"1', msg: 'request', status: 200 })
    expect(parsed[2]).toMatchObject({ level: 'warn', msg: 'w' })
    expect(new Date(parsed[0]!.time as string).getTime()).toBeGreaterThan(0)
  })
})

describe('log line text', () => {
  // Every line must be the very text JSON.stringify gives for the same fields, whatever a client put in them.
  const entries: Record<string, unknown>[] = [
    { msg: 'request', method: 'GET', url: '/a?b=c', host: 'example.com', status: 200, cache: 'caje; hit; ttl=59', ms: 0.3, bytes: 1024 },
    { msg: 'request', url: '/"quoted"\\back\u0000\u001f\u007f', host: 'h\n', originMs: 12.5, ms: -0, aborted: true },
    { msg: 'emoji 🙂 and lone \ud800 and \udc00 surrogates, é', n: NaN, inf: Infinity, neg: -1.5e-7, big: 1e21 },
    { msg: 'nested', detail: { a: [1, 'two', null, undefined], b: { c: '"' } }, list: ['x'], none: null, f: () => 1, off: false },
    { msg: 'secrets', password: 'p', apiToken: { t: 1 }, cookie: undefined, authorization: () => 'x', when: new Date(0) },
    { '"odd\nname': 'v', msg: 'keys' },
  ]
  const redacted = (e: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v !== undefined && /pass(word)?|secret|token|authorization|cookie|credential/i.test(k) ? '[redacted]' : v]))

  it('is what JSON.stringify writes for time, level, node and the entry', () => {
    const lines: string[] = []
    const log = createLogger({ nodeId: 'n"1', write: (l) => lines.push(l) })
    for (const e of entries) log(e)
    lines.forEach((line, i) => {
      const time = (JSON.parse(line) as { time: string }).time
      expect(line).toBe(JSON.stringify({ time, level: 'info', node: 'n"1', ...redacted(entries[i]!) }))
    })
  })

  it('is the same for an access-log line written from its values as for its entry', () => {
    // method, url, host, status, cache, originMs, ms, bytes, aborted
    const requests: Parameters<typeof logRequest> extends [unknown, ...infer R] ? R[] : never = [
      ['GET', '/a?b=c', 'example.com', 200, 'caje; hit; ttl=59', undefined, 0.3, 1024, false],
      ['GET', '/"quoted"\\back\u0000\u001f\u007f', 'h\n', 502, 'caje; fwd=miss; key="k\\"', 12.5, -0, 0, true],
      ['HEAD', '/é🙂 lone \ud800', '', 304, '', NaN, Infinity, -1.5e-7, false],
      // Lines after one another that differ in one field each: none may repeat the line before's.
      ['GET', '/a?b=c', 'example.com', 200, 'caje; hit; ttl=59', undefined, 0.3, 1024, false],
      ['GET', '/a?b=c', 'example.com', 200, 'caje; hit; ttl=59', undefined, 0.4, 1024, false],
      ['HEAD', '/a?b=c', 'example.com', 200, 'caje; hit; ttl=59', undefined, 0.4, 0, false],
      ['HEAD', '/a?b=d', 'example.com', 200, 'caje; hit; ttl=59', undefined, 0.4, 0, false],
      ['HEAD', '/a?b=d', 'example.org', 200, 'caje; hit; ttl=59', undefined, 0.4, 0, false],
      ['HEAD', '/a?b=d', 'example.org', 304, 'caje; hit; ttl=59', undefined, 0.4, 0, false],
      ['HEAD', '/a?b=d', 'example.org', 304, 'caje; hit; ttl=58', 1, 0.4, 0, true],
    ]
    const direct: string[] = []
    const fromEntries: string[] = []
    const log = createLogger({ nodeId: 'n"1', write: (l) => direct.push(l) })
    const plain = createLogger({ nodeId: 'n"1', write: (l) => fromEntries.push(l) })
    for (const r of requests) {
      logRequest(log, ...r)
      // A logger with nothing but its call signature is given the entry.
      logRequest((entry) => plain(entry), ...r)
    }
    expect(direct).toHaveLength(requests.length)
    direct.forEach((line, i) => {
      const time = (JSON.parse(line) as { time: string }).time
      expect(line).toBe(fromEntries[i]!.replace(/"time":"[^"]*"/, `"time":"${time}"`))
      const [method, url, host, status, cache, originMs, ms, bytes, aborted] = requests[i]!
      expect(line).toBe(JSON.stringify({ time, level: 'info', node: 'n"1', msg: 'request', method, url, host, status, cache, originMs, ms, bytes, aborted: aborted || undefined }))
    })
  })

  it('is the same when the entry sets a fixed field itself', () => {
    const lines: string[] = []
    const log = createLogger({ nodeId: 'n', write: (l) => lines.push(l) })
    for (const e of entries) log({ ...e, level: 'warn' })
    lines.forEach((line, i) => {
      const time = (JSON.parse(line) as { time: string }).time
      expect(line).toBe(JSON.stringify({ time, level: 'warn', node: 'n', ...redacted({ ...entries[i]!, level: 'warn' }) }))
    })
  })
})

describe('access-log lines encoded as bytes', () => {
  // method, url, host, status, cache, originMs, ms, bytes, aborted
  type RequestArgs = Parameters<typeof logRequest> extends [unknown, ...infer R] ? R : never
  const expected = (time: string, [method, url, host, status, cache, originMs, ms, bytes, aborted]: RequestArgs) =>
    JSON.stringify({ time, level: 'info', node: 'n"1', msg: 'request', method, url, host, status, cache, originMs, ms, bytes, aborted: aborted || undefined })
  const linesOf = (requests: RequestArgs[]) => {
    const lines: string[] = []
    const log = createLogger({ nodeId: 'n"1', write: (l) => lines.push(l) })
    for (const r of requests) logRequest(log, ...r)
    return lines
  }
  const timeOf = (line: string) => (JSON.parse(line) as { time: string }).time

  it('escape quotes, backslashes and every control character, and write other text as UTF-8, as JSON.stringify does', () => {
    const controls = Array.from({ length: 0x20 }, (_, c) => String.fromCharCode(c)).join('')
    const texts = [
      '"',
      '\\',
      '\\"',
      controls,
      '\u007f\u0080\u00ff',
      '/caf\u00e9/\u4e2d\u6587?q=\u{1f642}',
      '\ud83d\ude42\ud83d',
      '\ud800',
      '\udc00\ud800',
      '\ude42\ud83d x',
      '\ud83d\ue000\uffff',
      '/a\u2028b\u2029c',
      'plain',
    ]
    const requests: RequestArgs[] = texts.map((t, i) => ['GET', t, `h${t}`, 200 + i, `caje; ${t}`, undefined, 0.5, i, false])
    // The same text in the method field too, each one once with the others plain.
    requests.push(...texts.map((t): RequestArgs => [t, '/', 'h', 200, 'c', 1.5, 0.1, 0, true]))
    const lines = linesOf(requests)
    lines.forEach((line, i) => expect(line).toBe(expected(timeOf(line), requests[i]!)))
  })

  it('write numbers as String does: whole tenths digit by digit, anything else as it is', () => {
    const numbers = [0, -0, 0.1, 0.3, 0.7, 1, 9.9, 10, 99.5, 100.1, 123456.7, 99999999999999.9, 1e14, 1e15 + 0.5, 2 ** 53, 1e21, 1 / 3, 0.05, 1e-7, -0.1, -12.5, -1, NaN, Infinity, -Infinity]
    for (let k = 0; k < 2000; k++) numbers.push(Math.round(Math.random() * 10 ** (1 + (k % 15))) / 10)
    const requests = numbers.map((n): RequestArgs => ['GET', '/', 'h', n, 'c', n, n, n, false])
    const lines = linesOf(requests)
    lines.forEach((line, i) => expect(line).toBe(expected(timeOf(line), requests[i]!)))
  })

  it('are whole when one line is larger than the line buffer', () => {
    const url = `/${'\u00e9x\u{1f642}'.repeat(30_000)}`
    const requests: RequestArgs[] = [
      ['GET', '/small', 'h', 200, 'c', undefined, 0.2, 1, false],
      ['GET', url, 'h', 200, 'c', undefined, 0.2, 1, false],
      ['GET', url, 'h', 200, 'c', undefined, 0.3, 1, false],
      ['GET', '/small', 'h', 200, 'c', undefined, 0.2, 1, false],
    ]
    const lines = linesOf(requests)
    expect(lines[1]!.length).toBeGreaterThan(64 * 1024)
    lines.forEach((line, i) => expect(line).toBe(expected(timeOf(line), requests[i]!)))
  })

  it('reach a stdout file whole and in order, lines larger than the buffer among them', async () => {
    // Lines of every length around the buffer's: small ones filling it many times over, and some larger than all of it.
    const got = await linesOfScriptIntoStdoutFile<{ msg: string; url?: string; i?: number; bytes?: number }>(`
      import { createLogger, logRequest } from ${JSON.stringify(path.join(here, 'log.ts'))}
      const log = createLogger({ nodeId: 't' })
      for (let i = 0; i < 5000; i++) {
        const url = i % 1000 === 500 ? '/big/' + 'é\\\\"🙂'.repeat(20000 + i) : '/u/' + i + '/' + 'x'.repeat(i % 300)
        logRequest(log, 'GET', url, 'h', 200, 'caje; hit', undefined, i / 10, i, false)
        if (i % 777 === 0) log({ msg: 'other', i })
      }
      process.exit(0)
    `)
    const want: string[] = []
    for (let i = 0; i < 5000; i++) {
      want.push(i % 1000 === 500 ? `/big/${'é\\"🙂'.repeat(20000 + i)}` : `/u/${i}/${'x'.repeat(i % 300)}`)
      if (i % 777 === 0) want.push(`other ${i}`)
    }
    expect(got.map((l) => (l.msg === 'request' ? l.url : `other ${l.i}`))).toEqual(want)
    expect(got.filter((l) => l.msg === 'request').map((l) => l.bytes)).toEqual(Array.from({ length: 5000 }, (_, i) => i))
  })
})

describe('bufferedLines with a line larger than its buffer', () => {
  it('writes what was queued, then that line by itself', () => {
    const writes: string[] = []
    const flushes: Array<() => void> = []
    const lines = bufferedLines({ write: (c) => writes.push(c) }, { write: () => {} }, (flush) => flushes.push(flush))
    const big = '\u00e9'.repeat(40_000)
    lines.write('a', false)
    lines.write(big, false)
    lines.write('b', false)
    expect(writes).toEqual(['a\n', `${big}\n`])
    for (const flush of flushes) flush()
    expect(writes).toEqual(['a\n', `${big}\n`, 'b\n'])
  })
})

describe('an access-log line given the time its request finished', () => {
  it('is dated by the wall clock of that millisecond, with the same text otherwise', () => {
    const lines: string[] = []
    const log = createLogger({ nodeId: 'n', write: (l) => lines.push(l) })
    const before = Date.now()
    logRequest(log, 'GET', '/', 'h', 200, 'c', undefined, 0.2, 1, false, performance.now())
    const after = Date.now()
    const line = JSON.parse(lines[0]!) as { time: string }
    const time = new Date(line.time).getTime()
    // The wall clock is read at the first line of a millisecond of the monotonic clock: at most one millisecond earlier.
    expect(time).toBeGreaterThanOrEqual(before - 1)
    expect(time).toBeLessThanOrEqual(after)
    expect(lines[0]).toBe(JSON.stringify({ time: line.time, level: 'info', node: 'n', msg: 'request', method: 'GET', url: '/', host: 'h', status: 200, cache: 'c', ms: 0.2, bytes: 1 }))
  })
})
