import { ManualClock, MemoryLockBackend } from '../../lib';
import { describeLockBackendContract } from './lock-backend.contract';

describeLockBackendContract('memory', async () => {
  const clock = new ManualClock();
  const opened: MemoryLockBackend[] = [];
  const open = (): MemoryLockBackend => {
    const backend = new MemoryLockBackend({ clock });
    opened.push(backend);
    return backend;
  };
  return {
    backend: open(),
    clock,
    ttl: 1_000,
    elapse: (ms) => clock.advance(ms),
    // A memory store does not outlive its process: a restart is a new instance on the same clock.
    reopen: async () => open(),
    close: async () => {
      await Promise.all(opened.map((b) => b.close()));
    },
  };
});
