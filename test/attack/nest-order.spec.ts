import { Injectable, Module, type OnApplicationShutdown, Scope } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { DistributedLockModule, Locked, LockService, MemoryLockBackend } from '../../lib';
import { StrictQueueBackend } from '../support/strict-queue-backend';

/** A store client owned by another module (as a RedisModule or TypeOrmModule owns its connection). */
class ClosableStore extends StrictQueueBackend {
  closedByOwner = false;
  override async release(lease: Parameters<StrictQueueBackend['release']>[0]): Promise<boolean> {
    if (this.closedByOwner) throw new Error('connection is closed');
    return super.release(lease);
  }
}
const STORE = Symbol('STORE');

describe('attack: Nest shutdown order', () => {
  it('locks are released before the module that owns the store connection closes it', async () => {
    const store = new ClosableStore();
    @Injectable()
    class StoreOwner implements OnApplicationShutdown {
      onApplicationShutdown(): void {
        store.closedByOwner = true; // e.g. redis.quit() / dataSource.destroy()
      }
    }
    @Module({ providers: [StoreOwner, { provide: STORE, useValue: store }], exports: [STORE] })
    class StoreModule {}
    const app = await (
      await Test.createTestingModule({
        imports: [
          DistributedLockModule.forRootAsync({
            imports: [StoreModule],
            inject: [STORE],
            useFactory: (s: ClosableStore) => ({ backends: { default: s }, shutdownTimeout: 100 }),
          }),
        ],
      }).compile()
    ).init();
    const locks = app.get(LockService);
    const lock = await locks.acquire('k'); // e.g. a long job's lock still held at shutdown
    void lock;
    await app.close();
    expect(store.holder('k')).toBeUndefined();
  });

  it('two apps alive at once can both have a transient @Locked provider (the issue: bind per instance per app)', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class PerUse {
      @Locked('transient-two')
      async run(): Promise<string> {
        return 'ran';
      }
    }
    @Injectable()
    class Consumer {
      constructor(readonly perUse: PerUse) {}
    }
    const start = async () =>
      (
        await Test.createTestingModule({
          imports: [DistributedLockModule.forRoot({ backends: { default: new MemoryLockBackend() } })],
          providers: [PerUse, Consumer],
        }).compile()
      ).init();
    const a = await start();
    const b = await start().catch((e: unknown) => e);
    const refused = (b as { code?: string }).code === 'LOCK_CONFIGURATION';
    if (!refused) await (b as { close(): Promise<void> }).close();
    await a.close();
    expect(refused).toBe(false);
  });
});
