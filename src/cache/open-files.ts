// A small cache of open file descriptors for content files, so a hit on a
// hot body costs a fstat and a read, not an open and a close as well (for a
// small verified body all four are synchronous: see content-file.ts
// SYNC_READ_BYTES). Keeping a descriptor open is safe for integrity:
// the caller still fstat()s on every read, and a file that was deleted or
// replaced shows up as nlink 0 (then it is reopened by path), one changed in
// place as a new mtime/ctime (then it is hashed again).

import fs from 'node:fs'
import { promisify } from 'node:util'

const openFd = promisify(fs.open)
const closeFd = promisify(fs.close)

interface OpenFile {
  fd: Promise<number>
  /** The descriptor once the open has succeeded. */
  opened?: number
  users: number
  /** Set when the file must not be handed out again; closed once the last user releases it. */
  retired: boolean
}

export interface FileLease {
  readonly fd: number
  /** Give the descriptor back; `retire` closes it (the file was found deleted or bad). */
  release(retire?: boolean): void
}

export interface OpenFilesOptions {
  /** Descriptors kept open at most (those in use are never closed early). */
  max: number
  /** Where close failures go: they are not worth failing a read for, but not silent either. */
  onCloseError(error: unknown, path: string): void
}

export class OpenFiles {
  readonly #files = new Map<string, OpenFile>()
  readonly #opts: OpenFilesOptions

  constructor(opts: OpenFilesOptions) {
    this.#opts = opts
  }

  /** An open descriptor for `path`, shared with other readers. Rejects like fs.open (ENOENT...). */
  async acquire(path: string): Promise<FileLease> {
    let file = this.#files.get(path)
    if (file) {
      // Most recently used last, so trimming closes the coldest first.
      this.#files.delete(path)
      this.#files.set(path, file)
    } else {
      const opening: OpenFile = { fd: openFd(path, 'r'), users: 0, retired: false }
      opening.fd.then(
        (fd) => (opening.opened = fd),
        () => {},
      )
      file = opening
      this.#files.set(path, file)
      this.#trim()
    }
    file.users++
    const entry = file
    let fd: number
    try {
      fd = await entry.fd
    } catch (error) {
      entry.users--
      if (this.#files.get(path) === entry) this.#files.delete(path)
      throw error
    }
    let released = false
    return {
      fd,
      release: (retire = false) => {
        if (released) return
        released = true
        entry.users--
        if (retire) this.#retire(path, entry)
        else if (entry.retired && entry.users === 0) this.#close(path, entry)
      },
    }
  }

  /**
   * The descriptor of `path` if it is open already, for a synchronous read that
   * finishes before anything else runs (so it needs no lease: nothing can close
   * the descriptor in between). Marks it recently used.
   */
  peek(path: string): number | undefined {
    const file = this.#files.get(path)
    if (file?.opened === undefined || file.retired) return undefined
    this.#files.delete(path)
    this.#files.set(path, file)
    return file.opened
  }

  /**
   * The descriptor of `path`, opened synchronously when it is not open yet (and then kept like
   * one from acquire()), for a synchronous read that finishes before anything else runs.
   * Throws like fs.openSync (ENOENT...).
   */
  openNow(path: string): number {
    const fd = this.peek(path)
    if (fd !== undefined) return fd
    // A file still opening asynchronously, or retired, is left to its readers: this one opens its own.
    const opened = fs.openSync(path, 'r')
    const previous = this.#files.get(path)
    if (previous) this.#retire(path, previous)
    this.#files.set(path, { fd: Promise.resolve(opened), opened, users: 0, retired: false })
    this.#trim()
    return opened
  }

  /** Stops handing out the descriptor of `path` (the file was removed or replaced). */
  forget(path: string): void {
    const file = this.#files.get(path)
    if (file) this.#retire(path, file)
  }

  /** Closes everything not in use and retires the rest. */
  closeAll(): void {
    for (const [path, file] of this.#files) this.#retire(path, file)
  }

  #retire(path: string, file: OpenFile): void {
    if (this.#files.get(path) === file) this.#files.delete(path)
    file.retired = true
    if (file.users === 0) this.#close(path, file)
  }

  #trim(): void {
    if (this.#files.size <= this.#opts.max) return
    for (const [path, file] of this.#files) {
      if (this.#files.size <= this.#opts.max) break
      this.#retire(path, file)
    }
  }

  #close(path: string, file: OpenFile): void {
    if (file.users !== 0) return
    file.users = -1 // closed: never close twice
    if (file.opened !== undefined) {
      // Closing a descriptor of a file only read never waits for the disk: done at once, it
      // saves a thread-pool round trip per file (a populate's peer reads thousands of them).
      try {
        fs.closeSync(file.opened)
      } catch (error) {
        this.#opts.onCloseError(error, path)
      }
      return
    }
    file.fd.then(
      (fd) => closeFd(fd).catch((error: unknown) => this.#opts.onCloseError(error, path)),
      () => {}, // the open itself failed: that error went to the reader that asked for it
    )
  }
}
