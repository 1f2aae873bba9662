import { randomUUID } from 'node:crypto';
import { LockBackendClosedError } from '../../lib';
import { redisPorts } from '../redis/support/redis-env';
import { never, Opened, timed, waitUntil } from './redis-attack-support';

/**
 * Found by the Redis attack, fixed in lib/core/: a backend closed under a waiting caller ends the wait at once
 * (LockBackendClosedError), for every backend (also a contract case).
 */
describe('a Redlock backend closed under waiting callers', () => {
  const opened = new Opened();

  afterAll(async () => {
    await opened.closeAll();
  });

  it('backend.close() under waiting callers ends their waits at once with a LockBackendError saying it is closed', async () => {
    // The core retries a LockBackendError until waitTimeout, as it must for a store that blinks; a closed backend
    // never comes back, so before the fix the caller waited out its whole waitTimeout and then heard that the
    // key "is held by another owner" (LockUnavailableError, the closed backend only as its cause).
    const [port] = redisPorts(1);
    const holder = opened.backendOn([port!]);
    const waiters = opened.backendOn([port!]);
    await Promise.all([holder.init(never), waiters.init(never)]);
    const key = `open-bug-close:${randomUUID()}`;
    await opened.service({ backends: { default: holder } }).acquire(key, { ttl: 10_000 });
    const locks = opened.service({ backends: { default: waiters } });
    const admin = opened.client(port!);
    const call = timed(() => locks.acquire(key, { waitTimeout: 3_000 }));
    await waitUntil('the caller waits in line', async () => (await admin.zcard(`${key}\u0000line`)) === 1);
    const closedAt = Date.now();
    await waiters.close();
    const { error } = await call;
    const endedAfter = Date.now() - closedAt;
    expect(error).toBeInstanceOf(LockBackendClosedError);
    expect((error as Error).message).toMatch(/closed/);
    expect(endedAfter).toBeLessThan(500);
  }, 10_000);
});
