// What the tests of background threads read about this process's threads.

import fs from 'node:fs'

/** The nice value of every thread of this process, by thread id (Linux /proc/<pid>/task/<tid>/stat). */
export function threadNices(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      // Fields after the command name (in parentheses, which may hold spaces): nice is the 19th of the line, the 17th here.
      out.set(tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]))
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out
}
