export { RedlockBackend } from './redlock-backend';
export type { RedlockBackendOptions, RedlockClient } from './options';
