import { systemClock, type LockBackend } from '../../lib';
import { RedlockBackend } from '../../lib/backends/redis';
import { describeLockBackendContract, type ContractHarness } from '../contract/lock-backend.contract';
import { clusterClient, redisClusterPorts, sleep } from './support/redis-env';

/** The contract on a real Redis Cluster (3 masters) given as the backend's one node. */
async function harness(): Promise<ContractHarness> {
  const cluster = clusterClient(redisClusterPorts());
  const opened: RedlockBackend[] = [];
  const open = async (): Promise<LockBackend> => {
    const backend = new RedlockBackend({ clients: [cluster] });
    opened.push(backend);
    await backend.init(new AbortController().signal);
    return backend;
  };
  return {
    backend: await open(),
    clock: systemClock,
    // As for the plain nodes (redlock.contract.spec.ts): answered well within it, outlasted quickly.
    ttl: 200,
    elapse: (ms) => sleep(ms + 5),
    reopen: open,
    close: async () => {
      await Promise.all(opened.map((b) => b.close()));
      await cluster.quit();
    },
  };
}

describeLockBackendContract('redlock, one Redis Cluster of 3 masters', harness);
