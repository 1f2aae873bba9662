import { randomUUID } from 'node:crypto';
import { LockBackendError } from '../../lib';
import { redisPorts } from '../redis/support/redis-env';
import { never, Opened, timed, waitUntil } from './redis-attack-support';

/**
 * Failures the Redis attack found whose fix belongs in lib/core/, not in the backend. These tests assert the
 * correct behaviour and fail until the core is fixed; see the report of issue #6.
 */
describe('open bugs found by the Redis attack (fix in lib/core)', () => {
  const opened = new Opened();

  afterAll(async () => {
    await opened.closeAll();
  });

  it('backend.close() under waiting callers ends their waits at once with a LockBackendError saying it is closed', async () => {
    // The core retries every LockBackendError until waitTimeout, as it must for a store that blinks; a closed
    // backend never comes back, so the caller waits out its whole waitTimeout and then hears that the key "is
    // held by another owner" (LockUnavailableError, the closed backend only as its cause).
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
    expect(error).toBeInstanceOf(LockBackendError);
    expect((error as Error).message).toMatch(/closed/);
    expect(endedAfter).toBeLessThan(500);
  }, 10_000);
});
