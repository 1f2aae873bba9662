import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { defer, Observable, of } from 'rxjs';
import { type AcquireRequest, DistributedLockModule, Locked, ManualClock, MemoryLockBackend } from '../../lib';
import { BendableBackend, memoryFixture, settle } from '../support/memory-fixture';

/** The store reports the lock lost while its grant is on the way (a ZooKeeper node deleted, a session ended). */
const lossAtGrant = (inner: MemoryLockBackend): BendableBackend => {
  const backend = new BendableBackend(inner);
  backend.acquire = async (request: AcquireRequest) => {
    const outcome = await inner.acquire(request);
    request.onLost('its node was deleted');
    return outcome;
  };
  return backend;
};

describe('attack: a lock already lost when it is granted', () => {
  it("using() with onLost 'abort' does not run the work under a lock it already knows is lost", async () => {
    const { locks, clock } = memoryFixture({}, lossAtGrant);
    let ran = false;
    const outcome = await locks
      .using('k', async () => {
        ran = true;
      })
      .then(
        () => 'resolved',
        (e: unknown) => (e as { code?: string }).code,
      );
    await settle(clock);
    expect({ outcome, ran }).toEqual({ outcome: 'LOCK_LOST', ran: false });
  });

  it("a @Locked Observable with onLost 'abort' does not run the method's stream under a lost lock", async () => {
    const clock = new ManualClock();
    const memory = new MemoryLockBackend({ clock });
    let subscribedToSource = false;
    @Injectable()
    class Streams {
      @Locked('stream')
      watch(): Observable<number> {
        return defer(() => {
          subscribedToSource = true; // the side effect the lock is meant to guard
          return of(1);
        });
      }
    }
    const app = await (
      await Test.createTestingModule({
        imports: [DistributedLockModule.forRoot({ backends: { default: lossAtGrant(memory) }, clock })],
        providers: [Streams],
      }).compile()
    ).init();
    let heard = '';
    app
      .get(Streams)
      .watch()
      .subscribe({ error: (e: { code?: string }) => (heard = String(e.code)), complete: () => (heard = 'complete') });
    await settle(clock);
    await app.close();
    expect({ heard, subscribedToSource }).toEqual({ heard: 'LOCK_LOST', subscribedToSource: false });
  });
});
