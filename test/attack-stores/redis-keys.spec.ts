import type Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { LockUnavailableError, MAX_KEY_LENGTH, MAX_KEY_PREFIX_LENGTH, type LockService } from '../../lib';
import { redisPorts } from '../redis/support/redis-env';
import { never, Opened, sleep, timed, unhandledRejections } from './redis-attack-support';

/**
 * Keys that could confuse Redis or the scripts — braces (hash tags), glob characters, spaces, any Unicode, the
 * longest keys allowed, keys sharing a long prefix — and key prefixes at both ends (the service's keyPrefix, the
 * ioredis client's own keyPrefix). Run on the shared nodes, under a random prefix.
 */
describe('attack: Redlock keys', () => {
  const opened = new Opened();
  const rejections = unhandledRejections();
  const run = randomUUID().slice(0, 8);
  /** A polling pause no test here waits out: only release announcements can wake a waiter in time. */
  const NO_POLL = { delay: 60_000, maxDelay: 60_000 };
  let ports: number[] = [];
  let admin: Redis;

  beforeAll(() => {
    ports = redisPorts(3);
    admin = opened.client(ports[0]!);
  });
  afterAll(async () => {
    await opened.closeAll();
    rejections.stop();
    expect(rejections.seen).toEqual([]);
  });

  const services = async (keyPrefix: string, count = 2): Promise<LockService[]> => {
    const made: LockService[] = [];
    for (let i = 0; i < count; i++) {
      const backend = opened.backendOn(ports);
      await backend.init(never);
      made.push(opened.service({ backends: { default: backend }, keyPrefix }));
    }
    return made;
  };

  /** Exclusion, a wake-up by announcement, rising tokens, and nothing but the counter left behind. */
  const exercise = async (a: LockService, b: LockService, key: string, stored: string): Promise<void> => {
    const first = await a.acquire(key, { ttl: 10_000 });
    expect(await admin.get(stored)).toMatch(/^[0-9a-f]{32}$/);
    expect((await timed(() => b.acquire(key))).error).toBeInstanceOf(LockUnavailableError);
    const waiting = timed(() => b.acquire(key, { ttl: 10_000, waitTimeout: 5_000, retry: NO_POLL }));
    await sleep(30);
    await first.release();
    const { value: second, error, ms } = await waiting;
    expect(error).toBeUndefined();
    expect(ms).toBeLessThan(2_000);
    expect(second!.fencingToken).toBeGreaterThan(first.fencingToken);
    await second!.release();
    // The release is confirmed by a quorum: the node looked at here may answer a moment later.
    const left = (): Promise<number> => admin.exists(stored, `${stored}\u0000line`, `${stored}\u0000deadlines`);
    for (let i = 0; i < 20 && (await left()) > 0; i++) await sleep(5);
    expect(await left()).toBe(0);
    expect(await admin.exists(`${stored}\u0000fence`)).toBe(1);
  };

  const keys: [string, string][] = [
    ['braces (a hash tag)', '{user:1}:order'],
    ['empty braces', '{}'],
    ['unbalanced braces', '}{a{'],
    ['glob characters', '*?[a-z]\\*'],
    ['spaces, tabs and newlines', ' a key\twith\nspaces '],
    ['Unicode (accents, Cyrillic, CJK, emoji)', 'ünïcødé ключ 鍵 🔒'],
    ['a look-alike of a derived key', 'k\u0001fence'],
    ['the longest key', 'x'.repeat(MAX_KEY_LENGTH)],
  ];
  it.each(keys)('a key with %s', async (_, key) => {
    const prefix = `keys:${run}:${randomUUID().slice(0, 8)}:`;
    const [a, b] = await services(prefix);
    await exercise(a!, b!, key, prefix + key);
  });

  it('the longest key under the longest keyPrefix', async () => {
    const prefix = `${run}:`.padEnd(MAX_KEY_PREFIX_LENGTH, 'p');
    const [a, b] = await services(prefix);
    const key = 'k'.repeat(MAX_KEY_LENGTH);
    await exercise(a!, b!, key, prefix + key);
  });

  it('keys that differ only at their end, after a long common part, are independent', async () => {
    const prefix = `tails:${run}:`;
    const [a, b] = await services(prefix);
    const common = 'c'.repeat(MAX_KEY_LENGTH - 1);
    const one = await a!.acquire(`${common}1`);
    const two = await b!.acquire(`${common}2`);
    expect(two.fencingToken).toBeGreaterThan(0n);
    await Promise.all([one.release(), two.release()]);
  });

  it("keyPrefix: a service's prefixed key and an unprefixed service's full key are the same lock", async () => {
    const prefix = `prefix:${run}:`;
    const [prefixed] = await services(prefix, 1);
    const [plain] = await services('', 1);
    const lock = await prefixed!.acquire('k');
    expect((await timed(() => plain!.acquire(`${prefix}k`))).error).toBeInstanceOf(LockUnavailableError);
    await lock.release();
    const other = await plain!.acquire(`${prefix}k`);
    await other.release();
  });

  it("an ioredis client's own keyPrefix: keys are stored under it, and release announcements still wake waiters", async () => {
    const clientPrefix = `client-prefix:${run}:`;
    const withPrefix = () => {
      const backend = opened.backend({ clients: ports.map((p) => opened.client(p, { keyPrefix: clientPrefix })) });
      return opened.service({ backends: { default: backend } });
    };
    await exercise(withPrefix(), withPrefix(), 'k', `${clientPrefix}k`);
  });

  it('multi-key locks with overlapping sets from three services at once ([a,b], [b,c], [c,a]): no deadlock, per-key exclusion, rising tokens', async () => {
    const prefix = `multi:${run}:`;
    const all = await services(prefix, 3);
    const sets = [
      ['a', 'b'],
      ['b', 'c'],
      ['c', 'a'],
    ];
    const inside = new Map<string, number>();
    const tokens = new Map<string, bigint[]>();
    let overlaps = 0;
    const done = [0, 0, 0];
    const deadline = Date.now() + 1_500;
    await Promise.all(
      all.map(async (locks, i) => {
        while (Date.now() < deadline) {
          await locks.using(
            sets[i]!,
            async (lock) => {
              for (const key of lock.keys) {
                inside.set(key, (inside.get(key) ?? 0) + 1);
                if (inside.get(key) !== 1) overlaps++;
              }
              for (const key of lock.keys) tokens.set(key, [...(tokens.get(key) ?? []), lock.fencingTokenFor(key)]);
              await sleep(2);
              for (const key of lock.keys) inside.set(key, inside.get(key)! - 1);
            },
            { ttl: 5_000, waitTimeout: 5_000 },
          );
          done[i]!++;
        }
      }),
    );
    expect(overlaps).toBe(0);
    for (const count of done) expect(count).toBeGreaterThan(5);
    for (const list of tokens.values())
      for (let i = 1; i < list.length; i++) expect(list[i]!).toBeGreaterThan(list[i - 1]!);
    console.log(`overlapping multi-key sets: ${done.join(' / ')} locked sections in 1.5 s`);
  }, 15_000);
});
