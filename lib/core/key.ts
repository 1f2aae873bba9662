import { LockConfigurationError } from './errors';
import { messages } from './messages';

/** Longest key accepted, keyPrefix not counted, in UTF-16 code units (JavaScript string length). */
export const MAX_KEY_LENGTH = 1024;
/** Longest keyPrefix accepted; a backend must store keys of MAX_KEY_LENGTH + MAX_KEY_PREFIX_LENGTH. */
export const MAX_KEY_PREFIX_LENGTH = 128;

/** With the u flag a valid surrogate pair is one code point, so only a lone half matches. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Throws unless `key` is a usable lock key; returns it as stored (prefixed). */
export function toStoredKey(key: unknown, prefix: string): string {
  if (typeof key !== 'string') throw new LockConfigurationError('key', messages.key.notString(key));
  if (key.length === 0) throw new LockConfigurationError('key', messages.key.empty());
  if (key.length > MAX_KEY_LENGTH) {
    throw new LockConfigurationError('key', messages.key.tooLong(key.length, MAX_KEY_LENGTH));
  }
  if (key.includes('\u0000')) throw new LockConfigurationError('key', messages.key.nul());
  if (LONE_SURROGATE.test(key)) throw new LockConfigurationError('key', messages.key.illFormed());
  return prefix + key;
}

export interface KeyPair {
  /** As the caller wrote it. */
  readonly key: string;
  /** As the backend stores it: keyPrefix + key. */
  readonly stored: string;
}

/**
 * Validates one key or a list, drops duplicates and sorts by stored key, so that every caller takes a set of
 * keys in the same order and two callers asking for [a, b] and [b, a] cannot deadlock each other.
 */
export function normaliseKeys(keys: string | readonly string[], prefix: string): KeyPair[] {
  if (typeof keys === 'string') return [{ key: keys, stored: toStoredKey(keys, prefix) }];
  if (!Array.isArray(keys)) throw new LockConfigurationError('key', messages.key.notString(keys));
  if (keys.length === 0) throw new LockConfigurationError('key', messages.key.noKeys());
  const byStored = new Map<string, KeyPair>();
  for (const key of keys as readonly unknown[]) {
    const stored = toStoredKey(key, prefix);
    byStored.set(stored, { key: key as string, stored });
  }
  return [...byStored.values()].sort((a, b) => (a.stored < b.stored ? -1 : a.stored > b.stored ? 1 : 0));
}

/** Checks the keyPrefix option at bootstrap. */
export function validateKeyPrefix(prefix: unknown): string {
  if (prefix === undefined) return '';
  if (
    typeof prefix !== 'string' ||
    prefix.length > MAX_KEY_PREFIX_LENGTH ||
    prefix.includes('\u0000') ||
    LONE_SURROGATE.test(prefix)
  ) {
    throw new LockConfigurationError('keyPrefix', messages.module.keyPrefix(prefix, MAX_KEY_PREFIX_LENGTH));
  }
  return prefix;
}
