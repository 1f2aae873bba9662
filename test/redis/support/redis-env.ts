import Redis, { Cluster } from 'ioredis';

/**
 * The Redis nodes test/services/redis.sh started for this run. Fails loudly when they are missing: these tests
 * talk to real servers only.
 */
export function redisPorts(needed: number): number[] {
  const raw = process.env.REDIS_PORTS;
  if (!raw) {
    throw new Error(
      'REDIS_PORTS is not set: the Redis tests need real redis-server processes. Run them through ' +
        '`bash test/run-all.sh`, or start the servers first: `source test/services/lib.sh && ' +
        'source test/services/redis.sh && start_redis`, then run jest in that shell (and stop_redis after).',
    );
  }
  const ports = raw.split(',').map((p) => Number(p.trim()));
  if (ports.length < needed || ports.some((p) => !Number.isInteger(p) || p <= 0)) {
    throw new Error(
      `REDIS_PORTS="${raw}" must list at least ${needed} ports (start with REDIS_NODES=${needed} or more).`,
    );
  }
  return ports.slice(0, needed);
}

/**
 * The client ports of the Redis Cluster test/services/redis.sh started (3 masters, no replicas). Fails loudly
 * when it is missing, like redisPorts().
 */
export function redisClusterPorts(): number[] {
  const raw = process.env.REDIS_CLUSTER_PORTS;
  if (!raw) {
    throw new Error(
      'REDIS_CLUSTER_PORTS is not set: the Redis Cluster tests need a real cluster of redis-server processes. ' +
        'Run them through `bash test/run-all.sh`, or start the servers first: `source test/services/lib.sh && ' +
        'source test/services/redis.sh && start_redis` (it starts the cluster too), then run jest in that shell.',
    );
  }
  const ports = raw.split(',').map((p) => Number(p.trim()));
  if (ports.length < 3 || ports.some((p) => !Number.isInteger(p) || p <= 0)) {
    throw new Error(`REDIS_CLUSTER_PORTS="${raw}" must list the ports of at least 3 cluster masters.`);
  }
  return ports;
}

/**
 * A Cluster client the test owns, knowing one node to start from (it learns the others, as users' do).
 * `connectionName` names its connections on the servers (CLIENT LIST), so a test can tell where they are.
 */
export function clusterClient(ports: readonly number[], connectionName?: string): Cluster {
  const cluster = new Cluster([{ host: '127.0.0.1', port: ports[0]! }], {
    redisOptions: { maxRetriesPerRequest: 1, ...(connectionName ? { connectionName } : {}) },
  });
  cluster.on('error', () => undefined);
  return cluster;
}

/** A client the test owns, with the error listener ioredis needs to not report reconnects as unhandled. */
export function client(port: number): Redis {
  const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  return redis;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
