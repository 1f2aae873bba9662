import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { LockServiceConfig } from '../core/lock-service';
import type { RequestLockOptions } from '../decorators/request-lock-options';

/**
 * forRoot({ backends, defaults, keyPrefix, shutdownTimeout, operationTimeout, request, clock, isGlobal }) and
 * forRootAsync({ imports, inject, useFactory }).
 */
export interface DistributedLockModuleOptions extends LockServiceConfig {
  /** How locked request handlers answer when busy, skipped or the store is down; per handler in @Locked too. */
  readonly request?: RequestLockOptions;
}

export const {
  ConfigurableModuleClass: ConfigurableDistributedLockModule,
  MODULE_OPTIONS_TOKEN: DISTRIBUTED_LOCK_MODULE_OPTIONS,
  OPTIONS_TYPE: DISTRIBUTED_LOCK_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: DISTRIBUTED_LOCK_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<DistributedLockModuleOptions>({ moduleName: 'DistributedLock' })
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: false }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();
