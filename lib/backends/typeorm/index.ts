export { TypeOrmLockBackend } from './typeorm-lock-backend';
export type { TypeOrmLockBackendOptions, TypeOrmLockMode, TypeOrmSessionLock } from './options';
export {
  CreateDistributedLockTable1764460800000,
  createLockTable,
  DEFAULT_LOCK_TABLE,
  lockTableMigration,
  type LockTableOptions,
} from './lock-table';
