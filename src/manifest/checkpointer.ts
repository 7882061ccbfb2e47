// WAL checkpoints off the event loop: what they are for, and the numbers the
// writing handle and the thread that runs them share.
//
// In WAL mode every commit appends its pages to the -wal file, and SQLite
// copies them back into the database file (a checkpoint) once the WAL holds
// wal_autocheckpoint pages: by default inside the COMMIT that crossed the
// line, on whatever thread committed. better-sqlite3 is synchronous, so on
// the primary that was the event loop: a batch of 1,000 stored ops writes
// about 2,500 pages, and every commit also copied them back and synced the
// file, tens of ms (59 ms measured at 100,000 entries) during which no
// request, health probe or new connection was served.
//
// The manifest writer's apply thread (apply-thread.ts checkpointIntervalMs),
// which already holds a connection of its own to the file, runs PASSIVE
// checkpoints on a timer between the batches it applies. PASSIVE never waits
// for readers or writers (the writer keeps appending to the WAL meanwhile),
// so the event loop's transactions never wait for it. The writing handle
// (database.ts checkpointInBackground) keeps a much higher wal_autocheckpoint
// as a backstop, so the WAL stays bounded if the thread ever falls behind or
// dies. (A thread of its own for the checkpoints cost a node 7 MB at rest:
// an isolate, its stacks, Node's bootstrap and another connection.)

/** Pages the writing connection lets the WAL reach before it checkpoints itself (backstop). */
export const BACKSTOP_WAL_PAGES = 16_384

/** Pause between checkpoints on the apply thread: at a saturated primary the WAL stays a few tens of MB. */
export const CHECKPOINT_INTERVAL_MS = 200

export interface CheckpointStats {
  /** Checkpoints that copied pages back into the database file. */
  runs: number
  /** WAL frames those checkpoints copied back, summed. */
  frames: number
  lastError: string | undefined
}
