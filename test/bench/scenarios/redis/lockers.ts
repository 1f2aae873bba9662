/**
 * One interface over every library measured side by side — ours (the backend alone, and LockService), the
 * three peers, and the raw floor — each used the way its README documents, with the same ttl and the same
 * 10 s budget for waiting on a busy key:
 * - redlock@4.2.0: `redlock.lock(resource, ttl)`, then `lock.unlock()`. Its default retryDelay 200 ms and
 *   retryJitter 100 ms (the code's defaults; the README's example shows jitter 200), retryCount 50 = 10 s / 200 ms.
 * - @sesamecare-oss/redlock 1.4.0: `redlock.acquire([resource], ttl)`, then `lock.release()`. Same defaults
 *   (retryDelay 200, retryJitter 100), retryCount 50.
 * - redis-semaphore 5.8.0: `new Mutex(client, key, { lockTimeout, acquireTimeout, retryInterval })` per
 *   acquisition (RedlockMutex over several nodes), `acquire()`, `release()`. Its defaults: acquireTimeout
 *   10 s, retryInterval 10 ms.
 * - raw floor: `SET key token NX PX ttl`, released by a Lua compare-and-delete (EVALSHA): the least any
 *   correct lock can send. It never waits; over several nodes it asks all of them and awaits all answers.
 * Every library gets its own clients, and none of them is shared between rows.
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type Redis from 'ioredis';
import { Redlock as SesameRedlock } from '@sesamecare-oss/redlock';
import { Mutex, RedlockMutex } from 'redis-semaphore';
import { LockService, type LockCallOptions } from '../../../../lib';
import { RedlockBackend } from '../../../../lib/backends/redis';

export const TTL_MS = 30_000;
export const WAIT_TIMEOUT_MS = 10_000;

/** Frees what acquire took. */
export type Release = () => Promise<unknown>;

