import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The async contexts this copy of the library keeps (the locks a call chain holds, a handler's request path):
 * enabled while some LockService is open, disabled when the last one closes. `run()` enables them again.
 *
 * Why: on Node 20 and 22 every enabled AsyncLocalStorage adds work to every promise the process makes, and Node
 * keeps an enabled storage alive for good. A test runner that loads the library afresh for each test file in one
 * process (Jest does) would pile up two per file until everything crawls: measured here, 60 enabled storages
 * made a bare promise 100× slower, and a 65-file run slowed its late suites five-fold.
 */
const storages: AsyncLocalStorage<unknown>[] = [];
let openServices = 0;

export function contextStorage<T>(): AsyncLocalStorage<T> {
  const storage = new AsyncLocalStorage<T>();
  storages.push(storage as AsyncLocalStorage<unknown>);
  return storage;
}

export function serviceOpened(): void {
  openServices += 1;
}

export function serviceClosed(): void {
  openServices -= 1;
  if (openServices === 0) for (const storage of storages) storage.disable();
}

/** How many LockServices of this copy of the library are open (constructed and not yet closed). */
export function openServiceCount(): number {
  return openServices;
}
