import { Injectable, Module, type OnApplicationBootstrap, Scope } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Observable, Subject } from 'rxjs';
import { DistributedLockModule, Locked, LockService, ManualClock, MemoryLockBackend } from '../../lib';
import { settle } from '../support/memory-fixture';

describe('attack: Nest', () => {
  it('an app whose bootstrap failed (and was closed) does not keep its transient @Locked classes claimed forever', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class PerUse {
      @Locked('per-use')
      async run(): Promise<string> {
        return 'ran';
      }
    }
    @Injectable()
    class Consumer {
      constructor(readonly perUse: PerUse) {}
    }
    @Injectable()
    class Explodes implements OnApplicationBootstrap {
      onApplicationBootstrap(): void {
        throw new Error('some other provider fails at bootstrap');
      }
    }
    const start = async (extra: unknown[]) => {
      const moduleRef = await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
        providers: [PerUse, Consumer, ...(extra as [])],
      }).compile();
      return moduleRef.init().catch(async (error: unknown) => {
        // What a careful test or main.ts does after a failed bootstrap.
        await moduleRef.close().catch(() => undefined);
        throw error;
      });
    };
    await expect(start([Explodes])).rejects.toThrow('some other provider fails at bootstrap');
    // No app is running now: a fresh app with the class must bootstrap.
    const app = await start([]).catch((e: unknown) => e);
    expect(app).not.toMatchObject({ code: 'LOCK_CONFIGURATION' });
    if (!(app instanceof Error)) {
      await expect((app as Awaited<ReturnType<typeof start>>).get(Consumer).perUse.run()).resolves.toBe('ran');
      await (app as Awaited<ReturnType<typeof start>>).close();
    }
  });

  it('an app whose bootstrap failed and was not closed does not make later apps fail with "another running app"', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class PerUse2 {
      @Locked('per-use-2')
      async run(): Promise<string> {
        return 'ran';
      }
    }
    @Injectable()
    class Consumer2 {
      constructor(readonly perUse: PerUse2) {}
    }
    @Injectable()
    class Explodes2 implements OnApplicationBootstrap {
      onApplicationBootstrap(): void {
        throw new Error('boom');
      }
    }
    const build = (providers: unknown[]) =>
      Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
        providers: providers as [],
      }).compile();
    // A failed init (e.g. `await app.init()` in a test that then throws) — nobody closes it.
    await expect((await build([PerUse2, Consumer2, Explodes2])).init()).rejects.toThrow('boom');
    const app = await (await build([PerUse2, Consumer2])).init().catch((e: unknown) => e);
    const refused = (app as { code?: string }).code === 'LOCK_CONFIGURATION';
    if (!refused) await (app as { close(): Promise<void> }).close();
    expect({ refused, message: refused ? (app as Error).message : '' }).toEqual({ refused: false, message: '' });
  });

  it('app.close() cancels a @Locked call that waits, and keeps the key while running work winds down', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    @Injectable()
    class Jobs {
      @Locked('job', { waitTimeout: 60_000 })
      async run(stop: Subject<void>): Promise<boolean> {
        const lock = (await import('../../lib')).LockContext.current()!;
        await new Promise<void>((resolve) => {
          lock.signal.addEventListener('abort', () => resolve());
          stop.subscribe(() => resolve());
        });
        return lock.signal.aborted;
      }
    }
    const app = await (
      await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: memory }, clock, shutdownTimeout: 1_000 })],
        providers: [Jobs],
      }).compile()
    ).init();
    const jobs = app.get(Jobs);
    const first = jobs.run(new Subject());
    await settle(clock);
    const second = jobs.run(new Subject()).catch((e: unknown) => e);
    await settle(clock);
    const closing = app.close();
    await settle(clock);
    expect(await second).toMatchObject({ code: 'LOCK_BACKEND' });
    expect(await first).toBe(true);
    await closing;
    expect(await memory.isLocked('job')).toBe(false);
  });

  it('an Observable @Locked method unsubscribed at each stage leaves the key free', async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    const source = new Subject<number>();
    @Injectable()
    class Streams {
      @Locked('stream', { waitTimeout: 10_000 })
      watch(): Observable<number> {
        return source.asObservable();
      }
    }
    @Module({
      imports: [DistributedLockModule.forRoot({ backends: { default: memory }, clock })],
      providers: [Streams],
    })
    class AppModule {}
    const app = await (await Test.createTestingModule({ imports: [AppModule] }).compile()).init();
    const streams = app.get(Streams);
    const other = new LockService({ backends: { default: memory }, clock });
    // 1. synchronously after subscribe
    streams.watch().subscribe().unsubscribe();
    await settle(clock);
    expect(await memory.isLocked('stream')).toBe(false);
    // 2. while waiting for a busy key, then the key frees
    const held = await other.acquire('stream');
    const s2 = streams.watch().subscribe();
    await clock.advance(100);
    s2.unsubscribe();
    await held.release();
    await clock.advance(100);
    expect(await memory.isLocked('stream')).toBe(false);
    // 3. while held, mid-stream
    const values: number[] = [];
    const s3 = streams.watch().subscribe((v) => values.push(v));
    await settle(clock);
    source.next(1);
    expect(await memory.isLocked('stream')).toBe(true);
    s3.unsubscribe();
    await settle(clock);
    expect(await memory.isLocked('stream')).toBe(false);
    expect(values).toEqual([1]);
    await app.close();
    await other.close();
  });
});
