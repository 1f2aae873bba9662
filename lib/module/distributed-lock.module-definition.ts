import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { LockServiceConfig } from '../core/lock-service';

/** forRoot({ backends, defaults, keyPrefix, clock, isGlobal }) and forRootAsync({ imports, inject, useFactory }). */
export type DistributedLockModuleOptions = LockServiceConfig;

export const {
  ConfigurableModuleClass: ConfigurableDistributedLockModule,
  MODULE_OPTIONS_TOKEN: DISTRIBUTED_LOCK_MODULE_OPTIONS,
  OPTIONS_TYPE: DISTRIBUTED_LOCK_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: DISTRIBUTED_LOCK_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<DistributedLockModuleOptions>({ moduleName: 'DistributedLock' })
  .setClassMethodName('forRoot')
  .setExtras({ isGlobal: false }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();
