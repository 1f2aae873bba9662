import { readdirSync, readlinkSync } from 'node:fs';

/** How many descriptors this process has open on `path` (Linux: /proc/self/fd). */
export function descriptorsOn(path: string): number {
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) count++;
    } catch {
      // the descriptor readdir itself used, closed meanwhile
    }
  }
  return count;
}
