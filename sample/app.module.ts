import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DistributedLockModule, type LockBackend, MemoryLockBackend } from '../lib';
import { TypeOrmLockBackend } from '../lib/backends/typeorm';
import { LockExceptionFilter } from './http/lock-exception.filter';
import { ReportJob } from './jobs/report.job';
import { LocksController } from './locks/locks.controller';
import { OrdersController } from './orders/orders.controller';
import { OrdersService } from './orders/orders.service';
import { PaymentGateway } from './orders/payment-gateway';

/**
 * The sample's store, by LOCK_BACKEND:
 * - `sqlite` (default): a row per key in one SQLite file through TypeORM. No server to run, and every instance
 *   of the sample on this machine shares the locks (start two on different PORTs and try it).
 * - `memory`: locks in this process only; enough for a single instance.
 */
function sampleBackend(): LockBackend {
  const choice = process.env.LOCK_BACKEND ?? 'sqlite';
  if (choice === 'memory') return new MemoryLockBackend();
  if (choice !== 'sqlite') throw new Error(`LOCK_BACKEND must be 'sqlite' or 'memory', got ${JSON.stringify(choice)}`);
  return new TypeOrmLockBackend({
    connection: {
      type: 'better-sqlite3',
      database: process.env.LOCK_SQLITE_FILE ?? join(tmpdir(), 'nestjs-distributed-lock-sample.sqlite'),
      // WAL: instances read while another writes, and a statement does not wait for a full file sync.
      enableWAL: true,
    },
    // The sample has no migrations: the backend creates its table at bootstrap.
    createTable: true,
  });
}

@Module({
  imports: [
    DistributedLockModule.forRoot({
      // Only this line changes between stores; the decorators stay the same. A factory, so the module owns the
      // backend and closes it at shutdown (an instance would stay yours), and reads LOCK_BACKEND at bootstrap.
      backends: { default: sampleBackend },
      // A lock outlives a crashed holder by at most ttl; the watchdog keeps it alive while work runs.
      defaults: { ttl: 10_000, waitTimeout: 0, onLocked: 'throw' },
      // Keeps this app's keys apart from other apps sharing the same store.
      keyPrefix: 'sample:',
      // At shutdown, running work gets this long to finish after its lock's signal aborted.
      shutdownTimeout: 3_000,
    }),
    ScheduleModule.forRoot(),
  ],
  controllers: [OrdersController, LocksController],
  providers: [
    OrdersService,
    PaymentGateway,
    ReportJob,
    // Registered as a provider (not in main.ts) so tests that build AppModule get the same HTTP mapping.
    { provide: APP_FILTER, useClass: LockExceptionFilter },
  ],
})
export class AppModule {}
