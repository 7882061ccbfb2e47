// Whether two objects share V8's hidden class: what decides how much memory a
// kept record costs beyond its fields (see src/plain-copy.ts).
import { setFlagsFromString } from 'node:v8'

setFlagsFromString('--allow-natives-syntax')
// Parsed after the flag is set, so the native call is allowed in this function only.
const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean

export function sameHiddenClass(a: object, b: object): boolean {
  return haveSameMap(a, b)
}
