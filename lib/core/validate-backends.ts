import type { LockBackend } from '../backends/lock-backend';
import { LockConfigurationError } from './errors';
import { messages } from './messages';

const METHODS = ['acquire', 'release', 'extend', 'waitForRelease', 'isLocked', 'close'] as const;

/** Checks the `backends` option at bootstrap: at least one, each shaped like a LockBackend. */
export function validateBackends(backends: unknown): ReadonlyMap<string, LockBackend> {
  if (typeof backends !== 'object' || backends === null || Object.keys(backends).length === 0) {
    throw new LockConfigurationError('backends', messages.module.noBackends());
  }
  const valid = new Map<string, LockBackend>();
  for (const [name, backend] of Object.entries(backends)) {
    const candidate = backend as Partial<Record<(typeof METHODS)[number], unknown>> & { capabilities?: unknown };
    const shaped =
      typeof backend === 'object' &&
      backend !== null &&
      METHODS.every((m) => typeof candidate[m] === 'function') &&
      typeof candidate.capabilities === 'object';
    if (!shaped) throw new LockConfigurationError(`backends.${name}`, messages.module.notABackend(name));
    valid.set(name, backend as LockBackend);
  }
  return valid;
}
