export type {
  AcquireOutcome,
  AcquireRequest,
  AcquiredOutcome,
  BusyOutcome,
  ConnectionChange,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  StoreCall,
  WaitForRelease,
} from './backends/lock-backend';
export { MemoryLockBackend, type MemoryLockBackendOptions } from './backends/memory';
export type { LockBackendProvider } from './core/backend-registry';
export { ManualClock, systemClock, type ClockTimer, type LockClock } from './core/clock';
export {
  LockBackendClosedError,
  LockBackendError,
  LockConfigurationError,
  LockError,
  LockLostError,
  LockUnavailableError,
  type LockBackendNodeFailure,
} from './core/errors';
export type {
  LockAcquiredEvent,
  LockConnectionEvent,
  LockEvent,
  LockExtendedEvent,
  LockFailedEvent,
  LockLostEvent,
  LockReleasedEvent,
} from './core/events';
export { MAX_KEY_LENGTH, MAX_KEY_PREFIX_LENGTH } from './core/key';
export type { Lock } from './core/lock';
export { LockContext } from './core/lock-context';
export {
  DEFAULT_OPERATION_TIMEOUT,
  DEFAULT_SHUTDOWN_TIMEOUT,
  LockService,
  type BackendHealth,
  type HeldLockInfo,
  type LockServiceConfig,
} from './core/lock-service';
export {
  DEFAULT_LOCK_OPTIONS,
  MAX_DURATION_MS,
  MIN_TTL_MS,
  type LockCallOptions,
  type LockedContext,
  type LockedOptions,
  type LockOptions,
  type LostContext,
  type OnLockedPolicy,
  type OnLostPolicy,
  type OnSuspendedPolicy,
  type RetryOptions,
} from './core/options';
export { requestKey, type LockKey, type LockKeyFunction, type RequestKeyFunction } from './decorators/key-template';
export { Locked, type LockedMethodOptions } from './decorators/locked.decorator';
export type { RequestLockOptions } from './decorators/request-lock-options';
export { LockExceptionFilter } from './http/lock-exception.filter';
export { LockGuard } from './http/lock.guard';
export { LockInterceptor } from './http/lock.interceptor';
export { REQUEST_LOCK_DEFAULTS } from './http/locked-handler';
export { REQUEST_ERROR_CODES } from './http/request-failures';
export { DistributedLockModule } from './module/distributed-lock.module';
export type { DistributedLockModuleOptions } from './module/distributed-lock.module-definition';
