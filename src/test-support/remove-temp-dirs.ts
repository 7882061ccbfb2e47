// vitest setup file: registered before a test file's own hooks, this afterAll
// runs after theirs (hooks run as a stack), when the file's nodes are closed.

import { afterAll } from 'vitest'
import { removeTempDirs } from './temp-dirs.ts'

afterAll(removeTempDirs)
