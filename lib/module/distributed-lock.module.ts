import { Logger, Module, type OnApplicationShutdown } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import type { Subscription } from 'rxjs';
import { LockService } from '../core/lock-service';
import {
  ConfigurableDistributedLockModule,
  DISTRIBUTED_LOCK_MODULE_OPTIONS,
  type DistributedLockModuleOptions,
} from './distributed-lock.module-definition';
import { LockedExplorer } from './locked-explorer';

/**
 * Registers the lock backends and LockService, binds @Locked methods at bootstrap, and at shutdown
 * releases every lock the app still holds and closes the backends.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    {
      provide: LockService,
      // Building the service validates every option, so configuration errors stop the bootstrap.
      useFactory: (options: DistributedLockModuleOptions) => new LockService(options),
      inject: [DISTRIBUTED_LOCK_MODULE_OPTIONS],
    },
    LockedExplorer,
  ],
  exports: [LockService],
})
export class DistributedLockModule extends ConfigurableDistributedLockModule implements OnApplicationShutdown {
  private readonly logger = new Logger('DistributedLock');
  private readonly logging: Subscription;

  constructor(private readonly locks: LockService) {
    super();
    this.logging = locks.events$.subscribe((event) => {
      if (event.type === 'lost') this.logger.warn(event.error.message);
      if (event.type === 'failed' && event.operation !== 'acquire') this.logger.error(event.error.message);
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.locks.close();
    this.logging.unsubscribe();
  }
}
