import { createHash } from 'node:crypto';

/**
 * Characters a key keeps as they are in its znode name. Everything else — `/`, `.`, `%`, `~`, white space,
 * control characters, anything beyond ASCII — is percent-encoded byte by byte (UTF-8, upper-case hex), so the
 * name is one path segment, never `.` or `..`, and decodes back to the key.
 */
const KEPT = /^[A-Za-z0-9_:-]$/;

/** Longest encoded name kept whole. ZooKeeper has no per-name limit, but paths travel in every request. */
export const MAX_NODE_NAME_LENGTH = 240;

/** How much of a long key's encoding stays readable in front of its hash. */
const HASHED_PREFIX_LENGTH = 160;

/**
 * The znode name that stands for `key`: its percent-encoding, reversible, when that is at most
 * MAX_NODE_NAME_LENGTH characters; otherwise the first 160 encoded characters (cut before a `%XX`, never
 * inside one), `~`, and the hex SHA-256 of the key's UTF-8 bytes. `~` never appears in an encoding (it is
 * itself encoded as %7E), so a hashed name cannot equal a whole one, and two long keys share a name only if
 * they share the prefix and a SHA-256.
 */
export function encodeKey(key: string): string {
  let encoded = '';
  for (const char of key) {
    if (KEPT.test(char)) {
      encoded += char;
      continue;
    }
    for (const byte of Buffer.from(char, 'utf8')) encoded += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (encoded.length <= MAX_NODE_NAME_LENGTH) return encoded;
  let cut = HASHED_PREFIX_LENGTH;
  const lastPercent = encoded.lastIndexOf('%', cut - 1);
  if (lastPercent > cut - 3) cut = lastPercent;
  const hash = createHash('sha256').update(key, 'utf8').digest('hex');
  return `${encoded.slice(0, cut)}~${hash}`;
}

/** The key a whole (not hashed) name stands for; undefined for a hashed name, which cannot be reversed. */
export function decodeKey(name: string): string | undefined {
  if (name.includes('~')) return undefined;
  return decodeURIComponent(name);
}
