import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { describeDisk, ext4HasJournal, mountOf, probeFileCreation } from './disk.ts'

const MOUNTS = [
  '/dev/vda / ext4 rw,relatime 0 0',
  'tmpfs /dev/shm tmpfs rw 0 0',
  '/dev/vdb /var/lib/my\\040cache xfs rw 0 0',
  'proc /proc proc rw 0 0',
].join('\n')

describe('mountOf', () => {
  it('picks the longest mount point that holds the directory', () => {
    expect(mountOf('/tmp/caje-bench-1/cache', MOUNTS)).toEqual({ mountPoint: '/', source: '/dev/vda', fsType: 'ext4' })
    expect(mountOf('/dev/shm/x', MOUNTS)).toEqual({ mountPoint: '/dev/shm', source: 'tmpfs', fsType: 'tmpfs' })
  })

  it('does not take a mount point that is only a string prefix of another directory', () => {
    expect(mountOf('/dev/shmem/x', MOUNTS)?.mountPoint).toBe('/')
  })

  it('reads escaped spaces in mount points', () => {
    expect(mountOf('/var/lib/my cache/objects', MOUNTS)).toEqual({ mountPoint: '/var/lib/my cache', source: '/dev/vdb', fsType: 'xfs' })
  })
})

describe('ext4HasJournal', () => {
  it('reads the journal task the kernel names, and "<none>" as no journal', () => {
    expect(ext4HasJournal('<none>\n')).toBe(false)
    expect(ext4HasJournal('jbd2/vda-8 (pid 123)\n')).toBe(true)
    expect(ext4HasJournal(undefined)).toBeUndefined()
  })
})

describe('probeFileCreation', () => {
  it('creates the files it times, in a new directory of its own per call, and leaves them for the caller', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'caje-disk-probe-'))
    try {
      expect(probeFileCreation(dir, 32)).toBeGreaterThan(0)
      // A second probe in the same place times new files of its own.
      expect(probeFileCreation(dir, 8)).toBeGreaterThan(0)
      const made = readdirSync(dir).map((d) => readdirSync(path.join(dir, d)).length)
      expect(made.sort((a, b) => a - b)).toEqual([8, 32])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('says what the probe measured in the report line', () => {
    expect(describeDisk(os.tmpdir(), 41.6)).toMatch(/creating a file there took 42 µs at the start of this run$/)
    expect(describeDisk(os.tmpdir())).not.toMatch(/took \d+ µs/)
  })
})
