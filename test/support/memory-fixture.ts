import {
  type LockBackend,
  type LockBackendCapabilities,
  type LockEvent,
  LockService,
  type LockServiceConfig,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';

/**
 * A memory backend whose behaviour a test can bend: another capability set, a store call that fails or
 * never answers, a record of every call. It delegates to a real MemoryLockBackend for everything else.
 */
export class BendableBackend implements LockBackend {
  readonly kind = 'bendable';
  capabilities: LockBackendCapabilities;
  readonly calls: string[] = [];
  /** Replace to make a store call fail or hang; return undefined to delegate. */
  interfere: (operation: string) => Promise<never> | undefined = () => undefined;

  constructor(
    readonly inner: MemoryLockBackend,
    capabilities: Partial<LockBackendCapabilities> = {},
  ) {
    this.capabilities = { ...inner.capabilities, ...capabilities };
  }

  acquire: LockBackend['acquire'] = (request) => this.run('acquire', () => this.inner.acquire(request));
  release: LockBackend['release'] = (lease, call) => this.run('release', () => this.inner.release(lease, call));
  extend: LockBackend['extend'] = (lease, ttl, call) => this.run('extend', () => this.inner.extend(lease, ttl, call));
  isLocked: LockBackend['isLocked'] = (key, call) => this.run('isLocked', () => this.inner.isLocked(key, call));
  close: LockBackend['close'] = () => this.run('close', () => this.inner.close());
  waitForRelease: LockBackend['waitForRelease'] = (wait) =>
    this.run('waitForRelease', () => this.inner.waitForRelease(wait));

  private run<T>(operation: string, call: () => Promise<T>): Promise<T> {
    this.calls.push(operation);
    return this.interfere(operation) ?? call();
  }
}

export interface Fixture {
  readonly clock: ManualClock;
  readonly memory: MemoryLockBackend;
  readonly locks: LockService;
  readonly events: LockEvent[];
  /** Another app instance on the same store. */
  peer(): LockService;
}

export function memoryFixture(
  config: Partial<LockServiceConfig> = {},
  backend?: (memory: MemoryLockBackend) => LockBackend,
): Fixture {
  const clock = new ManualClock();
  const memory = new MemoryLockBackend({ clock });
  const store = backend ? backend(memory) : memory;
  const make = (): LockService => new LockService({ backends: { default: store }, clock, ...config });
  const locks = make();
  const events: LockEvent[] = [];
  locks.events$.subscribe((event) => events.push(event));
  return { clock, memory, locks, events, peer: make };
}

/** Lets pending promise chains run without moving the clock. */
export const settle = (clock: ManualClock): Promise<void> => clock.advance(0);

/** A promise the test resolves by hand, for work that must stay in progress until the test says so. */
export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
