/**
 * The Redis keys and channel of one lock. The lock key is exactly the stored key (keyPrefix included), so a
 * service on node-redlock locking resource `R` and this backend locking `R` without keyPrefix meet on the same
 * key. The other names append a NUL and a word: validated lock keys never contain NUL, so no lock key can be
 * another lock's counter or line.
 *
 * On a Redis Cluster a script may only touch keys of one hash slot. The derived keys then start with a hash tag
 * `{t}` chosen so that t hashes to the lock key's own slot: each lock's four keys live together, whatever
 * braces the lock key itself contains. (Several locks taken together are taken key by key in sorted order by
 * the core, so they need no common slot.)
 */
export interface LockKeyNames {
  /** KEYS[] of every script: lock, fencing counter, line, deadlines. */
  readonly keys: readonly [string, string, string, string];
  /** Where releases are announced; waiters subscribe to it. */
  readonly channel: string;
}

const SLOTS = 16384;

export function lockKeyNames(key: string, cluster: boolean): LockKeyNames {
  const base = cluster ? `{${slotTag(hashSlot(key))}}${key}` : key;
  return {
    keys: [key, `${base}\u0000fence`, `${base}\u0000line`, `${base}\u0000deadlines`],
    channel: `${base}\u0000released`,
  };
}

/** Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag if it has a non-empty one, else of all of it. */
export function hashSlot(key: string): number {
  let bytes = Buffer.from(key, 'utf8');
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  return crc16(bytes) % SLOTS;
}

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

let tags: string[] | undefined;

/** A short brace-free string for every slot, found once by counting up (≈ 170 000 CRCs, a few ms). */
function slotTag(slot: number): string {
  if (!tags) {
    const found: string[] = new Array<string>(SLOTS);
    let missing = SLOTS;
    for (let i = 0; missing > 0; i++) {
      const candidate = i.toString(36);
      const s = crc16(Buffer.from(candidate)) % SLOTS;
      if (found[s] === undefined) {
        found[s] = candidate;
        missing--;
      }
    }
    tags = found;
  }
  return tags[slot]!;
}
