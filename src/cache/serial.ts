// Small ordering tools for the disk store's file operations.

const settled = (): void => {}

/**
 * Runs tasks one after another per key, in the order run() was called.
 * cacache appends index lines and renames content files without locks, so
 * two operations on one entry (or one content file) must never interleave:
 * that is what makes "the last commit wins" and "a removal never deletes a
 * file a newer write just put in place" hold.
 */
export class KeyedSerial {
  readonly #tails = new Map<string, Promise<void>>()

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key)
    const result = previous ? previous.then(task) : task()
    // The tail only marks "done"; the task's outcome (value or error) reaches
    // the caller through `result`.
    const tail = result.then(settled, settled)
    this.#tails.set(key, tail)
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    })
    return result
  }
}

/**
 * Many shared holders or one exclusive holder. Every disk mutation holds it
 * shared; clear() holds it exclusively, so wiping the directory never races a
 * commit that is moving a file into it. Shared sections must not nest (an
 * exclusive waiter in between would deadlock them).
 */
export class SharedExclusiveGate {
  #shared = 0
  #exclusive: Promise<void> | undefined
  #drained: (() => void) | undefined

  async shared<T>(task: () => Promise<T>): Promise<T> {
    while (this.#exclusive) await this.#exclusive
    this.#shared++
    try {
      return await task()
    } finally {
      this.#shared--
      if (this.#shared === 0) this.#drained?.()
    }
  }

  async exclusive<T>(task: () => Promise<T>): Promise<T> {
    while (this.#exclusive) await this.#exclusive
    let release = settled
    this.#exclusive = new Promise<void>((resolve) => (release = resolve))
    try {
      if (this.#shared > 0) await new Promise<void>((resolve) => (this.#drained = resolve))
      this.#drained = undefined
      return await task()
    } finally {
      this.#exclusive = undefined
      release()
    }
  }
}

/**
 * Background tasks run at most `concurrency` at a time, in the order queued.
 * A purge or eviction of 10,000 entries is 20,000 file removals: started all
 * at once they would queue in libuv's four threads behind every read and
 * commit, and build 20,000 promise chains on the event loop at once; queued
 * here, each costs an array slot until a worker takes it.
 */
export class WorkQueue {
  readonly #concurrency: number
  #tasks: Array<{ run: () => Promise<void>; done: () => void } | undefined> = []
  #head = 0
  #workers = 0
  #idleWaiters: (() => void)[] = []

  constructor(concurrency: number) {
    this.#concurrency = Math.max(1, Math.floor(concurrency))
  }

  /** Queue a task; resolves when it has run. A task that throws is the caller's to log: the queue goes on. */
  push(run: () => Promise<void>): Promise<void> {
    return new Promise<void>((done) => {
      this.#tasks.push({ run, done })
      if (this.#workers < this.#concurrency) {
        this.#workers++
        void this.#work()
      }
    })
  }

  get pending(): number {
    return this.#tasks.length - this.#head + this.#workers
  }

  /** Resolves once every task queued so far (and since) has run. */
  idle(): Promise<void> {
    if (this.#workers === 0) return Promise.resolve()
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve))
  }

  async #work(): Promise<void> {
    while (this.#head < this.#tasks.length) {
      const task = this.#tasks[this.#head]!
      this.#tasks[this.#head++] = undefined
      if (this.#head === this.#tasks.length) {
        this.#tasks = []
        this.#head = 0
      } else if (this.#head > 1024 && this.#head * 2 > this.#tasks.length) {
        this.#tasks = this.#tasks.slice(this.#head)
        this.#head = 0
      }
      try {
        await task.run()
      } catch {
        // Tasks log their own failures (see push); one failure must not stop the others.
      } finally {
        task.done()
      }
    }
    this.#workers--
    if (this.#workers === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve()
  }
}
