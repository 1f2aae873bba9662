import { randomUUID } from 'node:crypto';

/**
 * Apache Curator's InterProcessMutex layout (Curator 5), kept exactly so that a Java service using Curator and
 * a Nest service using this backend exclude each other on the same lock path:
 * - each contender creates an EPHEMERAL_SEQUENTIAL child `_c_<lower-case uuid>-lock-<10-digit sequence>`
 *   ("protected" mode: the uuid lets a client that lost the reply to its create find its node again);
 * - children are ordered by the text after the LAST `lock-` — the sequence. Ordering by the whole name would
 *   let the random uuid decide and break exclusion;
 * - the first in that order holds the lock; every other contender watches only the one just before it.
 */
export const LOCK_NAME = 'lock-';
const PROTECTED_PREFIX = '_c_';

/** A new protected name prefix for one create: the server appends the sequence. */
export function protectedPrefix(): { readonly uuid: string; readonly prefix: string } {
  const uuid = randomUUID();
  return { uuid, prefix: `${PROTECTED_PREFIX}${uuid}-${LOCK_NAME}` };
}

/** Whether `name` is the node one create with this uuid made (how protected mode finds a lost create). */
export function isCreatedWith(name: string, uuid: string): boolean {
  return name.startsWith(`${PROTECTED_PREFIX}${uuid}-`);
}

/** Curator's sort key: the text after the last `lock-`. */
function sequenceOf(name: string): string {
  const at = name.lastIndexOf(LOCK_NAME);
  return at < 0 ? name : name.slice(at + LOCK_NAME.length);
}

/** The lock nodes among a parent's children, in line order: the holder first. */
export function contenders(children: readonly string[]): string[] {
  return children
    .filter((name) => name.includes(LOCK_NAME))
    .sort((a, b) => {
      const x = sequenceOf(a);
      const y = sequenceOf(b);
      return x < y ? -1 : x > y ? 1 : 0;
    });
}

/** Joins a parent path and one child name (already a single safe segment). */
export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}
