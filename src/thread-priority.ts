// Background threads run below the event loop.
//
// A node's main thread accepts connections, reads requests and answers health
// checks; its worker threads write the disk cache, apply manifest ops and
// checkpoint the WAL. On a node short of CPU (a purge's file removals, a
// populate's writes, other processes on the machine) they all wait for a core
// together, and a health check on a fresh connection waits for two turns of
// the loop (one accepts the connection, the next reads the request), each
// behind whatever background thread holds the core. Lowered ten nice steps, a
// background thread gets about a tenth of a contended core beside a thread at
// the process's priority (Linux CFS weights 1024 against 110) and all of an
// idle one: the loop runs first, the background work waits (its queues are
// bounded, so a lowered thread slows its producers, never a response).
//
// Lowered: the cache's disk writer and its body reader (a peer's populate
// waits for it, never a response). Not lowered: the manifest apply thread,
// which also checkpoints the WAL (the writer holds its turn on the file
// while the thread applies a batch, so a lowered thread that lost the CPU
// inside a transaction would keep the event loop's own queries waiting; and
// side by side a populate ran slower with it lowered) and the read worker
// (an admin waits for its answer).
//
// Linux keeps a nice value per thread: setpriority(PRIO_PROCESS, 0) in a
// thread changes that thread only, and lowering needs no privilege. Elsewhere
// it would lower the whole process, so it is left alone there.

/** Nice steps a background thread runs below the process. */
export const BACKGROUND_NICE_STEPS = 10

/**
 * Lower the calling thread `steps` nice values (at most to 19), on Linux.
 * It runs inside a worker's script (see LOWER_THIS_THREAD), so it refers to
 * nothing outside itself; Node's modules come from process.getBuiltinModule.
 * A failure is reported once on stderr and the thread carries on at the
 * process's priority.
 */
export function lowerThisThread(steps: number, thread: string): void {
  if (process.platform !== 'linux') return
  const os = process.getBuiltinModule('node:os')
  try {
    os.setPriority(Math.min(19, os.getPriority() + steps))
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err)
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'warn', msg: 'could not lower a background thread below the event loop; it runs at the process priority', thread, error })}\n`)
  }
}

/**
 * The first statement of a background worker's script (after esbuild's
 * `__name` helper): lowers that thread before its body runs. `thread` names
 * it in the warning.
 */
export function lowerThisThreadSource(thread: string): string {
  return `(${lowerThisThread.toString()})(${BACKGROUND_NICE_STEPS}, ${JSON.stringify(thread)});`
}
