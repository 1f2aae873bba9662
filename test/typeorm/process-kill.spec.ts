import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { DataSource } from 'typeorm';
import { type Lock, LockService } from '../../lib';
import { TypeOrmLockBackend, type TypeOrmLockMode, type TypeOrmSessionLock } from '../../lib/backends/typeorm';
import { type Database, killConnections, openDataSource, sqliteFile, TestTable } from './sql-fixture';

/** Starts holder.ts in its own process and resolves once it holds `key`, with its fencing token. */
async function startHolder(
  database: Database,
  mode: TypeOrmLockMode,
  table: string,
  key: string,
  ttl: number,
  sessionLock: TypeOrmSessionLock | undefined,
): Promise<{ child: ChildProcess; token: bigint }> {
  const child = spawn(process.execPath, [join(__dirname, 'run-ts.js'), join(__dirname, 'holder.ts')], {
    env: {
      ...process.env,
      HOLDER_DATABASE: database,
      HOLDER_MODE: mode,
      HOLDER_TABLE: table,
      HOLDER_KEY: key,
      HOLDER_TTL: String(ttl),
      LOCK_SQLITE_FILE: sqliteFile(),
      ...(sessionLock ? { HOLDER_SESSION_LOCK: sessionLock } : {}),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const token = await new Promise<bigint>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const held = /held (\d+)/.exec(out);
      if (held) resolve(BigInt(held[1]!));
    });
    child.once('exit', (code) => reject(new Error(`the holder exited (${code}) before taking the lock`)));
  });
  return { child, token };
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Asks every `every` ms until the key is free; returns how long that took. */
async function timeUntilFree(locks: LockService, key: string, limitMs: number, every = 10): Promise<number> {
  const start = Date.now();
  while (await locks.isLocked(key)) {
    if (Date.now() - start > limitMs) throw new Error(`${key} still locked after ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
  return Date.now() - start;
}

const cases: ReadonlyArray<[Database, TypeOrmLockMode, TypeOrmSessionLock | undefined]> = [
  ['postgres', 'lease', undefined],
  ['postgres', 'session', 'row'],
  ['postgres', 'session', 'advisory'],
  ['mariadb', 'lease', undefined],
  ['mariadb', 'session', 'row'],
  ['mariadb', 'session', 'advisory'],
  ['sqlite', 'lease', undefined],
];

describe.each(cases)('a holder killed with SIGKILL (%s, %s mode, %s)', (database, mode, sessionLock) => {
  let table: TestTable;
  let dataSource: DataSource;
  let locks: LockService;

  beforeAll(async () => {
    table = await TestTable.create(database, `kill_${mode}`);
    dataSource = await openDataSource(database);
    locks = new LockService({
      backends: { default: new TypeOrmLockBackend({ dataSource, mode, sessionLock, tableName: table.name }) },
    });
  });
  afterAll(async () => {
    await locks.close();
    await dataSource.destroy();
    await table.drop();
  });

  it(
    mode === 'lease' ? 'leaves the key locked until its ttl runs out' : 'frees the key at once',
    async () => {
      const ttl = 1_500;
      const { child, token } = await startHolder(database, mode, table.name, 'job', ttl, sessionLock);
      const heldSince = Date.now();
      expect(await locks.isLocked('job')).toBe(true);
      await kill(child);
      const killedAt = Date.now();
      const waited = await timeUntilFree(locks, 'job', ttl * 3);
      if (mode === 'lease') {
        // Still held right after the kill, and free once the ttl (counted from the grant) has passed.
        expect(waited).toBeGreaterThan(0);
        expect(Date.now() - heldSince).toBeGreaterThanOrEqual(ttl * 0.9);
        expect(killedAt - heldSince + waited).toBeLessThanOrEqual(ttl * 1.1 + 100);
      } else {
        expect(waited).toBeLessThan(ttl / 2);
      }
      const next = await locks.acquire('job');
      expect(next.fencingToken).toBeGreaterThan(token);
      await next.release();
    },
    20_000,
  );
});

const sessionCases: ReadonlyArray<['postgres' | 'mariadb', TypeOrmSessionLock]> = [
  ['postgres', 'row'],
  ['postgres', 'advisory'],
  ['mariadb', 'row'],
  ['mariadb', 'advisory'],
];

describe.each(sessionCases)('session mode, connection ended by the server (%s, %s)', (database, sessionLock) => {
  it('reports the lock lost (signal, event, onLost) and frees the key at once', async () => {
    const table = await TestTable.create(database, 'terminate');
    const holderSource = await openDataSource(database, `lock-terminate-${process.pid}`);
    const holder = new LockService({
      backends: {
        default: new TypeOrmLockBackend({
          dataSource: holderSource,
          mode: 'session',
          sessionLock,
          tableName: table.name,
        }),
      },
    });
    const otherSource = await openDataSource(database);
    const other = new LockService({
      backends: {
        default: new TypeOrmLockBackend({
          dataSource: otherSource,
          mode: 'session',
          sessionLock,
          tableName: table.name,
        }),
      },
    });
    try {
      const events: string[] = [];
      holder.events$.subscribe((event) => events.push(event.type));
      const lost: string[] = [];
      let held!: (lock: Lock) => void;
      const entered = new Promise<Lock>((resolve) => (held = resolve));
      const work = holder.using(
        'report',
        (lock) => {
          held(lock);
          return new Promise<void>((resolve) => lock.signal.addEventListener('abort', () => resolve()));
        },
        { onLost: (context) => lost.push(context.error.message) },
      );
      const lock = await entered;
      expect(await other.tryAcquire('report')).toBeNull();
      // pg_terminate_backend / KILL CONNECTION on every connection of the holder's pool.
      await killConnections(table.admin, holderSource, database);
      await work;
      expect(lock.signal.aborted).toBe(true);
      expect(lock.signal.reason).toMatchObject({ code: 'LOCK_LOST' });
      expect(events).toContain('lost');
      expect(lost).toHaveLength(1);
      expect(lost[0]).toMatch(/connection/);
      const next = await other.tryAcquire('report');
      expect(next).not.toBeNull();
      expect(next!.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next!.release();
    } finally {
      await holder.close().catch(() => undefined);
      await other.close();
      await Promise.all([holderSource.destroy().catch(() => undefined), otherSource.destroy()]);
      await table.drop();
    }
  });
});
