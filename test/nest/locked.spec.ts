import { Injectable, type INestApplicationContext } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { firstValueFrom, Observable, Subject, toArray } from 'rxjs';
import {
  DEFAULT_SHUTDOWN_TIMEOUT,
  DistributedLockModule,
  Locked,
  LockConfigurationError,
  LockContext,
  LockLostError,
  LockService,
  LockUnavailableError,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { deferred, settle } from '../support/memory-fixture';

interface Order {
  readonly id: string;
}

@Injectable()
class OrderService {
  readonly gate = { current: deferred() };
  seen: Array<{ keys: readonly string[]; token: bigint }> = [];

  @Locked('order:{0}')
  async pay(orderId: string): Promise<string> {
    const lock = LockContext.current()!;
    this.seen.push({ keys: lock.keys, token: lock.fencingToken });
    await this.gate.current.promise;
    return `paid ${orderId}`;
  }

  @Locked('user:{0.id}:{1}')
  async ship(_order: Order, _warehouse: number): Promise<readonly string[]> {
    return LockContext.current()!.keys;
  }

  @Locked((order: Order) => [`order:${order.id}`, 'ledger'])
  async settle(_order: Order): Promise<readonly string[]> {
    return LockContext.current()!.keys;
  }

  @Locked(['stock:{0}', (sku: string) => `sku:${sku.toUpperCase()}`])
  async reserve(_sku: string): Promise<readonly string[]> {
    return LockContext.current()!.keys;
  }

  @Locked('sync:{0}')
  double(value: number): number {
    return value * 2;
  }

  @Locked('order:{0}')
  async outer(orderId: string): Promise<string> {
    return this.pay(orderId);
  }

  @Locked('report', { onLocked: 'skip' })
  async report(): Promise<string> {
    await this.gate.current.promise;
    return 'done';
  }

  @Locked('quote:{0}', { onLocked: ({ args, error }) => `busy ${String(args[0])} ${error.key}` })
  async quote(id: string): Promise<string> {
    await this.gate.current.promise;
    return `quote ${id}`;
  }

  @Locked('long', { ttl: 1_000, autoExtend: false })
  async longWork(): Promise<boolean> {
    const signal = LockContext.current()!.signal;
    await this.gate.current.promise;
    return signal.aborted;
  }

  @Locked('stream:{0}')
  stream(id: string, source: Observable<number>): Observable<number> {
    void id;
    return source;
  }

  @Locked('short-stream', { ttl: 1_000, autoExtend: false })
  shortStream(source: Observable<number>): Observable<number> {
    return source;
  }

  @Locked('stream:{0}')
  brokenStream(id: string): Observable<number> {
    throw new Error(`no stream for ${id}`);
  }

  @Locked('stream:{0}')
  undeclared(id: string, source: Observable<number>) {
    void id;
    return source;
  }
}

describe('@Locked on a provider', () => {
  let app: INestApplicationContext;
  let orders: OrderService;
  let locks: LockService;
  let clock: ManualClock;
  let memory: MemoryLockBackend;

  beforeEach(async () => {
    clock = new ManualClock();
    memory = new MemoryLockBackend({ clock });
    const moduleRef = await Test.createTestingModule({
      imports: [DistributedLockModule.forRoot({ backends: { default: memory }, clock, keyPrefix: 'app:' })],
      providers: [OrderService],
    }).compile();
    app = await moduleRef.init();
    orders = app.get(OrderService);
    locks = app.get(LockService);
  });
  afterEach(async () => {
    orders.gate.current.resolve();
    // Locks a test left held are kept for the shutdown grace period: let it pass on the manual clock.
    const closing = app.close();
    await clock.advance(DEFAULT_SHUTDOWN_TIMEOUT);
    await closing;
  });

  it('holds the key while the method runs and releases it after', async () => {
    const paying = orders.pay('7');
    await settle(clock);
    expect(await memory.isLocked('app:order:7')).toBe(true);
    expect(await locks.isLocked('order:7')).toBe(true);
    orders.gate.current.resolve();
    expect(await paying).toBe('paid 7');
    expect(await memory.isLocked('app:order:7')).toBe(false);
    expect(orders.seen[0]!.keys).toEqual(['order:7']);
  });

  it('refuses a second caller on the same key and lets other keys through', async () => {
    const first = orders.pay('7');
    await settle(clock);
    await expect(orders.pay('7')).rejects.toBeInstanceOf(LockUnavailableError);
    orders.gate.current.resolve();
    await expect(orders.pay('8')).resolves.toBe('paid 8');
    await first;
  });

  it('builds keys from argument paths, key functions and arrays', async () => {
    expect(await orders.ship({ id: 'u1' }, 3)).toEqual(['user:u1:3']);
    expect(await orders.settle({ id: '9' })).toEqual(['ledger', 'order:9']);
    expect(await orders.reserve('ab')).toEqual(['sku:AB', 'stock:ab']);
  });

  it('refuses at call time a placeholder whose value is missing, taking nothing', async () => {
    const error = await orders.ship({} as Order, 3).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toMatch(/OrderService\.ship.*\{0\.id\} is undefined/);
    await expect(orders.pay('' as string)).rejects.toThrow(/\{0\} is ""/);
  });

  it('makes a sync method return a Promise of its result', async () => {
    const result = orders.double(21) as unknown;
    expect(result).toBeInstanceOf(Promise);
    expect(await result).toBe(42);
  });

  it('is reentrant: a locked method calling another on the same key does not deadlock', async () => {
    orders.gate.current.resolve();
    await expect(orders.outer('5')).resolves.toBe('paid 5');
    expect(await memory.isLocked('app:order:5')).toBe(false);
  });

  it("onLocked 'skip' returns undefined, a function returns its fallback", async () => {
    const first = orders.report();
    const firstQuote = orders.quote('q1');
    await settle(clock);
    await expect(orders.report()).resolves.toBeUndefined();
    await expect(orders.quote('q1')).resolves.toBe('busy q1 quote:q1');
    orders.gate.current.resolve();
    await expect(first).resolves.toBe('done');
    await expect(firstQuote).resolves.toBe('quote q1');
  });

  it('lets the method see its lock being lost, and then rejects with LockLostError', async () => {
    const working = orders.longWork();
    await clock.advance(1_000);
    orders.gate.current.resolve();
    await expect(working).rejects.toBeInstanceOf(LockLostError);
  });

  describe('Observable methods', () => {
    it('take the lock on subscribe and hold it until the stream completes', async () => {
      const source = new Subject<number>();
      const values = firstValueFrom(orders.stream('s', source).pipe(toArray()));
      await settle(clock);
      expect(await memory.isLocked('app:stream:s')).toBe(true);
      source.next(1);
      source.next(2);
      source.complete();
      expect(await values).toEqual([1, 2]);
      await settle(clock);
      expect(await memory.isLocked('app:stream:s')).toBe(false);
    });

    it('release on error and on unsubscribe', async () => {
      const failing = new Subject<number>();
      const errored = firstValueFrom(orders.stream('e', failing)).catch((e: unknown) => e);
      await settle(clock);
      failing.error(new Error('stream broke'));
      expect(await errored).toEqual(new Error('stream broke'));
      await settle(clock);
      expect(await memory.isLocked('app:stream:e')).toBe(false);

      const endless = new Subject<number>();
      const subscription = orders.stream('u', endless).subscribe();
      await settle(clock);
      expect(await memory.isLocked('app:stream:u')).toBe(true);
      subscription.unsubscribe();
      await settle(clock);
      expect(await memory.isLocked('app:stream:u')).toBe(false);
      expect(endless.observed).toBe(false);
    });

    it('do not take the lock when unsubscribed before it was granted', async () => {
      const holder = await locks.acquire('stream:w', { ttl: 60_000 });
      const subscription = orders.stream('w', new Subject<number>()).subscribe();
      subscription.unsubscribe();
      await holder.release();
      await settle(clock);
      expect(await memory.isLocked('app:stream:w')).toBe(false);
    });

    it('error with LockLostError when the lock is lost mid-stream', async () => {
      const source = new Subject<number>();
      const lost = firstValueFrom(orders.shortStream(source)).catch((e: unknown) => e);
      await settle(clock);
      expect(source.observed).toBe(true);
      await clock.advance(1_000);
      expect(await lost).toBeInstanceOf(LockLostError);
      expect(source.observed).toBe(false);
    });

    it('release when the method throws instead of returning a stream', async () => {
      const error = await firstValueFrom(orders.brokenStream('b')).catch((e: unknown) => e);
      expect(error).toEqual(new Error('no stream for b'));
      await settle(clock);
      expect(await memory.isLocked('app:stream:b')).toBe(false);
    });

    it('an undeclared Observable fails its first call catchably, never unhandled, then is held as a stream', async () => {
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown): number => unhandled.push(reason);
      process.on('unhandledRejection', onUnhandled);
      try {
        // A caller that believes the type calls .subscribe() on what it got, and keeps no handler on the Promise.
        const first = orders.undeclared('x', new Subject<number>()) as unknown;
        expect(() => (first as Observable<number>).subscribe()).toThrow(TypeError);
        await settle(clock);
        await new Promise((resolve) => setImmediate(resolve));
        expect(unhandled).toEqual([]);
        await expect(first as Promise<unknown>).rejects.toThrow(/declare the return type.*Observable/);
        expect(await memory.isLocked('app:stream:x')).toBe(false);

        const source = new Subject<number>();
        const seen: number[] = [];
        const subscription = (orders.undeclared('y', source) as Observable<number>).subscribe((v) => seen.push(v));
        await settle(clock);
        source.next(1);
        expect(seen).toEqual([1]);
        expect(await memory.isLocked('app:stream:y')).toBe(true);
        subscription.unsubscribe();
        await settle(clock);
        expect(await memory.isLocked('app:stream:y')).toBe(false);
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
    });
  });

  it('at shutdown, keeps a lock while its work runs (signal aborted), and gives up only what outlives the grace period', async () => {
    const manual = await locks.acquire('manual', { ttl: 60_000 });
    const paying = orders.pay('9');
    await settle(clock);
    const lostKeys: string[] = [];
    locks.events$.subscribe((e) => e.type === 'lost' && lostKeys.push(...e.keys));
    const closing = app.close();
    await clock.advance(1_000);
    // Another instance must not get the key while the payment still runs: that would be two holders.
    expect(await memory.isLocked('app:order:9')).toBe(true);
    expect(manual.signal.aborted).toBe(true);
    expect(manual.isHeld).toBe(true);
    orders.gate.current.resolve();
    expect(await paying).toBe('paid 9');
    await settle(clock);
    expect(await memory.isLocked('app:order:9')).toBe(false);
    // Nobody released the manual lock: after shutdownTimeout it is reported lost, then released.
    expect(await memory.isLocked('app:manual')).toBe(true);
    await clock.advance(DEFAULT_SHUTDOWN_TIMEOUT);
    await closing;
    expect(lostKeys).toEqual(['manual']);
    expect(manual.isHeld).toBe(false);
    expect(await memory.isLocked('app:manual')).toBe(false);
  });
});

describe('@Locked outside a Nest container', () => {
  it('refuses to run a method called without its instance', async () => {
    const detached = new OrderService().double as unknown as (value: number) => Promise<number>;
    await expect(detached(1)).rejects.toBeInstanceOf(LockConfigurationError);
  });

  it('refuses to run unlocked on an instance created with new', async () => {
    const error = await (new OrderService().double(1) as unknown as Promise<number>).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as Error).message).toMatch(/OrderService\.double.*created with "new"/);
  });
});
