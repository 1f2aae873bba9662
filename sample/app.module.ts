import { Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { DistributedLockModule } from '../lib';
import { sampleLockBackend } from './config/lock-backend';
import { SAMPLE_CONFIG, type SampleConfig } from './config/sample-config';
import { SampleConfigModule } from './config/sample-config.module';
import { SampleDatabase } from './database/sample-database';
import { JobRunsRepository } from './jobs/job-runs.repository';
import { JobsController } from './jobs/jobs.controller';
import { ReportJob } from './jobs/report.job';
import { LockActivity } from './locks/lock-activity';
import { LocksController } from './locks/locks.controller';
import { OrdersController } from './orders/orders.controller';
import { OrdersRepository } from './orders/orders.repository';
import { PaymentGateway } from './orders/payment-gateway';
import { StockController } from './stock/stock.controller';
import { StockLedger } from './stock/stock-ledger';
import { StockRecountWorker } from './stock/stock-recount.worker';

@Module({
  imports: [
    SampleConfigModule,
    DistributedLockModule.forRootAsync({
      // The environment is read at bootstrap, not when this file loads, so tests can set it first.
      imports: [SampleConfigModule],
      inject: [SAMPLE_CONFIG],
      useFactory: (config: SampleConfig) => ({
        // A factory, so the module owns the backend and closes it at shutdown (an instance would stay yours).
        backends: { default: () => sampleLockBackend(config) },
        // A lock outlives a crashed holder by at most ttl; the watchdog keeps it alive while work runs.
        defaults: { ttl: 10_000, waitTimeout: 0, onLocked: 'throw' },
        // Keeps this app's keys apart from other apps sharing the same store.
        keyPrefix: 'sample:',
        // At shutdown, running work gets this long to finish after its lock's signal aborted.
        shutdownTimeout: 3_000,
        // How locked handlers answer: 409 when busy (the default), Retry-After from observed hold times.
        request: { busyStatus: 409, retryAfter: 'estimate' },
      }),
    }),
    ScheduleModule.forRoot(),
  ],
  controllers: [OrdersController, StockController, JobsController, LocksController],
  providers: [
    SampleDatabase,
    OrdersRepository,
    PaymentGateway,
    StockLedger,
    StockRecountWorker,
    JobRunsRepository,
    ReportJob,
    LockActivity,
  ],
})
export class AppModule {}
