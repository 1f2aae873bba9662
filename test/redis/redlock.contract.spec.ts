import { systemClock, type LockBackend } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { describeLockBackendContract, type ContractHarness } from '../contract/lock-backend.contract';
import { client, redisPorts, sleep } from './support/redis-env';

/** The contract on real redis-server processes: one node (plain locking) and five (Redlock, quorum 3). */
async function harness(nodes: number): Promise<ContractHarness> {
  const ports = redisPorts(nodes);
  const clients = ports.map(client);
  const opened: RedlockBackend[] = [];
  const open = async (): Promise<LockBackend> => {
    const backend = new RedlockBackend({ clients });
    opened.push(backend);
    await backend.init(new AbortController().signal);
    return backend;
  };
  return {
    backend: await open(),
    clock: systemClock,
    // Long enough for a loaded 2-core machine to answer well within it, short enough to outlast quickly.
    ttl: 200,
    // Real time, and a few ms more so that replies and announcements in flight arrive.
    elapse: (ms) => sleep(ms + 5),
    reopen: open,
    close: async () => {
      await Promise.all(opened.map((b) => b.close()));
      await Promise.all(clients.map((c) => c.quit()));
    },
  };
}

describeLockBackendContract('redlock, 1 node', () => harness(1));
describeLockBackendContract('redlock, 5 nodes', () => harness(5));
