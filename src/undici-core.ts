// undici's connection pool (Agent), its errors and its header parser, required from the files
// that define them rather than through the package's index.
//
// The index also loads undici's fetch, WebSocket, cookies, mocks, interceptors and cache stores
// (and those read the global Headers, Blob, ReadableStream... as they load, which loads Node's own
// copy of undici behind the globals before any /_caje/ route needs it). About 8 MB of memory in a
// bare process, their compiled code mostly, that the proxy and the populate never use: they
// dispatch through an Agent with handlers of their own. undici is pinned (package.json); a test checks
// that these are the index's own objects, so an upgrade that moves a file fails there.

import { createRequire } from 'node:module'
import type * as Undici from 'undici'

const require = createRequire(import.meta.url)

export const Agent = require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent
export const errors = require('undici/lib/core/errors.js') as typeof Undici.errors
export const util = require('undici/lib/core/util.js') as Pick<typeof Undici.util, 'parseHeaders'>
export type { Dispatcher } from 'undici'
