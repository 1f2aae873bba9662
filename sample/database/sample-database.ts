import { Inject, Injectable, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { SAMPLE_CONFIG, type SampleConfig } from '../config/sample-config';
import { SCHEMA } from './schema';

/**
 * The sample's business data (orders, payments, the stock ledger, job runs) in one SQLite file that every
 * instance on this machine shares, whatever LOCK_BACKEND says: so "paid once" and "ran once" can be checked
 * across instances, not just within one.
 */
@Injectable()
export class SampleDatabase implements OnModuleInit, OnApplicationShutdown {
  private readonly dataSource: DataSource;

  constructor(@Inject(SAMPLE_CONFIG) config: SampleConfig) {
    this.dataSource = new DataSource({
      type: 'better-sqlite3',
      database: config.databaseFile,
      // Another instance may be writing: wait for its write lock rather than fail with SQLITE_BUSY.
      timeout: 5_000,
      // WAL, switched on here rather than with enableWAL: see switchToWal.
      prepareDatabase: switchToWal,
    });
  }

  async onModuleInit(): Promise<void> {
    await this.dataSource.initialize();
    // IF NOT EXISTS: two instances starting together both run this.
    for (const statement of SCHEMA) await this.dataSource.query(statement);
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }

  query<Row>(sql: string, parameters: readonly unknown[] = []): Promise<Row[]> {
    return this.dataSource.query<Row[]>(sql, [...parameters]);
  }

  /** Runs an INSERT/UPDATE and says how many rows it changed (the guard conditions live in the WHERE). */
  async change(sql: string, parameters: readonly unknown[] = []): Promise<number> {
    const runner = this.dataSource.createQueryRunner();
    try {
      const result = await runner.query(sql, [...parameters], true);
      return result.affected ?? 0;
    } finally {
      await runner.release();
    }
  }
}

/**
 * Two instances starting at once both switch the file to WAL, and SQLite refuses one of them at once
 * (SQLITE_BUSY, without waiting `timeout`, as waiting could deadlock): that instance asks again a moment later,
 * on the same connection.
 */
async function switchToWal(db: { pragma(source: string): unknown }): Promise<void> {
  for (let refusals = 0; ; refusals++) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code !== 'string' || !code.startsWith('SQLITE_BUSY') || refusals === 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 90));
    }
  }
}
