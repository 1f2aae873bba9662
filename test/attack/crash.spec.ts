import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Observable, of } from 'rxjs';
import {
  type AcquireRequest,
  DistributedLockModule,
  Locked,
  LockService,
  ManualClock,
  MemoryLockBackend,
} from '../../lib';
import { BendableBackend, memoryFixture, settle } from '../support/memory-fixture';

/** A backend that reports the loss of the lock it is granting before its grant reply arrives (a ZooKeeper node deleted). */
const lossAtGrant = (inner: MemoryLockBackend): BendableBackend => {
  const backend = new BendableBackend(inner);
  backend.acquire = async (request: AcquireRequest) => {
    const outcome = await inner.acquire(request);
    request.onLost('its node was deleted');
    return outcome;
  };
  return backend;
};

describe('attack: crashes and leaks through user callbacks', () => {
  it('an onLost function that throws, for a lock lost at grant, does not leave the key held (using)', async () => {
    const { locks, clock, memory } = memoryFixture({}, lossAtGrant);
    let ran = false;
    const outcome = await locks
      .using(
        'k',
        async () => {
          ran = true;
        },
        {
          onLost: () => {
            throw new Error('onLost policy failed');
          },
        },
      )
      .then(
        () => 'resolved',
        (e: unknown) => (e as Error).message,
      );
    await settle(clock);
    expect({ outcome, ran, stillHeld: await memory.isLocked('k') }).toEqual(
      expect.objectContaining({ stillHeld: false }),
    );
  });

  it('the same with a @Locked Observable method: no unhandled rejection, no held key, the subscriber hears', async () => {
    const unhandled: unknown[] = [];
    // Jest intercepts unhandled rejections itself and reports them as a second failure of this test.
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    @Injectable()
    class Streams {
      @Locked('stream', {
        onLost: () => {
          throw new Error('onLost policy failed');
        },
      })
      watch(): Observable<number> {
        return of(1);
      }
    }
    const app = await (
      await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: lossAtGrant(memory) }, clock })],
        providers: [Streams],
      }).compile()
    ).init();
    let heard = 'nothing';
    app
      .get(Streams)
      .watch()
      .subscribe({
        next: () => (heard = 'next'),
        error: (e: Error) => (heard = `error: ${e.message}`),
        complete: () => (heard = 'complete'),
      });
    await settle(clock);
    await new Promise((r) => setTimeout(r, 20));
    process.off('unhandledRejection', onUnhandled);
    const stillHeld = await memory.isLocked('stream');
    await app.close();
    expect({ unhandled: unhandled.length, stillHeld, heardSomething: heard !== 'nothing' }).toEqual({
      unhandled: 0,
      stillHeld: false,
      heardSomething: true,
    });
  });

  it('an onLost function that throws in a timer (validity) crashes nothing', async () => {
    const { locks, clock } = memoryFixture();
    const lock = await locks.acquire('k', {
      ttl: 1_000,
      onLost: () => {
        throw new Error('policy failed');
      },
    });
    await clock.advance(2_000);
    expect(lock.isHeld).toBe(false);
  });

  it('option edge values are refused with LockConfigurationError, or work', async () => {
    const { locks } = memoryFixture();
    const bad: Array<Record<string, unknown>> = [
      { ttl: NaN },
      { ttl: Infinity },
      { ttl: 2 },
      { ttl: 2 ** 31 },
      { ttl: 1.5e3 + 0.5 },
      { waitTimeout: -1 },
      { waitTimeout: 2 ** 31 },
      { minHold: 2 ** 31 },
      { retry: { delay: 0 } },
      { retry: { factor: Infinity } },
      { retry: { jitter: NaN } },
      { retry: { delay: 2 ** 31 } },
    ];
    for (const options of bad) {
      await expect(locks.acquire('k', options as never)).rejects.toMatchObject({ code: 'LOCK_CONFIGURATION' });
    }
    for (const options of [{ ttl: 3 }, { ttl: 2 ** 31 - 1 }, { waitTimeout: -0 }, { minHold: 3, ttl: 3 }]) {
      const lock = await locks.acquire('k', options);
      expect(lock.isHeld).toBe(true);
      await lock.release();
    }
    expect(() => new LockService({ backends: { default: new MemoryLockBackend() }, shutdownTimeout: NaN })).toThrow(
      /shutdownTimeout/,
    );
    expect(() => new LockService({ backends: { default: new MemoryLockBackend() }, operationTimeout: 0 })).toThrow(
      /operationTimeout/,
    );
  });
});
