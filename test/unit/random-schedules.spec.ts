import fc from 'fast-check';
import { type Lock, LockService, ManualClock, MemoryLockBackend } from '../../lib';

/**
 * Random schedules of takes, waits, extensions, releases, aborts and the passing of time, on three app
 * instances sharing one store. After every step: no key has two holders that both believe they hold it, a
 * handle that believes it holds a key is backed by the store, and each key's fencing tokens rose in grant order.
 */
const KEYS = ['a', 'b', 'c'] as const;

type Step =
  | { kind: 'try'; app: number; keys: string[]; ttl: number; autoExtend: boolean }
  | { kind: 'wait'; app: number; keys: string[]; ttl: number; waitTimeout: number }
  | { kind: 'release' | 'extend'; pick: number }
  | { kind: 'abort'; pick: number }
  | { kind: 'time'; ms: number };

const keysArb = fc.subarray([...KEYS], { minLength: 1, maxLength: 2 });
const ttlArb = fc.constantFrom(300, 1_000, 3_000);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('try' as const),
    app: fc.nat(2),
    keys: keysArb,
    ttl: ttlArb,
    autoExtend: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant('wait' as const),
    app: fc.nat(2),
    keys: keysArb,
    ttl: ttlArb,
    waitTimeout: fc.constantFrom(100, 1_000, 5_000),
  }),
  fc.record({ kind: fc.constantFrom('release' as const, 'extend' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('time' as const), ms: fc.integer({ min: 0, max: 2_000 }) }),
);

async function runSchedule(steps: Step[]): Promise<void> {
  const clock = new ManualClock();
  const store = new MemoryLockBackend({ clock });
  const apps = [0, 1, 2].map(() => new LockService({ backends: { default: store }, clock }));
  const lastToken = new Map<string, bigint>();
  const tokenViolations: string[] = [];
  for (const app of apps) {
    app.events$.subscribe((event) => {
      if (event.type !== 'acquired') return;
      event.keys.forEach((key, i) => {
        const token = event.fencingTokens[i]!;
        const previous = lastToken.get(key);
        if (previous !== undefined && token <= previous) tokenViolations.push(`${key}: ${previous} then ${token}`);
        lastToken.set(key, token);
      });
    });
  }
  const handles: Lock[] = [];
  const waiters: AbortController[] = [];
  const pickHandle = (n: number): Lock | undefined => (handles.length ? handles[n % handles.length] : undefined);

  for (const step of steps) {
    switch (step.kind) {
      case 'try': {
        const lock = await apps[step.app]!.tryAcquire(step.keys, { ttl: step.ttl, autoExtend: step.autoExtend });
        if (lock) handles.push(lock);
        break;
      }
      case 'wait': {
        const controller = new AbortController();
        waiters.push(controller);
        apps[step.app]!.acquire(step.keys, {
          ttl: step.ttl,
          waitTimeout: step.waitTimeout,
          signal: controller.signal,
        }).then(
          (lock) => handles.push(lock),
          () => undefined,
        );
        break;
      }
      case 'release':
        await pickHandle(step.pick)?.release();
        break;
      case 'extend':
        await pickHandle(step.pick)
          ?.extend()
          .catch(() => undefined);
        break;
      case 'abort':
        if (waiters.length) waiters[step.pick % waiters.length]!.abort(new Error('gave up'));
        break;
      case 'time':
        await clock.advance(step.ms);
        break;
    }
    await clock.advance(0);
    expect(tokenViolations).toEqual([]);
    for (const key of KEYS) {
      const holders = handles.filter((h) => h.isHeld && h.keys.includes(key));
      expect(holders.length).toBeLessThanOrEqual(1);
      if (holders.length === 1) expect(await store.isLocked(key)).toBe(true);
    }
  }
  waiters.forEach((w) => w.abort(new Error('done')));
  await Promise.all(apps.map((app) => app.releaseAll()));
  await clock.advance(10_000);
  for (const key of KEYS) expect(await store.isLocked(key)).toBe(false);
  expect(handles.every((h) => !h.isHeld)).toBe(true);
}

describe('random schedules on three app instances sharing one store', () => {
  it('keep mutual exclusion, store backing, rising fencing tokens and leave nothing held', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 5, maxLength: 40 }), (steps) => runSchedule(steps)),
      { numRuns: 150 },
    );
  }, 120_000);
});
