import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { config as rxjsConfig, defer, NEVER, Observable } from 'rxjs';
import {
  type AcquireOutcome,
  type AcquireRequest,
  type ConnectionChange,
  DistributedLockModule,
  type LeaseRef,
  Locked,
  type LockBackend,
  type LockBackendCapabilities,
  type LockEvent,
  LockService,
  ManualClock,
  MemoryLockBackend,
  type StoreCall,
  type WaitForRelease,
} from '../../lib';
import { deferred, settle } from '../support/memory-fixture';

/**
 * Attacks on the core's per-call trim (934a93c..bbb17ab): ordering moved by up to a microtask around grants,
 * cancellation, shutdown and releases; events built only when observed.
 */

/**
 * A client of a store that outlives it, as a Redis or SQL server outlives the app's connection: closing the client
 * does not free what the server holds. `before` may hold a command on its way to the server (it is applied when
 * that settles); `after` may hold the answer on its way back (it was applied already). Records what was still on
 * its way when the client was closed.
 */
class StoreClient implements LockBackend {
  readonly kind = 'store-client';
  readonly capabilities: LockBackendCapabilities;
  closed = false;
  readonly inFlight: string[] = [];
  inFlightAtClose: string[] | undefined;
  before: (op: string, key: string) => Promise<void> | undefined = () => undefined;
  after: (op: string, key: string) => Promise<void> | undefined = () => undefined;

  constructor(
    readonly server: MemoryLockBackend,
    capabilities: Partial<LockBackendCapabilities> = {},
  ) {
    this.capabilities = { ...server.capabilities, ...capabilities };
  }

  acquire = (request: AcquireRequest): Promise<AcquireOutcome> =>
    this.call('acquire', request.key, () => this.server.acquire(request));
  release = (lease: LeaseRef, call: StoreCall): Promise<boolean> =>
    this.call('release', lease.key, () => this.server.release(lease, call));
  extend = (lease: LeaseRef, ttl: number, call: StoreCall): Promise<boolean> =>
    this.call('extend', lease.key, () => this.server.extend(lease, ttl, call));
  isLocked = (key: string, call: StoreCall): Promise<boolean> =>
    this.call('isLocked', key, () => this.server.isLocked(key, call));
  waitForRelease = (wait: WaitForRelease): Promise<void> =>
    this.call('waitForRelease', wait.key, () => this.server.waitForRelease(wait));

  private readonly connectionListeners = new Set<(change: ConnectionChange) => void>();

  watchConnection(listener: (change: ConnectionChange) => void): () => void {
    this.connectionListeners.add(listener);
    return () => this.connectionListeners.delete(listener);
  }

  /** The connection changed (a session lost, say): tells the core as a real client would. */
  connection(change: ConnectionChange): void {
    for (const listener of [...this.connectionListeners]) listener(change);
  }

  async close(): Promise<void> {
    this.inFlightAtClose ??= [...this.inFlight];
    this.closed = true;
  }

  private async call<T>(op: string, key: string, apply: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`client closed (${op} ${key})`);
    const entry = `${op} ${key}`;
    this.inFlight.push(entry);
    try {
      await this.before(op, key);
      const result = await apply();
      await this.after(op, key);
      return result;
    } finally {
      this.inFlight.splice(this.inFlight.indexOf(entry), 1);
    }
  }
}

function clientService(
  options: {
    shutdownTimeout?: number;
    operationTimeout?: number;
    capabilities?: Partial<LockBackendCapabilities>;
  } = {},
): { clock: ManualClock; server: MemoryLockBackend; client: () => StoreClient; locks: LockService } {
  const clock = new ManualClock();
  const server = new MemoryLockBackend({ clock });
  let made: StoreClient | undefined;
  const locks = new LockService({
    // A factory: the service owns the client and closes it at shutdown.
    backends: { default: () => (made = new StoreClient(server, options.capabilities)) },
    clock,
    shutdownTimeout: options.shutdownTimeout ?? 1_000,
    operationTimeout: options.operationTimeout ?? 100,
  });
  return { clock, server, client: () => made!, locks };
}

const ticks = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};

const types = (events: readonly LockEvent[]): string[] => events.map((e) => e.type);

