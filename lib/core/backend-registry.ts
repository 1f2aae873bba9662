import type { ConnectionChange, LockBackend } from '../backends/lock-backend';
import type { LockClock } from './clock';
import { LockBackendError, LockConfigurationError, LockError } from './errors';
import { messages } from './messages';
import { boundedCall, CallControl } from './store-call';

const METHODS = ['acquire', 'release', 'extend', 'waitForRelease', 'isLocked', 'close'] as const;

/**
 * A backend instance stays the caller's: it is never closed for them, so one instance can serve several apps
 * (or test modules) in turn. A factory is called once per LockService, at its init (application bootstrap),
 * and may be async; the service then owns the backend and closes it at shutdown — the form for backends that
 * open their own connections.
 */
export type LockBackendProvider = LockBackend | (() => LockBackend | Promise<LockBackend>);

/** Told of every connection change of one registered backend, with the names it is registered under. */
export type ConnectionListener = (names: readonly string[], change: ConnectionChange) => void;

let nextServiceId = 0;

/**
 * The named backends of one LockService: checks the `backends` option at construction (at least one, the
 * default among them, each a LockBackend or a factory of one), makes the factories' backends and inits them
 * all at `init()`, listens to their connection state, and closes the ones it made.
 */
export class BackendRegistry {
  private readonly providers: ReadonlyMap<string, LockBackendProvider>;
  private readonly byName = new Map<string, LockBackend>();
  private readonly scopes = new Map<string, string>();
  private owned: LockBackend[] = [];
  private unwatch: Array<() => void> = [];

  constructor(backends: unknown, defaultName: string) {
    if (typeof backends !== 'object' || backends === null || Object.keys(backends).length === 0) {
      throw new LockConfigurationError('backends', messages.module.noBackends());
    }
    const names = Object.keys(backends);
    if (!names.includes(defaultName)) {
      throw new LockConfigurationError('defaults.backend', messages.option.unknownBackend(defaultName, names));
    }
    const providers = new Map<string, LockBackendProvider>();
    const serviceId = nextServiceId++;
    for (const [name, provider] of Object.entries(backends as Record<string, unknown>)) {
      if (typeof provider !== 'function' && !isBackend(provider)) {
        throw new LockConfigurationError(`backends.${name}`, messages.module.notABackend(name));
      }
      providers.set(name, provider as LockBackendProvider);
      if (typeof provider !== 'function') this.byName.set(name, provider as LockBackend);
      this.scopes.set(name, `${serviceId}:${name}`);
    }
    this.providers = providers;
  }

  get names(): readonly string[] {
    return [...this.providers.keys()];
  }

  has(name: string): boolean {
    return this.providers.has(name);
  }

  /** The backend registered as `name`; only after init() for backends made by factories. */
  get(name: string): LockBackend | undefined {
    return this.byName.get(name);
  }

  /** One service's view of one store: what reentrancy is scoped to. */
  scopeOf(name: string): string {
    return this.scopes.get(name)!;
  }

  /**
   * Makes the factories' backends, then inits every backend (connect, check the schema) and starts listening to
   * their connection state. On any failure, what was made is closed again and the error says which backend.
   */
  async init(clock: LockClock, timeoutMs: number, onConnection: ConnectionListener): Promise<void> {
    try {
      for (const [name, provider] of this.providers) {
        if (typeof provider !== 'function') continue;
        const backend = await makeBackend(name, provider);
        this.owned.push(backend);
        this.byName.set(name, backend);
      }
      for (const [backend, names] of this.distinctBackends()) {
        if (backend.init) {
          await boundedCall(
            { backend: names[0]!, operation: 'start', clock, timeoutMs, control: new CallControl() },
            (call) => backend.init!(call.signal),
          ).catch((error: unknown) => {
            throw error instanceof LockConfigurationError
              ? error
              : new LockBackendError(names[0]!, messages.initFailed(names[0]!), [], { cause: error });
          });
        }
        const stop = backend.watchConnection?.((change) => onConnection(names, change));
        if (stop) this.unwatch.push(stop);
      }
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  /** Stops listening and closes the backends this registry made from factories (instances stay open). */
  async close(): Promise<void> {
    for (const stop of this.unwatch.splice(0)) stop();
    const owned = this.owned.splice(0);
    for (const backend of owned) for (const [name, b] of this.byName) if (b === backend) this.byName.delete(name);
    await Promise.allSettled(owned.map((backend) => backend.close()));
  }

  /** Each backend instance once, with every name it is registered under. */
  distinctBackends(): Map<LockBackend, string[]> {
    const distinct = new Map<LockBackend, string[]>();
    for (const [name, backend] of this.byName) distinct.set(backend, [...(distinct.get(backend) ?? []), name]);
    return distinct;
  }
}

async function makeBackend(name: string, factory: () => unknown): Promise<LockBackend> {
  let backend: unknown;
  try {
    backend = await factory();
  } catch (error) {
    if (error instanceof LockError) throw error;
    throw new LockBackendError(name, messages.factoryFailed(name), [], { cause: error });
  }
  if (!isBackend(backend)) throw new LockConfigurationError(`backends.${name}`, messages.module.notABackend(name));
  return backend;
}

function isBackend(value: unknown): value is LockBackend {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<Record<(typeof METHODS)[number], unknown>> & { capabilities?: unknown };
  return METHODS.every((m) => typeof candidate[m] === 'function') && typeof candidate.capabilities === 'object';
}
