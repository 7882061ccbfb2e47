import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { bufferedLines, createLogger } from './log.ts'

const run = promisify(execFile)
const here = path.dirname(fileURLToPath(import.meta.url))

describe('bufferedLines', () => {
  it('writes the lines of one turn of the event loop in one write, in order', async () => {
    const writes: string[] = []
    const lines = bufferedLines({ write: (c) => writes.push(c) }, { write: () => {} })
    lines.write('a', false)
    lines.write('b', false)
    expect(writes).toEqual([])
    await new Promise((resolve) => setImmediate(resolve))
    expect(writes).toEqual(['a\nb\n'])
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
    // A reader that starts late (a log collector busy elsewhere): the pipe fills long before it reads,
    // so lines that Node queued behind a full pipe would be dropped by process.exit.
    const node = JSON.stringify(process.execPath)
    const quoted = `'${script.replaceAll("'", "'\\''")}'`
    const { stdout } = await run('sh', ['-c', `${node} --import tsx --input-type=module -e ${quoted} | { sleep 0.5; cat; }`], { maxBuffer: 64 * 1024 * 1024 })
    const got = stdout.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i)
    expect(got).toEqual(Array.from({ length: 20000 }, (_, i) => i))
  })
})

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
