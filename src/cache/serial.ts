// Two small ordering tools for the disk store's file operations.

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
