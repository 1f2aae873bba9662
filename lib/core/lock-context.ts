import { AsyncLocalStorage } from 'node:async_hooks';
import type { KeyPair } from './key';
import type { Lock } from './lock';
import type { LockLease } from './lock-lease';

interface ScopeStore {
  /** Leases held by this call chain, by backend name and stored key. */
  readonly held: ReadonlyMap<string, LockLease>;
  readonly current: Lock;
}

const storage = new AsyncLocalStorage<ScopeStore>();

const heldId = (backend: string, storedKey: string): string => `${backend}\u0000${storedKey}`;

/**
 * The lock the current async call chain runs under, for code inside a @Locked method or a using() callback
 * that wants the fencing token or the loss signal without passing the lock through every signature.
 */
export const LockContext = {
  /** The innermost lock of this call chain, or undefined outside any locked scope. */
  current(): Lock | undefined {
    return storage.getStore()?.current;
  },
};

/** The lease this call chain already holds for a key, if any: what reentrancy reuses. */
export function heldInScope(backend: string, key: KeyPair): LockLease | undefined {
  return storage.getStore()?.held.get(heldId(backend, key.stored));
}

/** Runs `fn` with `lock` as the current lock and its keys added to the chain's held set. */
export function runInScope<T>(lock: Lock & { readonly leases: readonly LockLease[] }, fn: () => T): T {
  const parent = storage.getStore();
  const held = new Map(parent?.held);
  for (const lease of lock.leases) {
    for (const key of lease.keys) held.set(heldId(lease.backendName, key.stored), lease);
  }
  return storage.run({ held, current: lock }, fn);
}