describe('attack (core trim): events$ built only when observed', () => {
  it('an observer added while a lock is held sees it extended, released, and another one lost', async () => {
    const clock = new ManualClock();
    const locks = new LockService({ backends: { default: new MemoryLockBackend({ clock }) }, clock });
    const lock = await locks.acquire('k', { ttl: 1_000 });
    const expiring = await locks.acquire('e', { ttl: 1_000 });
    const seen: LockEvent[] = [];
    const subscription = locks.events$.subscribe((event) => seen.push(event));
    await lock.extend();
    await lock.release();
    await clock.advance(1_000);
    expect(types(seen)).toEqual(['extended', 'released', 'lost']);
    expect(seen.map((e) => e.keys)).toEqual([['k'], ['k'], ['e']]);
    subscription.unsubscribe();
    expect(expiring.isHeld).toBe(false);
  });

  it('an observer that unsubscribes mid-hold sees nothing after, and the lock still works for everyone', async () => {
    const clock = new ManualClock();
    const locks = new LockService({ backends: { default: new MemoryLockBackend({ clock }) }, clock });
    const seen: string[] = [];
    const subscription = locks.events$.subscribe((event) => seen.push(event.type));
    const lock = await locks.acquire('k');
    subscription.unsubscribe();
    await lock.extend();
    await lock.release();
    expect(seen).toEqual(['acquired']);
    expect(await locks.isLocked('k')).toBe(false);
  });

  it('a subscriber that throws breaks neither the lock nor what the other subscriber sees', async () => {
    const clock = new ManualClock();
    const locks = new LockService({ backends: { default: new MemoryLockBackend({ clock }) }, clock });
    const reported: unknown[] = [];
    const previous = rxjsConfig.onUnhandledError;
    rxjsConfig.onUnhandledError = (error) => reported.push(error);
    try {
      locks.events$.subscribe(() => {
        throw new Error('subscriber bug');
      });
      const seen: string[] = [];
      locks.events$.subscribe((event) => seen.push(event.type));
      const lock = await locks.acquire('k', { ttl: 1_000 });
      await lock.extend();
      await lock.release();
      await settle(clock);
      // rxjs reports a subscriber's throw from a real timer of its own: let it fire while onUnhandledError is ours.
      await new Promise((resolve) => setTimeout(resolve, 0));
      expect(seen).toEqual(['acquired', 'extended', 'released']);
      expect(await locks.isLocked('k')).toBe(false);
      expect(reported.length).toBeGreaterThan(0);
    } finally {
      rxjsConfig.onUnhandledError = previous;
    }
  });
});

