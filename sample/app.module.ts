import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { DistributedLockModule, MemoryLockBackend } from '../lib';
import { LockExceptionFilter } from './http/lock-exception.filter';
import { ReportJob } from './jobs/report.job';
import { LocksController } from './locks/locks.controller';
import { OrdersController } from './orders/orders.controller';
import { OrdersService } from './orders/orders.service';
import { PaymentGateway } from './orders/payment-gateway';

@Module({
  imports: [
    DistributedLockModule.forRoot({
      // In-process locks: enough for one instance and needs no server. Several instances need a shared
      // store (Redis, SQL, ZooKeeper backends); only this line changes, the decorators stay the same.
      // A factory, so the module owns the backend and closes it at shutdown (an instance would stay yours).
      backends: { default: () => new MemoryLockBackend() },
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
