// Copies of the records caje freezes and keeps (stored metadata, its headers).
//
// V8 gives an object made by spread (`{ ...x }`) a hidden class of its own
// making, outside the shared tree of hidden classes that objects built one
// property at a time walk through; freezing such an object then gives it yet
// another hidden class, never shared with the next one. Every frozen
// metadata and headers object made that way carried its own hidden class
// and descriptor array: about 700 bytes more per stored entry held in
// memory (the decoded hot entries, the disk writer's queue), where a copy
// made by assignment shares one hidden class with every other.

/** `source`'s own enumerable fields, then `extra`'s, assigned one by one onto a new plain object. */
export function plainCopy<T extends object, E extends object = object>(source: T, extra?: E): T & E {
  const out: Record<string, unknown> = {}
  for (const name in source) {
    if (Object.hasOwn(source, name)) out[name] = source[name]
  }
  if (extra) {
    for (const name in extra) {
      if (Object.hasOwn(extra, name)) out[name] = extra[name]
    }
  }
  return out as T & E
}
