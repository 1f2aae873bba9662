import { contextStorage } from './context-storage';
import type { KeyPair } from './key';
import type { Lock } from './lock';
import type { LockLease } from './lock-lease';

interface ScopeStore {
  /** Leases held by this call chain, by store scope and stored key. */
  readonly held: ReadonlyMap<string, LockLease>;
  readonly current: Lock;
}

const storage = contextStorage<ScopeStore>();

/**
 * A lease is found again only through the same store scope: one LockService and one of its backends. The same
 * key in another app's service, or on another store, is another lock and must really be taken there.
 */
const heldId = (storeScope: string, storedKey: string): string => `${storeScope}\u0000${storedKey}`;

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

/**
 * The lease this call chain holds for a key in this store scope, if it may still be borrowed: held, not
 * being released, not lost, not told to stop by shutdown. Work that outlives its scope (a promise nobody
 * awaited) therefore takes the key itself instead of borrowing a lease on its way out.
 */
export function borrowableInScope(storeScope: string, key: KeyPair): LockLease | undefined {
  const lease = storage.getStore()?.held.get(heldId(storeScope, key.stored));
  return lease?.isBorrowable ? lease : undefined;
}

/** Runs `fn` with `lock` as the current lock and its keys added to the chain's held set. */
export function runInScope<T>(lock: Lock & { readonly leases: readonly LockLease[] }, fn: () => T): T {
  const parent = storage.getStore();
  const held = new Map(parent?.held);
  for (const lease of lock.leases) {
    for (const key of lease.keys) held.set(heldId(lease.storeScope, key.stored), lease);
  }
  return storage.run({ held, current: lock }, fn);
}