describe('attack (core trim): cancel and shutdown during the synchronous newLease', () => {
  it("the caller's signal aborted by an 'acquired' observer: rejected, the grant given back, nothing held", async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const locks = new LockService({ backends: { default: memory }, clock });
    const controller = new AbortController();
    const seen: string[] = [];
    locks.events$.subscribe((event) => {
      seen.push(event.type);
      if (event.type === 'acquired') controller.abort(new Error('caller gave up'));
    });
    const outcome = await locks.acquire('k', { signal: controller.signal }).then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    await settle(clock);
    expect(outcome).toBe('caller gave up');
    expect(await memory.isLocked('k')).toBe(false);
    expect(locks.heldLocks()).toEqual([]);
    expect(seen).toEqual(['acquired', 'released']);
  });

  it("close() called by an 'acquired' observer: the grant is given back before the owned backend closes", async () => {
    const { locks, server, client, clock } = clientService();
    await locks.init();
    let closing: Promise<void> | undefined;
    locks.events$.subscribe((event) => {
      if (event.type === 'acquired') closing ??= locks.close();
    });
    const outcome = await locks.acquire('k').then(
      () => 'resolved',
      (error: { code?: string }) => error.code,
    );
    await clock.advance(2_000);
    await closing;
    expect(outcome).toBe('LOCK_BACKEND');
    expect(await server.isLocked('k', undefined as never)).toBe(false);
    expect(client().inFlightAtClose).toEqual([]);
  });

  it('close() at every microtask around a grant: never a key left held, never the backend closed under a call', async () => {
    const failures: string[] = [];
    for (let offset = 0; offset < 40; offset++) {
      const { locks, server, client, clock } = clientService();
      await locks.init();
      let ran = false;
      const work = locks
        .using('k', async (lock) => {
          ran = true;
          if (!lock.signal.aborted) await new Promise((resolve) => lock.signal.addEventListener('abort', resolve));
        })
        .then(
          () => 'resolved',
          (error: { code?: string }) => error.code,
        );
      await ticks(offset);
      const closing = locks.close();
      await clock.advance(2_000);
      await closing;
      const outcome = await work;
      const held = await server.isLocked('k', undefined as never);
      const underCall = client().inFlightAtClose ?? [];
      if (held || underCall.length > 0 || locks.heldLocks().length > 0) {
        failures.push(`offset ${offset}: held=${held} inFlightAtClose=${underCall.join(',')} ran=${ran} ${outcome}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it("the caller's signal aborted at every microtask around a grant: either a held lock or nothing in the store", async () => {
    const failures: string[] = [];
    for (let offset = 0; offset < 40; offset++) {
      const clock = new ManualClock();
      const memory = new MemoryLockBackend({ clock });
      const locks = new LockService({ backends: { default: memory }, clock });
      const controller = new AbortController();
      const taking = locks.acquire(['a', 'b'], { signal: controller.signal }).then(
        (lock) => lock,
        () => undefined,
      );
      await ticks(offset);
      controller.abort(new Error('gave up'));
      const lock = await taking;
      await settle(clock);
      const stored = [await memory.isLocked('a'), await memory.isLocked('b')];
      const expected = lock ? [true, true] : [false, false];
      if (stored.join() !== expected.join() || (lock && !lock.isHeld)) {
        failures.push(`offset ${offset}: lock=${lock ? 'yes' : 'no'} stored=${stored.join()}`);
      }
      await lock?.release();
    }
    expect(failures).toEqual([]);
  });
});

describe('attack (core trim): what shutdown waits for before closing owned backends', () => {
  it('a late grant given back after its acquisition ended is waited for before the backend closes', async () => {
    const { locks, server, client, clock } = clientService({ operationTimeout: 100 });
    await locks.init();
    const answer = deferred();
    const slowRelease = deferred();
    let firstAcquire = true;
    client().after = (op) => {
      if (op === 'acquire' && firstAcquire) {
        firstAcquire = false;
        return answer.promise; // applied in the store; the answer is slow
      }
      return undefined;
    };
    const outcome = locks.tryAcquire('k').then(
      () => 'resolved',
      (error: { code?: string }) => error.code,
    );
    await clock.advance(100); // the call times out; the acquisition ends without the lock
    expect(await outcome).toBe('LOCK_BACKEND');
    // The give-back at the end found nothing yet; now the grant's answer arrives late, and its give-back is slow.
    client().before = (op) => (op === 'release' ? slowRelease.promise : undefined);
    answer.resolve();
    await settle(clock);
    expect(client().inFlight).toEqual(['release k']);
    const closing = locks.close();
    await settle(clock);
    slowRelease.resolve();
    await closing;
    await settle(clock);
    expect(client().inFlightAtClose).toEqual([]);
    expect(await server.isLocked('k', undefined as never)).toBe(false);
  });

  it('an acquire started by an abort listener as close() begins is cancelled or waited for, not left in the store', async () => {
    const { locks, server, client, clock } = clientService({ operationTimeout: 1_000 });
    await locks.init();
    // The store takes 50 ms to apply an acquire of 'b'.
    client().before = (op, key) =>
      op === 'acquire' && key === 'b' ? new Promise<void>((resolve) => clock.setTimeout(resolve, 50)) : undefined;
    let late: Promise<unknown> | undefined;
    const work = locks.using('a', async (lock) => {
      lock.signal.addEventListener('abort', () => {
        late ??= locks.acquire('b').then(
          () => 'resolved',
          (error: { code?: string }) => error.code,
        );
      });
      await new Promise((resolve) => lock.signal.addEventListener('abort', resolve));
    });
    await settle(clock);
    const closing = locks.close();
    await clock.advance(2_000);
    await closing;
    await work;
    expect(await late).toBe('LOCK_BACKEND');
    expect(client().inFlightAtClose).toEqual([]);
    expect(await server.isLocked('b', undefined as never)).toBe(false);
  });

  it('a minHold release put off on a session-bound store happens before the backend closes', async () => {
    const { locks, server, client, clock } = clientService({ capabilities: { expiring: false, sessionBound: true } });
    await locks.init();
    await locks.using('k', () => 'done', { minHold: 10_000 });
    expect(await server.isLocked('k', undefined as never)).toBe(true);
    const closing = locks.close();
    await clock.advance(0);
    await closing;
    expect(client().inFlightAtClose).toEqual([]);
    expect(await server.isLocked('k', undefined as never)).toBe(false);
  });
});

describe('attack (core trim): releases', () => {
  it.each([[['a']], [['a', 'b']]])(
    'minHold with an extension on its way: %j run out at minHold, not a whole ttl later',
    async (keys) => {
      const clock = new ManualClock();
      const server = new MemoryLockBackend({ clock });
      const client = new StoreClient(server);
      const locks = new LockService({ backends: { default: client }, clock, operationTimeout: 1_000 });
      const lock = await locks.acquire(keys, { ttl: 60_000, minHold: 1_000 });
      const slow = deferred();
      client.before = (op) => (op === 'extend' ? slow.promise : undefined);
      // Answered after the release began: it rejects (released), but must not stretch the minHold.
      const extending = lock.extend().catch((error: { code?: string }) => error.code);
      await settle(clock);
      client.before = () => undefined;
      const releasing = lock.release();
      await settle(clock);
      slow.resolve();
      expect(await extending).toBe('LOCK_LOST');
      await releasing;
      await clock.advance(1_001);
      for (const key of keys) expect(await server.isLocked(key, undefined as never)).toBe(false);
    },
  );

  it('a multi-key minHold release with one key failing reports once, rejects, and the other key still runs out', async () => {
    const clock = new ManualClock();
    const server = new MemoryLockBackend({ clock });
    const client = new StoreClient(server);
    const locks = new LockService({ backends: { default: client }, clock });
    const seen: LockEvent[] = [];
    locks.events$.subscribe((event) => seen.push(event));
    const lock = await locks.acquire(['a', 'b'], { ttl: 60_000, minHold: 1_000 });
    client.before = (op, key) => (op === 'extend' && key === 'b' ? Promise.reject(new Error('down')) : undefined);
    await expect(lock.release()).rejects.toMatchObject({ code: 'LOCK_BACKEND' });
    expect(seen.filter((e) => e.type === 'failed')).toHaveLength(1);
    expect(seen.some((e) => e.type === 'released' || e.type === 'lost')).toBe(false);
    await clock.advance(1_001);
    expect(await server.isLocked('a', undefined as never)).toBe(false);
  });

  it('a one-key release on a hung store rejects after operationTimeout, and close() is not held longer', async () => {
    const clock = new ManualClock();
    const server = new MemoryLockBackend({ clock });
    const client = new StoreClient(server);
    const locks = new LockService({ backends: { default: client }, clock, operationTimeout: 100 });
    const lock = await locks.acquire('k');
    client.before = (op) => (op === 'release' ? new Promise<void>(() => undefined) : undefined);
    let rejected = false;
    const releasing = lock.release().catch(() => (rejected = true));
    await clock.advance(99);
    expect(rejected).toBe(false);
    await clock.advance(1);
    await releasing;
    expect(rejected).toBe(true);
    let closed = false;
    const closing = locks.close().then(() => (closed = true));
    await clock.advance(0);
    await closing;
    expect(closed).toBe(true);
  });

  it('loss reported by the store while releasing: no lost event, released once', async () => {
    const clock = new ManualClock();
    const server = new MemoryLockBackend({ clock });
    const client = new StoreClient(server);
    let report: ((reason: string) => void) | undefined;
    const acquire = client.acquire;
    client.acquire = (request) => ((report = request.onLost), acquire(request));
    const locks = new LockService({ backends: { default: client }, clock });
    const seen: string[] = [];
    locks.events$.subscribe((event) => seen.push(event.type));
    const lock = await locks.acquire('k');
    const slow = deferred();
    client.before = (op) => (op === 'release' ? slow.promise : undefined);
    const releasing = lock.release();
    await settle(clock);
    report!('session ended');
    slow.resolve();
    await releasing;
    expect(seen).toEqual(['acquired', 'released']);
  });
});

describe('attack (core trim): scoped work', () => {
  /**
   * A scope returns while reentrant work it started (and did not await) still runs under its lock, so its
   * release waits for that work; then the store reports `change`. Whether the inner work's signal aborted.
   */
  async function innerAbortedBy(change: ConnectionChange): Promise<boolean> {
    const clock = new ManualClock();
    const client = new StoreClient(new MemoryLockBackend({ clock }), { expiring: false, sessionBound: true });
    const locks = new LockService({ backends: { default: client }, clock });
    await locks.init();
    const innerStarted = deferred();
    let innerSignal: AbortSignal | undefined;
    let detached: Promise<unknown> | undefined;
    let outer: Promise<unknown> = locks.using('k', () => {
      // Reentrant work the scope does not await: the release waits for it, and the key is its until it ends.
      detached = locks
        .using('k', async (inner) => {
          innerSignal = inner.signal;
          innerStarted.resolve();
          await new Promise<void>((resolve) => {
            inner.signal.addEventListener('abort', () => resolve());
            clock.setTimeout(resolve, 10_000);
          });
        })
        .catch((error: unknown) => error);
    });
    outer = outer.catch((error: unknown) => error);
    await innerStarted.promise;
    await settle(clock); // the outer scope has returned: its release waits for the inner work
    client.connection(change);
    await settle(clock);
    const aborted = innerSignal!.aborted;
    await clock.advance(10_000);
    await detached;
    await outer;
    return aborted;
  }

  it('a lost connection while the release waits for reentrant work still running aborts that work', async () => {
    // The session ends while the inner work still runs under the lock: the store no longer holds the key for it.
    expect(await innerAbortedBy({ state: 'lost', reason: 'session expired' })).toBe(true);
  });

  it('a store suspended (unable to vouch) while the release waits for reentrant work still running aborts that work', async () => {
    // The store cannot be reached while the inner work still runs, and cannot say for how long it holds the key.
    expect(await innerAbortedBy({ state: 'suspended', reason: 'connection dropped' })).toBe(true);
  });

  it('using() with a fn that throws synchronously: rejects with it, releases, reports no loss', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const locks = new LockService({ backends: { default: memory }, clock });
    const seen: string[] = [];
    locks.events$.subscribe((event) => seen.push(event.type));
    const boom = new Error('sync throw');
    await expect(
      locks.using('k', () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await memory.isLocked('k')).toBe(false);
    expect(seen).toEqual(['acquired', 'released']);
  });

  it('a reentrant using() after the outer scope began releasing takes the key itself, never alongside', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const locks = new LockService({ backends: { default: memory }, clock });
    let holders = 0;
    let most = 0;
    const enter = (): void => void (most = Math.max(most, ++holders));
    let detached: Promise<unknown> | undefined;
    await locks.using('k', async () => {
      enter();
      // Work that outlives its scope: it asks again just as the outer scope lets go.
      detached = Promise.resolve().then(() =>
        locks.using(
          'k',
          async () => {
            enter();
            await ticks(3);
            holders--;
          },
          { waitTimeout: 1_000 },
        ),
      );
      holders--;
    });
    await clock.advance(1_000);
    await detached;
    expect(most).toBe(1);
    expect(await memory.isLocked('k')).toBe(false);
  });

  it('a @Locked Observable unsubscribed while waiting for a busy key: never runs, holds nothing afterwards', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    let started = 0;
    @Injectable()
    class Streams {
      @Locked('s', { waitTimeout: 5_000 })
      watch(): Observable<number> {
        return defer(() => {
          started++;
          return NEVER;
        });
      }
    }
    const app = await (
      await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: memory }, clock })],
        providers: [Streams],
      }).compile()
    ).init();
    const peer = new LockService({ backends: { default: memory }, clock });
    const busy = await peer.acquire('s', { ttl: 10_000 });
    for (let offset = 0; offset < 10; offset++) {
      const subscription = app.get(Streams).watch().subscribe();
      await ticks(offset);
      subscription.unsubscribe();
    }
    await busy.release();
    await clock.advance(100);
    expect(started).toBe(0);
    expect(await memory.isLocked('s')).toBe(false);
    // A subscriber that stays gets the lock and runs; unsubscribing releases it.
    const stays = app.get(Streams).watch().subscribe();
    await settle(clock);
    expect(started).toBe(1);
    expect(await memory.isLocked('s')).toBe(true);
    stays.unsubscribe();
    await settle(clock);
    expect(await memory.isLocked('s')).toBe(false);
    await app.close();
    await peer.close();
  });
});
