/**
 * A separate process that takes one lock and holds it until it is killed: the "holder that dies" of
 * process-kill.spec.ts. Prints the fencing token once the lock is held. Settings come from the environment.
 */
import { LockService } from '../../lib';
import { TypeOrmLockBackend, type TypeOrmLockMode, type TypeOrmSessionLock } from '../../lib/backends/typeorm';
import { type Database, openDataSource } from './sql-fixture';

async function main(): Promise<void> {
  const env = (name: string): string => {
    const value = process.env[name];
    if (!value) throw new Error(`holder: ${name} is not set`);
    return value;
  };
  const dataSource = await openDataSource(env('HOLDER_DATABASE') as Database, 'lock-holder');
  const backend = new TypeOrmLockBackend({
    dataSource,
    mode: env('HOLDER_MODE') as TypeOrmLockMode,
    tableName: env('HOLDER_TABLE'),
    sessionLock: process.env['HOLDER_SESSION_LOCK'] as TypeOrmSessionLock | undefined,
  });
  await backend.init(new AbortController().signal);
  const locks = new LockService({ backends: { default: backend } });
  const lock = await locks.acquire(env('HOLDER_KEY'), { ttl: Number(env('HOLDER_TTL')), autoExtend: false });
  process.stdout.write(`held ${lock.fencingToken}\n`);
  setInterval(() => undefined, 60_000);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
