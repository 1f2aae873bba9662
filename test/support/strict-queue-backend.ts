import type {
  AcquireOutcome,
  AcquireRequest,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  WaitForRelease,
} from '../../lib';

/**
 * A queueing store with ZooKeeper's semantics and none of the memory backend's kindness: a place in line is a
 * claim that simply becomes the hold when it reaches the head — nothing lapses, whether or not its owner is
 * still asking. What the core leaves behind here stays held.
 */
export class StrictQueueBackend implements LockBackend {
  readonly kind = 'strict-queue';
  readonly capabilities: LockBackendCapabilities = {
    expiring: false,
    sessionBound: true,
    nativeWait: true,
    queued: true,
  };
  private readonly lines = new Map<string, string[]>();
  private readonly waiters = new Set<() => void>();
  private token = 0n;

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    const line = this.line(request.key);
    if (!line.includes(request.owner)) line.push(request.owner);
    if (line[0] === request.owner) return { acquired: true, fencingToken: ++this.token };
    if (request.keepPlace) return { acquired: false, queued: true };
    line.splice(line.indexOf(request.owner), 1);
    return { acquired: false };
  }

  async release(lease: LeaseRef): Promise<boolean> {
    const line = this.line(lease.key);
    const index = line.indexOf(lease.owner);
    if (index < 0) return false;
    line.splice(index, 1);
    if (index === 0) for (const wake of [...this.waiters]) wake();
    return index === 0;
  }

  async extend(lease: LeaseRef): Promise<boolean> {
    return this.holder(lease.key) === lease.owner;
  }

  waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.holder(wait.key) === undefined || this.holder(wait.key) === wait.owner) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, wait.timeoutMs).unref();
      wait.signal.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  async isLocked(key: string): Promise<boolean> {
    return this.holder(key) !== undefined;
  }

  /** Who holds `key`: the head of its line, whether or not it still wants it. */
  holder(key: string): string | undefined {
    return this.lines.get(key)?.[0];
  }

  async close(): Promise<void> {
    this.lines.clear();
  }

  private line(key: string): string[] {
    let line = this.lines.get(key);
    if (!line) this.lines.set(key, (line = []));
    return line;
  }
}
