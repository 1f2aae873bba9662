import { Logger, Module, type OnApplicationShutdown } from '@nestjs/common';
import { APP_INTERCEPTOR, DiscoveryModule } from '@nestjs/core';
import { validateRequestOptions } from '../decorators/request-lock-options';
import { LockInterceptor } from '../http/lock.interceptor';
import { REQUEST_LOCK_DEFAULTS } from '../http/locked-handler';
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
      // Building the service validates every option, and init connects and checks every store, so a bad
      // option, a wrong address or a missing table stops the bootstrap instead of failing the first request.
      useFactory: async (options: DistributedLockModuleOptions) => {
        const service = new LockService(options);
        await service.init();
        return service;
      },
      inject: [DISTRIBUTED_LOCK_MODULE_OPTIONS],
    },
    LockedExplorer,
    {
      provide: REQUEST_LOCK_DEFAULTS,
      useFactory: (options: DistributedLockModuleOptions) =>
        validateRequestOptions(options.request, 'DistributedLockModule options') ?? {},
      inject: [DISTRIBUTED_LOCK_MODULE_OPTIONS],
    },
    // Global, so @Locked on a handler needs nothing else: it holds request-keyed locks and answers for all.
    { provide: APP_INTERCEPTOR, useClass: LockInterceptor },
  ],
  exports: [LockService, REQUEST_LOCK_DEFAULTS],
})
export class DistributedLockModule extends ConfigurableDistributedLockModule implements OnApplicationShutdown {
  private readonly logger = new Logger('DistributedLock');
  private readonly logging: Subscription;

  constructor(private readonly locks: LockService) {
    super();
    this.logging = locks.events$.subscribe((event) => {
      if (event.type === 'lost') this.logger.warn(event.error.message);
      if (event.type === 'failed' && event.operation !== 'acquire') this.logger.error(event.error.message);
      if (event.type === 'connection') {
        const message = `Lock backend "${event.backend}" ${event.state}${event.reason ? `: ${event.reason}` : ''}`;
        if (event.state === 'reconnected') this.logger.log(message);
        else this.logger.warn(message);
      }
    });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.locks.close();
    this.logging.unsubscribe();
  }
}
