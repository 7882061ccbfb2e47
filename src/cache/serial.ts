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
 * At most `limit` tasks at a time; the rest wait their turn in call order.
 * A purge or eviction of 10,000 entries is 20,000 file removals: started all
 * at once they queue in libuv's four threads behind every read and commit and
 * keep the event loop busy settling them; a few at a time, they drain in the
 * background while the node serves.
 */
export class Limiter {
  readonly #limit: number
  #running = 0
  readonly #waiting: (() => void)[] = []
  #head = 0

  constructor(limit: number) {
    this.#limit = Math.max(1, Math.floor(limit))
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#limit) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    else this.#running++
    try {
      return await task()
    } finally {
      const next = this.#waiting[this.#head]
      if (next) {
        // The slot passes straight to the next task: #running stays the same.
        this.#head++
        if (this.#head === this.#waiting.length) {
          this.#waiting.length = 0
          this.#head = 0
        } else if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
          this.#waiting.splice(0, this.#head)
          this.#head = 0
        }
        next()
      } else {
        this.#running--
      }
    }
  }
}
