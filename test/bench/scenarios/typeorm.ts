/**
 * The TypeORM lock backend on its three databases, uncontended and contended:
 * - statements per acquire+release cycle, counted by a TypeORM logger on the DataSource (target: 2 in lease
 *   mode — one upsert, one conditional update);
 * - cycle latency through LockService, per database and mode, next to a bare `SELECT 1` round trip;
 * - hand-off on one contended PostgreSQL key: from the holder's 'released' event to the next holder's
 *   'acquired' event, with LISTEN/NOTIFY and with polling only (target: p50 ≤ 5 ms with LISTEN/NOTIFY).
 *
 * PostgreSQL and MariaDB come from POSTGRES_URL and MYSQL_URL (test/services/sql.sh starts them); without
 * them the scenario is skipped. SQLite runs on a temp file. Each run uses its own table, dropped at the end.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DataSource, type DataSourceOptions, type Logger } from 'typeorm';
import { LockService } from '../../../lib';
import {
  createLockTable,
  TypeOrmLockBackend,
  type TypeOrmLockMode,
  type TypeOrmSessionLock,
} from '../../../lib/backends/typeorm';
import { BenchSkip, caseNamed, formatUs, median, percentile, type BenchCase, type Scenario } from '../harness';

const HANDOFF_TARGET_MS = 5;
const CONTENDERS = 4;

type Database = 'postgres' | 'mariadb' | 'sqlite';

/** Counts the statements a DataSource sends (TypeORM logs every query it runs through its logger). */
class StatementCounter implements Logger {
  count = 0;
  logQuery(): void {
    this.count++;
  }
  logQueryError(): void {}
  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

interface Opened {
  readonly dataSource: DataSource;
  readonly counter: StatementCounter;
}

export const typeormScenario: Scenario = {
  name: 'typeorm',
  title: 'TypeOrmLockBackend: statements per cycle, cycle latency per database, contended hand-off on PostgreSQL',
  tags: ['sql', 'postgres', 'mariadb', 'sqlite'],
  async setup(context) {
    const postgresUrl = process.env['POSTGRES_URL'];
    const mysqlUrl = process.env['MYSQL_URL'];
    if (!postgresUrl || !mysqlUrl) {
      throw new BenchSkip('POSTGRES_URL and MYSQL_URL are not set (source test/services/sql.sh && start_sql)');
    }
    const sqliteDir = mkdtempSync(join(tmpdir(), 'lock-bench-'));
    const tableName = `lk_bench_${randomBytes(4).toString('hex')}`;
    const options: Record<Database, DataSourceOptions> = {
      postgres: { type: 'postgres', url: postgresUrl, poolSize: 20 },
      mariadb: { type: 'mariadb', url: mysqlUrl, poolSize: 20 },
      // WAL: without it every autocommit statement waits for a full fsync of the database file.
      sqlite: { type: 'better-sqlite3', database: join(sqliteDir, 'locks.db'), enableWAL: true },
    };
    const opened: Opened[] = [];
    const services: LockService[] = [];
    const open = async (database: Database): Promise<Opened> => {
      const counter = new StatementCounter();
      const dataSource = await new DataSource({ ...options[database], logger: counter, logging: true }).initialize();
      opened.push({ dataSource, counter });
      return { dataSource, counter };
    };
    const service = (
      dataSource: DataSource,
      mode: TypeOrmLockMode,
      options: { notify?: boolean; sessionLock?: TypeOrmSessionLock } = {},
    ): LockService => {
      const created = new LockService({
        backends: { default: new TypeOrmLockBackend({ dataSource, mode, tableName, ...options }) },
      });
      services.push(created);
      return created;
    };

    const dispose = async (): Promise<void> => {
      for (const s of services) await s.close().catch(() => undefined);
      for (const { dataSource } of opened) {
        await dataSource.query(`DROP TABLE IF EXISTS ${dataSource.driver.escape(tableName)}`).catch(() => undefined);
        await dataSource.destroy().catch(() => undefined);
      }
      rmSync(sqliteDir, { recursive: true, force: true });
    };

    try {
      const databases: Database[] = ['postgres', 'mariadb', 'sqlite'];
      const cases: BenchCase[] = [];
      const statementLines: { text: string; ok?: boolean }[] = [];
      for (const database of databases) {
        const { dataSource, counter } = await open(database);
        await createLockTable(dataSource, { tableName });
        cases.push({ name: `SELECT 1, ${database}`, op: () => dataSource.query('SELECT 1') });
        const variants: Array<{ mode: TypeOrmLockMode; label: string; sessionLock?: TypeOrmSessionLock }> = [
          { mode: 'lease', label: 'lease' },
        ];
        if (database !== 'sqlite') {
          variants.push({ mode: 'session', label: 'session row', sessionLock: 'row' });
          variants.push({ mode: 'session', label: 'session advisory', sessionLock: 'advisory' });
        }
        for (const { mode, label, sessionLock } of variants) {
          const locks = service(dataSource, mode, sessionLock ? { sessionLock } : {});
          await locks.isLocked('warm-up');
          const key = `cycle:${label}`;
          const cycle = async (): Promise<void> => {
            const lock = await locks.acquire(key, { autoExtend: false });
            await lock.release();
          };
          // Counted outside the timed runs, after one warm-up cycle.
          await cycle();
          const cycles = context.quick ? 20 : 200;
          const before = counter.count;
          for (let i = 0; i < cycles; i++) await cycle();
          const perCycle = (counter.count - before) / cycles;
          statementLines.push({
            text: `statements per uncontended acquire+release, ${database} ${label}: ${perCycle.toFixed(2)}${mode === 'lease' ? ' (target 2)' : ''}`,
            ...(mode === 'lease' ? { ok: perCycle <= 2 } : {}),
          });
          cases.push({ name: `acquire+release cycle, ${database} ${label}`, op: cycle });
        }
      }

      // Hand-off: CONTENDERS apps (each its own DataSource) take one hot key in turn, holding it ~1 ms. A
      // hand-off is the gap from the end of one holder's work to the start of the next holder's, when the next
      // is another app: release, wake-up and acquire together. The releaser coming straight back is a re-take.
      const handoffs = new Map<string, { samples: number[]; retakes: number }>();
      for (const notify of [true, false]) {
        const name = `contended hand-off, postgres lease, ${notify ? 'LISTEN/NOTIFY' : 'polling'}`;
        const stats = { samples: [] as number[], retakes: 0 };
        handoffs.set(name, stats);
        const apps: LockService[] = [];
        for (let i = 0; i < CONTENDERS; i++)
          apps.push(service((await open('postgres')).dataSource, 'lease', { notify }));
        let lastWorker: number | undefined;
        let lastEnd = 0;
        const work = async (worker: number): Promise<void> => {
          const start = performance.now();
          if (lastWorker === worker) stats.retakes++;
          else if (lastWorker !== undefined) stats.samples.push(start - lastEnd);
          await new Promise((resolve) => setTimeout(resolve, 1));
          lastWorker = worker;
          lastEnd = performance.now();
        };
        const key = `handoff:${notify}`;
        cases.push({
          name,
          concurrency: CONTENDERS,
          op: (worker) => apps[worker]!.using(key, () => work(worker), { ttl: 10_000, waitTimeout: 10_000 }),
          onBatch: () => {
            lastWorker = undefined;
          },
        });
      }

      return {
        baseline: 'SELECT 1, postgres',
        cases,
        summarize(result) {
          const lines: { text: string; ok?: boolean }[] = [...statementLines];
          for (const database of databases) {
            const rtt = caseNamed(result, `SELECT 1, ${database}`).median.p50Us;
            const lease = caseNamed(result, `acquire+release cycle, ${database} lease`).median.p50Us;
            lines.push({
              text: `${database}: lease cycle p50 ${formatUs(lease)} µs = ${(lease / rtt).toFixed(1)}× a SELECT 1 round trip (${formatUs(rtt)} µs)`,
            });
          }
          for (const [name, { samples, retakes }] of handoffs) {
            if (samples.length === 0) continue;
            const p50 = median(samples);
            const notify = name.includes('NOTIFY');
            const share = (100 * retakes) / (retakes + samples.length);
            lines.push({
              text:
                `${name}: hand-off to another app p50 ${p50.toFixed(2)} ms, p99 ${percentile(samples, 0.99).toFixed(1)} ms ` +
                `over ${samples.length} hand-offs, releaser re-took ${share.toFixed(0)} %` +
                (notify ? ` (target p50 ≤ ${HANDOFF_TARGET_MS} ms)` : ''),
              ...(notify ? { ok: p50 <= HANDOFF_TARGET_MS } : {}),
            });
          }
          return lines;
        },
        dispose,
      };
    } catch (error) {
      await dispose();
      throw error;
    }
  },
};
