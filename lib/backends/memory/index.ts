export { MemoryLockBackend, type MemoryLockBackendOptions } from './memory-lock-backend';
