import {
  DEFAULT_LOCK_OPTIONS,
  LockConfigurationError,
  LockService,
  MAX_KEY_LENGTH,
  MAX_KEY_PREFIX_LENGTH,
  MemoryLockBackend,
  type RetryOptions,
} from '../../lib';
import { memoryFixture } from '../support/memory-fixture';

/** Each bad input must be refused with a typed error naming the option, and leave nothing taken. */
describe('bad input', () => {
  const { locks, memory } = memoryFixture();

  const refused = async (call: () => Promise<unknown>, option: string, rule: RegExp): Promise<void> => {
    const error = await call().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(LockConfigurationError);
    expect((error as LockConfigurationError).option).toBe(option);
    expect((error as Error).message).toMatch(rule);
    expect(await memory.isLocked('k')).toBe(false);
  };

  it.each([
    ['an empty key', ''],
    ['a number', 42],
    ['undefined', undefined],
    ['null', null],
    ['an object', { id: 1 }],
  ])('refuses %s as a key', async (_label, key) => {
    await refused(() => locks.acquire(key as string), 'key', /non-empty string/);
  });

  it('refuses a key over the documented maximum, and accepts one at it', async () => {
    await refused(() => locks.acquire('k'.repeat(MAX_KEY_LENGTH + 1)), 'key', /at most 1024 characters/);
    const longest = await locks.acquire('k'.repeat(MAX_KEY_LENGTH));
    await longest.release();
  });

  it('refuses a key with NUL, an empty key list and a list holding a bad key — taking none of the list', async () => {
    await refused(() => locks.acquire('a\u0000b'), 'key', /NUL/);
    await refused(() => locks.acquire([]), 'key', /At least one lock key/);
    await refused(() => locks.acquire(['k', '']), 'key', /non-empty string/);
  });

  it.each([
    ['ttl', 0, /whole number of milliseconds from 3 to 2147483647/],
    ['ttl', -5, /from 3 to/],
    ['ttl', Number.NaN, /from 3 to/],
    ['ttl', Number.POSITIVE_INFINITY, /from 3 to/],
    ['ttl', 1.5, /from 3 to/],
    ['ttl', '1000', /from 3 to/],
    // Too short to survive the drift margin: the lock would be handed out already lost.
    ['ttl', 1, /born lost/],
    ['ttl', 2, /born lost/],
    // Node runs timers of 2^31 ms or more after 1 ms: such durations would misbehave, not wait.
    ['ttl', 2 ** 31, /from 3 to 2147483647/],
    ['ttl', Number.MAX_SAFE_INTEGER, /from 3 to 2147483647/],
    ['waitTimeout', -1, /from 0 to/],
    ['waitTimeout', Number.NaN, /from 0 to/],
    ['waitTimeout', 2 ** 31, /from 0 to 2147483647/],
    ['minHold', -1, /from 0 to/],
    ['minHold', 3e9, /from 0 to 2147483647/],
    ['onSuspended', 'ignore', /'wait' or 'abort'/],
    ['autoExtend', 'yes', /true or false/],
    ['reentrant', 1, /true or false/],
    ['onLost', 'explode', /'abort' or 'ignore'/],
    ['onLocked', 'wait', /'throw' or 'skip'/],
    ['signal', {}, /AbortSignal/],
    ['retry', 5, /must be an object/],
  ])('refuses %s = %p', async (option, value, rule) => {
    await refused(() => locks.acquire('k', { [option]: value }), option, rule);
  });

  it.each([
    ['retry.delay', { delay: 0 }, /from 1 to/],
    ['retry.maxDelay', { maxDelay: -1 }, /from 1 to/],
    ['retry.delay', { delay: 3e9, maxDelay: 3e9 }, /from 1 to 2147483647/],
    ['retry.maxDelay', { maxDelay: 2 ** 31 }, /from 1 to 2147483647/],
    ['retry.factor', { factor: 0.5 }, /≥ 1/],
    ['retry.jitter', { jitter: 1.5 }, /from 0 to 1/],
    ['retry.maxDelay', { delay: 500, maxDelay: 100 }, /must be ≥ "retry.delay"/],
    ['nope', { nope: 1 }, /no option "nope"/],
  ])('refuses %s in %p', async (option, retry, rule) => {
    await refused(() => locks.acquire('k', { retry: retry as RetryOptions }), option, rule);
  });

  it('refuses minHold longer than ttl, naming both', async () => {
    await refused(
      () => locks.acquire('k', { ttl: 1_000, minHold: 1_001 }),
      'minHold',
      /"minHold" \(1001 ms\).*"ttl" \(1000 ms\)/,
    );
  });

  it('refuses an unknown option name instead of ignoring a typo', async () => {
    await refused(() => locks.acquire('k', { tll: 5 } as never), 'tll', /no option "tll"/);
  });

  it('refuses an unknown backend name, listing the registered ones', async () => {
    await refused(
      () => locks.acquire('k', { backend: 'redis' }),
      'backend',
      /No lock backend is named "redis".*"default"/,
    );
    await refused(() => locks.using('k', async () => 1, { backend: 'redis' }), 'backend', /"redis"/);
    await expect(locks.isLocked('k', { backend: 'redis' })).rejects.toBeInstanceOf(LockConfigurationError);
  });

  it('refuses a non-positive, too short or too long ttl in lock.extend()', async () => {
    const lock = await locks.acquire('x');
    await expect(lock.extend(0)).rejects.toMatchObject({ option: 'ttl' });
    await expect(lock.extend(2)).rejects.toThrow(/born lost/);
    await expect(lock.extend(2 ** 31)).rejects.toMatchObject({ option: 'ttl' });
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  describe('module configuration, refused when the service is built (at bootstrap)', () => {
    const backend = new MemoryLockBackend();
    it.each([
      ['no options', undefined, 'options'],
      ['no backends', {}, 'backends'],
      ['an empty backends object', { backends: {} }, 'backends'],
      ['a backend that is not one', { backends: { default: { acquire() {} } } }, 'backends.default'],
      ['a default backend that is not registered', { backends: { db: backend } }, 'defaults.backend'],
      ['bad defaults', { backends: { default: backend }, defaults: { ttl: -1 } }, 'ttl'],
      [
        'minHold over ttl in defaults',
        { backends: { default: backend }, defaults: { ttl: 10, minHold: 20 } },
        'minHold',
      ],
      ['a non-string keyPrefix', { backends: { default: backend }, keyPrefix: 7 }, 'keyPrefix'],
      [
        'a keyPrefix over the maximum',
        { backends: { default: backend }, keyPrefix: 'p'.repeat(MAX_KEY_PREFIX_LENGTH + 1) },
        'keyPrefix',
      ],
    ])('%s', (_label, config, option) => {
      let error: unknown;
      try {
        new LockService(config as never);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(LockConfigurationError);
      expect(error).toMatchObject({ option });
    });

    it('opens no backend from a factory when another option is wrong, and closes those made before a bad one', async () => {
      const made: MemoryLockBackend[] = [];
      const factory = () => (made[made.length] = new MemoryLockBackend());
      expect(() => new LockService({ backends: { default: factory }, defaults: { ttl: -1 } })).toThrow(/ttl/);
      expect(made).toHaveLength(0);
      // Factories run at init (bootstrap), after every option was checked.
      const service = new LockService({ backends: { default: factory, broken: () => ({}) as never } });
      expect(made).toHaveLength(0);
      await expect(service.init()).rejects.toThrow(/backends.broken is not a lock backend/);
      expect(made).toHaveLength(1);
      await expect(made[0]!.isLocked('k', { signal: new AbortController().signal })).rejects.toThrow(/closed/);
    });

    it.each([
      ['shutdownTimeout', -1],
      ['shutdownTimeout', 2 ** 31],
      ['operationTimeout', 0],
      ['operationTimeout', Number.NaN],
    ])('refuses %s = %p', (option, value) => {
      expect(() => new LockService({ backends: { default: backend }, [option]: value })).toThrow(
        new RegExp(`"${option}" must be a whole number of milliseconds`),
      );
    });

    it('accepts a default backend named through defaults.backend', () => {
      expect(() => new LockService({ backends: { db: backend }, defaults: { backend: 'db' } })).not.toThrow();
    });
  });

  it('documents its defaults in one exported object', () => {
    expect(DEFAULT_LOCK_OPTIONS).toMatchObject({
      ttl: 30_000,
      waitTimeout: 0,
      minHold: 0,
      onLocked: 'throw',
      onLost: 'abort',
    });
  });
});
