import { type AcquireOutcome, type AcquireRequest, type LockBackend, LockService, ManualClock } from '../../lib';
import { settle } from '../support/memory-fixture';
import { StrictQueueBackend } from '../support/strict-queue-backend';

describe('attack: a grant whose reply never arrives', () => {
  it('an acquire that the store applied but never answered is released when the core gives up on it', async () => {
    const clock = new ManualClock();
    const strict = new StrictQueueBackend();
    // The request reaches the store and is applied; the reply is lost on the way back (connection reset).
    const lostReply: LockBackend = Object.assign(Object.create(strict) as StrictQueueBackend, {
      acquire: async (request: AcquireRequest): Promise<AcquireOutcome> => {
        await strict.acquire(request);
        return new Promise<AcquireOutcome>(() => undefined);
      },
    });
    const locks = new LockService({ backends: { default: lostReply }, clock, operationTimeout: 100 });
    const outcome = locks.acquire('k').catch((e: unknown) => (e as { code?: string }).code);
    await clock.advance(100);
    expect(await outcome).toBe('LOCK_BACKEND');
    await clock.advance(60_000);
    await settle(clock);
    // Nobody holds a Lock for k, yet the store keeps it for the orphaned owner (for a session-bound store:
    // until the session ends). The core knows the owner token: a release by owner is always safe to send.
    expect(strict.holder('k')).toBeUndefined();
  });
});
