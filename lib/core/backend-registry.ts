import type { LockBackend } from '../backends/lock-backend';
import { LockConfigurationError } from './errors';
import { messages } from './messages';

const METHODS = ['acquire', 'release', 'extend', 'waitForRelease', 'isLocked', 'close'] as const;

/**
 * A backend instance stays the caller's: it is never closed for them, so one instance can serve several apps
 * (or test modules) in turn. A factory is called once per LockService, which then owns the backend and
 * closes it at shutdown — the form for backends that open their own connections.
 */
export type LockBackendProvider = LockBackend | (() => LockBackend);

export interface RegisteredBackends {
  readonly byName: ReadonlyMap<string, LockBackend>;
  /** The backends made from factories: closed with the service. */
  readonly owned: readonly LockBackend[];
}

/**
 * Checks the `backends` option at bootstrap — at least one, the default among them, each a LockBackend or a
 * factory of one — and creates the factories' backends. If one fails, those already created are closed.
 */
export function registerBackends(backends: unknown, defaultName: string): RegisteredBackends {
  if (typeof backends !== 'object' || backends === null || Object.keys(backends).length === 0) {
    throw new LockConfigurationError('backends', messages.module.noBackends());
  }
  const names = Object.keys(backends);
  if (!names.includes(defaultName)) {
    throw new LockConfigurationError('defaults.backend', messages.option.unknownBackend(defaultName, names));
  }
  const byName = new Map<string, LockBackend>();
  const owned: LockBackend[] = [];
  try {
    for (const [name, provider] of Object.entries(backends)) {
      const backend: unknown = typeof provider === 'function' ? (provider as () => unknown)() : provider;
      if (!isBackend(backend)) throw new LockConfigurationError(`backends.${name}`, messages.module.notABackend(name));
      byName.set(name, backend);
      if (backend !== provider) owned.push(backend);
    }
  } catch (error) {
    for (const backend of owned) void backend.close().catch(() => undefined);
    throw error;
  }
  return { byName, owned };
}

function isBackend(value: unknown): value is LockBackend {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<Record<(typeof METHODS)[number], unknown>> & { capabilities?: unknown };
  return METHODS.every((m) => typeof candidate[m] === 'function') && typeof candidate.capabilities === 'object';
}
