export type {
  AcquireOutcome,
  AcquireRequest,
  AcquiredOutcome,
  BusyOutcome,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  WaitForRelease,
} from './backends/lock-backend';
export { MemoryLockBackend, type MemoryLockBackendOptions } from './backends/memory';
export type { LockBackendProvider } from './core/backend-registry';
export { ManualClock, systemClock, type ClockTimer, type LockClock } from './core/clock';
export {
  LockBackendError,
  LockConfigurationError,
  LockError,
  LockLostError,
  LockUnavailableError,
  type LockBackendNodeFailure,
} from './core/errors';
export type {
  LockAcquiredEvent,
  LockEvent,
  LockExtendedEvent,
  LockFailedEvent,
  LockLostEvent,
  LockReleasedEvent,
} from './core/events';
export { MAX_KEY_LENGTH, MAX_KEY_PREFIX_LENGTH } from './core/key';
export type { Lock } from './core/lock';
export { LockContext } from './core/lock-context';
export { LockService, type LockServiceConfig } from './core/lock-service';
export {
  DEFAULT_LOCK_OPTIONS,
  type LockCallOptions,
  type LockedContext,
  type LockedOptions,
  type LockOptions,
  type LostContext,
  type OnLockedPolicy,
  type OnLostPolicy,
  type RetryOptions,
} from './core/options';
export type { LockKey, LockKeyFunction } from './decorators/key-template';
export { Locked } from './decorators/locked.decorator';
export { DistributedLockModule } from './module/distributed-lock.module';
export type { DistributedLockModuleOptions } from './module/distributed-lock.module-definition';
