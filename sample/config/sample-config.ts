import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';

export type LockBackendChoice = 'sqlite' | 'memory' | 'postgres' | 'zookeeper' | 'redis';

const BACKEND_CHOICES: readonly LockBackendChoice[] = ['sqlite', 'memory', 'postgres', 'zookeeper', 'redis'];

/** Everything the sample reads from its environment, read once at bootstrap so a typo fails the start. */
export interface SampleConfig {
  /** Where the locks live (LOCK_BACKEND). */
  readonly lockBackend: LockBackendChoice;
  /** The SQLite file holding the orders, the ledger and (with LOCK_BACKEND=sqlite) the locks. */
  readonly databaseFile: string;
  /** LOCK_POSTGRES_URL, needed by LOCK_BACKEND=postgres. */
  readonly postgresUrl: string | undefined;
  /** LOCK_ZOOKEEPER, `host:port[,host:port…]`, needed by LOCK_BACKEND=zookeeper. */
  readonly zooKeeperConnection: string | undefined;
  /** LOCK_REDIS, `redis://host:port[,redis://host:port…]`: one node, or several independent masters (Redlock). */
  readonly redisNodes: readonly string[];
  /** Names this process in job runs and in GET /locks, so two instances on one machine tell apart. */
  readonly instance: string;
}

export const SAMPLE_CONFIG = Symbol('SampleConfig');

export function readSampleConfig(env: NodeJS.ProcessEnv = process.env): SampleConfig {
  const lockBackend = env.LOCK_BACKEND ?? 'sqlite';
  if (!isBackendChoice(lockBackend)) {
    throw new Error(`LOCK_BACKEND must be one of ${BACKEND_CHOICES.join(', ')}; got ${JSON.stringify(lockBackend)}.`);
  }
  if (lockBackend === 'postgres' && !env.LOCK_POSTGRES_URL) {
    throw new Error('LOCK_BACKEND=postgres needs LOCK_POSTGRES_URL, e.g. postgres://user:pass@localhost:5432/db.');
  }
  if (lockBackend === 'zookeeper' && !env.LOCK_ZOOKEEPER) {
    throw new Error('LOCK_BACKEND=zookeeper needs LOCK_ZOOKEEPER, e.g. localhost:2181.');
  }
  const redisNodes = (env.LOCK_REDIS ?? '')
    .split(',')
    .map((node) => node.trim())
    .filter(Boolean);
  if (lockBackend === 'redis' && redisNodes.length === 0) {
    throw new Error(
      'LOCK_BACKEND=redis needs LOCK_REDIS, e.g. redis://localhost:6379 (or several masters, comma-separated).',
    );
  }
  return {
    lockBackend,
    databaseFile: env.SAMPLE_DB_FILE ?? join(tmpdir(), 'nestjs-distributed-lock-sample.sqlite'),
    postgresUrl: env.LOCK_POSTGRES_URL,
    zooKeeperConnection: env.LOCK_ZOOKEEPER,
    redisNodes,
    instance: env.SAMPLE_INSTANCE ?? `${hostname()}:${process.pid}`,
  };
}

function isBackendChoice(value: string): value is LockBackendChoice {
  return (BACKEND_CHOICES as readonly string[]).includes(value);
}
