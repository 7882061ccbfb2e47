// What the benchmark's cache directories sit on. caje and nginx keep a file per
// cached object, so the file system decides part of what a miss costs: on ext4
// without a journal, the inode allocator skips every inode freed in the last
// 60 s (300 s while its table block is dirty) when it creates a file or a
// directory (fs/ext4/ialloc.c, recently_deleted()). Right after a mass deletion
// (a test suite, an `rm -rf` of an old cache) each new object then costs
// several times its usual CPU, so the report says which case it ran in.

import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs'
import path from 'node:path'

export interface MountInfo {
  mountPoint: string
  source: string
  fsType: string
}

/** The mount that holds `dir`: the longest mount point that is a prefix of it, from /proc/mounts text. */
export function mountOf(dir: string, mountsText: string): MountInfo | undefined {
  let best: MountInfo | undefined
  for (const line of mountsText.split('\n')) {
    const [source, rawMountPoint, fsType] = line.split(' ')
    if (!source || !rawMountPoint || !fsType) continue
    // /proc/mounts escapes spaces and the like as octal (\040).
    const mountPoint = rawMountPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    const inside = mountPoint === '/' || dir === mountPoint || dir.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`)
    if (inside && (!best || mountPoint.length >= best.mountPoint.length)) best = { mountPoint, source, fsType }
  }
  return best
}

/**
 * Whether an ext4 file system has a journal, from /sys/fs/ext4/<device>/journal_task
 * ("<none>" without one); undefined when the kernel does not say.
 */
export function ext4HasJournal(journalTaskText: string | undefined): boolean | undefined {
  if (journalTaskText === undefined) return undefined
  return journalTaskText.trim() !== '<none>' && journalTaskText.trim() !== ''
}

const readOrUndefined = (file: string): string | undefined => {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

/**
 * What creating a file costs in `dir` now: `count` empty files made in a new directory
 * there (one per call), the wall time per file in µs. A cold cache object is four new inodes in
 * cacache's layout (two directories, the body, the index bucket), so this is what the
 * disk adds to a stored miss, and how far the run's directory is from a mass deletion.
 * The files are left for the caller's cleanup: removing them here would make the next
 * files created nearby slow in their turn.
 */
export function probeFileCreation(dir: string, count = 256): number {
  const probeDir = mkdtempSync(path.join(dir, 'file-creation-probe-'))
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) closeSync(openSync(path.join(probeDir, String(i)), 'wx'))
  return Number(process.hrtime.bigint() - started) / 1000 / count
}

/** One line for the report's machine section, e.g. "ext4 on /dev/vda, no journal: ...". */
export function describeDisk(dir: string, createMicros?: number): string {
  const mounts = readOrUndefined('/proc/mounts')
  const mount = mounts ? mountOf(path.resolve(dir), mounts) : undefined
  if (!mount) return 'file system not known (no /proc/mounts)'
  const where = `${mount.fsType} on ${mount.source} (mounted at ${mount.mountPoint})`
  const probe = createMicros === undefined ? '' : `; creating a file there took ${createMicros.toFixed(0)} µs at the start of this run`
  if (mount.fsType !== 'ext4') return `${where}${probe}`
  const journal = ext4HasJournal(readOrUndefined(`/sys/fs/ext4/${path.basename(mount.source)}/journal_task`))
  if (journal === false) {
    return `${where}, without a journal: creating a file soon after many deletions is slow there (ext4 skips inodes freed in the last 60–300 s), which weighs on the caches that keep a file per object (caje, nginx) when the run follows a mass deletion${probe}`
  }
  return `${journal ? `${where}, with a journal` : where}${probe}`
}