export interface Locker {
  /** Takes `key`, waiting up to WAIT_TIMEOUT_MS while it is busy (the raw floor does not wait); rejects if not granted. */
  acquire(key: string): Promise<Release>;
  /** `work` under the lock on `key`: the library's scoped form where it is what users call, else acquire/release. */
  run(key: string, work: () => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

export interface LockerKind {
  /** Row label for `nodes` nodes. */
  label(nodes: number): string;
  /** One of the three peer libraries (the targets compare ours with the best of them). */
  readonly peer: boolean;
  /** A locker over these clients, one per node; the clients stay open (their owner closes them). */
  make(clients: readonly Redis[]): Promise<Locker>;
}

async function runWith(locker: Locker, key: string, work: () => Promise<void>): Promise<void> {
  const release = await locker.acquire(key);
  try {
    await work();
  } finally {
    await release();
  }
}

const ownerToken = (): string => randomBytes(16).toString('hex');

// ---------------------------------------------------------------------------------------------------------
// raw floor

const COMPARE_AND_DELETE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

class RawFloor implements Locker {
  private readonly quorum: number;

  constructor(
    private readonly clients: readonly Redis[],
    private readonly sha: string,
  ) {
    this.quorum = Math.floor(clients.length / 2) + 1;
  }

  async acquire(key: string): Promise<Release> {
    const token = ownerToken();
    if (this.clients.length === 1) {
      const client = this.clients[0]!;
      if ((await client.set(key, token, 'PX', TTL_MS, 'NX')) !== 'OK') throw new Error(`raw floor: ${key} is busy`);
      return () => client.evalsha(this.sha, 1, key, token);
    }
    const answers = await Promise.all(this.clients.map((c) => c.set(key, token, 'PX', TTL_MS, 'NX')));
    const release = (): Promise<unknown> => Promise.all(this.clients.map((c) => c.evalsha(this.sha, 1, key, token)));
    if (answers.filter((a) => a === 'OK').length >= this.quorum) return release;
    await release();
    throw new Error(`raw floor: ${key} is busy`);
  }

  run(key: string, work: () => Promise<void>): Promise<void> {
    return runWith(this, key, work);
  }

  async close(): Promise<void> {}
}

export const RAW: LockerKind = {
  label: (nodes) =>
    nodes === 1 ? 'raw floor: SET NX PX + Lua compare-and-delete' : `raw floor: SET NX PX + Lua CAD on ${nodes} nodes`,
  peer: false,
  async make(clients) {
    const shas = await Promise.all(clients.map((c) => c.script('LOAD', COMPARE_AND_DELETE) as Promise<string>));
    return new RawFloor(clients, shas[0]!);
  },
};

// ---------------------------------------------------------------------------------------------------------
// ours

/** Shared by every backend call of the rows (64 at once in the throughput row): no listener limit. */
const NEVER = new AbortController().signal;
setMaxListeners(0, NEVER);
const CALL = { signal: NEVER };
const SERVICE_OPTIONS: LockCallOptions = { ttl: TTL_MS, waitTimeout: WAIT_TIMEOUT_MS };

async function initBackend(clients: readonly Redis[]): Promise<RedlockBackend> {
  const backend = new RedlockBackend({ clients: [...clients] });
  await backend.init(AbortSignal.timeout(10_000));
  return backend;
}

/** The backend's own acquire and release, without the core: what the store costs us. Never waits. */
class BackendAlone implements Locker {
  constructor(private readonly backend: RedlockBackend) {}

  async acquire(key: string): Promise<Release> {
    const owner = ownerToken();
    const outcome = await this.backend.acquire({
      key,
      owner,
      ttl: TTL_MS,
      keepPlace: false,
      onLost: () => undefined,
      signal: NEVER,
    });
    if (!outcome.acquired) throw new Error(`RedlockBackend: ${key} is busy`);
    return () => this.backend.release({ key, owner }, CALL);
  }

  run(key: string, work: () => Promise<void>): Promise<void> {
    return runWith(this, key, work);
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}

/** What users call: LockService over the backend, as one app instance. */
class Service implements Locker {
  constructor(
    private readonly locks: LockService,
    private readonly backend: RedlockBackend,
  ) {}

  async acquire(key: string): Promise<Release> {
    const lock = await this.locks.acquire(key, SERVICE_OPTIONS);
    return () => lock.release();
  }

  run(key: string, work: () => Promise<void>): Promise<void> {
    return this.locks.using(key, work, SERVICE_OPTIONS);
  }

  async close(): Promise<void> {
    await this.locks.close();
    await this.backend.close();
  }
}

export const BACKEND: LockerKind = {
  label: () => 'ours: RedlockBackend alone',
  peer: false,
  make: async (clients) => new BackendAlone(await initBackend(clients)),
};

async function makeService(clients: readonly Redis[]): Promise<Locker> {
  const backend = await initBackend(clients);
  const locks = new LockService({ backends: { default: backend } });
  await locks.init();
  return new Service(locks, backend);
}

/** LockService, rows that call acquire() and release(). */
export const SERVICE: LockerKind = {
  label: () => 'ours: LockService acquire()+release()',
  peer: false,
  make: makeService,
};

/** LockService, rows that call using(key, fn) (run()). */
export const USING: LockerKind = {
  label: () => 'ours: LockService.using()',
  peer: false,
  make: makeService,
};

// ---------------------------------------------------------------------------------------------------------
// peers

/** The part of redlock@4's API used here (the package ships no types). */
interface NodeRedlockLock {
  unlock(): PromiseLike<unknown>;
}
interface NodeRedlock {
  lock(resource: string, ttl: number): PromiseLike<NodeRedlockLock>;
  on(event: 'clientError', listener: (error: unknown) => void): unknown;
}
type NodeRedlockClass = new (
  clients: readonly Redis[],
  options: { retryCount: number; retryDelay: number; retryJitter: number },
) => NodeRedlock;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const NodeRedlockImpl = require('redlock') as NodeRedlockClass;

/** Both Redlock ports: their default pause between attempts, and as many attempts as fit in the wait budget. */
const REDLOCK_RETRY = { retryDelay: 200, retryJitter: 100, retryCount: WAIT_TIMEOUT_MS / 200 };

export const NODE_REDLOCK: LockerKind = {
  label: () => 'redlock@4.2.0 lock()+unlock()',
  peer: true,
  async make(clients) {
    const redlock = new NodeRedlockImpl(clients, REDLOCK_RETRY);
    redlock.on('clientError', () => undefined);
    const locker: Locker = {
      async acquire(key) {
        const lock = await redlock.lock(key, TTL_MS);
        return async () => lock.unlock();
      },
      run: (key, work) => runWith(locker, key, work),
      close: async () => undefined,
    };
    return locker;
  },
};

export const SESAME_REDLOCK: LockerKind = {
  label: () => '@sesamecare-oss/redlock@1.4.0 acquire()+release()',
  peer: true,
  async make(clients) {
    const redlock = new SesameRedlock(clients, REDLOCK_RETRY);
    // Every refused vote is emitted as 'error' (ResourceLockedError); without a listener the emit would throw.
    redlock.on('error', () => undefined);
    const locker: Locker = {
      async acquire(key) {
        const lock = await redlock.acquire([key], TTL_MS);
        return () => lock.release();
      },
      run: (key, work) => runWith(locker, key, work),
      close: async () => undefined,
    };
    return locker;
  },
};

const SEMAPHORE_OPTIONS = { lockTimeout: TTL_MS, acquireTimeout: WAIT_TIMEOUT_MS, retryInterval: 10 };

export const REDIS_SEMAPHORE: LockerKind = {
  label: (nodes) => (nodes === 1 ? 'redis-semaphore@5.8.0 Mutex' : 'redis-semaphore@5.8.0 RedlockMutex'),
  peer: true,
  async make(clients) {
    const locker: Locker = {
      async acquire(key) {
        const mutex =
          clients.length === 1
            ? new Mutex(clients[0]!, key, SEMAPHORE_OPTIONS)
            : new RedlockMutex([...clients], key, SEMAPHORE_OPTIONS);
        await mutex.acquire();
        return () => mutex.release();
      },
      run: (key, work) => runWith(locker, key, work),
      close: async () => undefined,
    };
    return locker;
  },
};

export const PEERS: readonly LockerKind[] = [NODE_REDLOCK, SESAME_REDLOCK, REDIS_SEMAPHORE];
