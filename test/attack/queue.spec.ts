import { LockService, ManualClock } from '../../lib';
import { settle } from '../support/memory-fixture';
import { StrictQueueBackend } from '../support/strict-queue-backend';

describe('attack: queue places (strict queue store, no lapse)', () => {
  const setup = () => {
    const clock = new ManualClock();
    const strict = new StrictQueueBackend();
    const a = new LockService({ backends: { default: strict }, clock });
    const b = new LockService({ backends: { default: strict }, clock });
    return { clock, strict, a, b };
  };

  it('a multi-key wait cancelled by its signal leaves no place on any key', async () => {
    const { clock, strict, a, b } = setup();
    const holder = await b.acquire('m2');
    const controller = new AbortController();
    const waiting = a
      .acquire(['m1', 'm2', 'm3'], { waitTimeout: 60_000, signal: controller.signal })
      .catch((e: unknown) => e);
    await clock.advance(200);
    controller.abort(new Error('stop'));
    await waiting;
    await holder.release();
    await settle(clock);
    expect([strict.holder('m1'), strict.holder('m2'), strict.holder('m3')]).toEqual([undefined, undefined, undefined]);
  });

  it('close() while a multi-key acquisition waits leaves no place behind', async () => {
    const { clock, strict, a, b } = setup();
    const holder = await b.acquire('q3');
    const waiting = a.acquire(['q1', 'q2', 'q3'], { waitTimeout: 60_000 }).catch((e: unknown) => e);
    await clock.advance(200);
    await a.close();
    await waiting;
    await holder.release();
    await settle(clock);
    expect([strict.holder('q1'), strict.holder('q2'), strict.holder('q3')]).toEqual([undefined, undefined, undefined]);
  });

  it('a waitTimeout that runs out leaves no place behind', async () => {
    const { clock, strict, a, b } = setup();
    const holder = await b.acquire('t2');
    const waiting = a.acquire(['t1', 't2'], { waitTimeout: 500 }).catch((e: unknown) => e);
    await clock.advance(600);
    expect(await waiting).toMatchObject({ code: 'LOCK_UNAVAILABLE' });
    await holder.release();
    await settle(clock);
    expect([strict.holder('t1'), strict.holder('t2')]).toEqual([undefined, undefined]);
  });
});
