import type { DataSource } from 'typeorm';
import { LockService } from '../../lib';
import { TypeOrmLockBackend, type TypeOrmLockMode, type TypeOrmSessionLock } from '../../lib/backends/typeorm';
import { type Database, openDataSource, TestTable } from './sql-fixture';

/** TORTURE_ROUNDS=200 for a long run; the default run stays short. */
const ROUNDS = Number(process.env['TORTURE_ROUNDS'] ?? 5);
const APPS = 3;
const CONTENDERS_PER_APP = 6;
const KEYS = ['hot-a', 'hot-b'];

const cases: ReadonlyArray<[Database, TypeOrmLockMode, TypeOrmSessionLock | undefined]> = [
  ['postgres', 'lease', undefined],
  ['postgres', 'session', 'row'],
  ['postgres', 'session', 'advisory'],
  ['mariadb', 'lease', undefined],
  ['mariadb', 'session', 'row'],
  ['mariadb', 'session', 'advisory'],
  ['sqlite', 'lease', undefined],
];

describe.each(cases)('concurrency torture (%s, %s mode, %s)', (database, mode, sessionLock) => {
  it(`${APPS} apps x ${CONTENDERS_PER_APP} contenders x ${ROUNDS} rounds on ${KEYS.length} keys: no overlap, tokens rise`, async () => {
    const table = await TestTable.create(database, `torture_${mode}`);
    const sources: DataSource[] = [];
    const apps: LockService[] = [];
    for (let i = 0; i < APPS; i++) {
      const dataSource = await openDataSource(database);
      sources.push(dataSource);
      apps.push(
        new LockService({
          backends: { default: new TypeOrmLockBackend({ dataSource, mode, sessionLock, tableName: table.name }) },
        }),
      );
    }
    const inside = new Map<string, number>(KEYS.map((k) => [k, 0]));
    const tokens = new Map<string, bigint[]>(KEYS.map((k) => [k, []]));
    let overlaps = 0;
    const contender = async (locks: LockService, index: number): Promise<void> => {
      for (let round = 0; round < ROUNDS; round++) {
        const key = KEYS[(index + round) % KEYS.length]!;
        await locks.using(
          key,
          async (lock) => {
            inside.set(key, inside.get(key)! + 1);
            if (inside.get(key) !== 1) overlaps++;
            tokens.get(key)!.push(lock.fencingToken);
            await new Promise((resolve) => setTimeout(resolve, 1));
            inside.set(key, inside.get(key)! - 1);
          },
          { ttl: 10_000, waitTimeout: 60_000, retry: { delay: 2, maxDelay: 20 } },
        );
      }
    };
    try {
      await Promise.all(
        apps.flatMap((locks, app) =>
          Array.from({ length: CONTENDERS_PER_APP }, (_, i) => contender(locks, app * CONTENDERS_PER_APP + i)),
        ),
      );
      expect(overlaps).toBe(0);
      const granted = [...tokens.values()].reduce((n, list) => n + list.length, 0);
      expect(granted).toBe(APPS * CONTENDERS_PER_APP * ROUNDS);
      for (const list of tokens.values()) {
        for (let i = 1; i < list.length; i++) expect(list[i]!).toBeGreaterThan(list[i - 1]!);
      }
    } finally {
      for (const app of apps) await app.close();
      for (const dataSource of sources) await dataSource.destroy();
      await table.drop();
    }
  }, 120_000);
});
