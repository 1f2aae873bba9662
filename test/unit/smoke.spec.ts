import 'reflect-metadata';
import { LockService, MemoryLockBackend, ManualClock } from '../../lib';

it('smoke', async () => {
  const clock = new ManualClock();
  const svc = new LockService({ backends: { default: new MemoryLockBackend({ clock }) }, clock });
  const lock = await svc.acquire('a');
  expect(await svc.tryAcquire('a')).toBeNull();
  const p = svc.acquire('a', { waitTimeout: 1000 });
  await lock.release();
  const l2 = await p;
  expect(l2.fencingToken).toBeGreaterThan(lock.fencingToken);
  await svc.close();
});
