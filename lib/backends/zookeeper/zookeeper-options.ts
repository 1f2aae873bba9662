import type { Client } from 'node-zookeeper-client';
import { LockConfigurationError } from '../../core/errors';

export interface ZooKeeperLockBackendOptions {
  /**
   * `host:port[,host:port…][/chroot]`: the backend opens its own client on it, replaces it when its session
   * expires, and closes it on close(). Give this or `client`, not both.
   */
  readonly connectionString?: string;
  /**
   * A node-zookeeper-client you own and connect yourself; close() leaves it open. A node-zookeeper-client never
   * recovers from an expired session, so after one the backend fails every call until you give it a new
   * backend: prefer `connectionString`.
   */
  readonly client?: Client;
  /** Parent of every lock path: a lock on key K lives at `<rootPath>/<encoded K>`. Default `/locks`. */
  readonly rootPath?: string;
  /**
   * Session timeout asked of the server, in ms (it clamps it to its own min/max; default 2×–20× its tickTime).
   * A holder that dies frees its locks this long after it last spoke to ZooKeeper: this, not `ttl`, is how
   * long a crashed holder blocks others. Default 30 000.
   */
  readonly sessionTimeout?: number;
  /** How long init() waits for the first session before it fails, in ms. Default 15 000. */
  readonly connectTimeout?: number;
  /**
   * How long a lock parent this backend created stays after its last lock node went, before the backend
   * deletes it if still empty, in ms (node-zookeeper-client cannot create container nodes, which the server
   * would reap itself). Parents Curator created are containers and are left to the server. Default 60 000.
   */
  readonly emptyParentDelay?: number;
}

export interface ResolvedZooKeeperOptions {
  readonly source: { readonly connectionString: string } | { readonly client: Client };
  readonly rootPath: string;
  readonly sessionTimeout: number;
  readonly connectTimeout: number;
  readonly emptyParentDelay: number;
}

const KNOWN = ['connectionString', 'client', 'rootPath', 'sessionTimeout', 'connectTimeout', 'emptyParentDelay'];
const WHERE = 'ZooKeeperLockBackend options';

/** Checks every option before anything connects; throws LockConfigurationError naming the option at fault. */
export function resolveOptions(options: ZooKeeperLockBackendOptions): ResolvedZooKeeperOptions {
  if (typeof options !== 'object' || options === null) {
    throw new LockConfigurationError('options', `${WHERE} must be an object.`);
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN.includes(name)) {
      throw new LockConfigurationError(name, `${WHERE} has no option "${name}". Known options: ${KNOWN.join(', ')}.`);
    }
  }
  return {
    source: source(options),
    rootPath: rootPath(options.rootPath ?? '/locks'),
    sessionTimeout: milliseconds('sessionTimeout', options.sessionTimeout ?? 30_000, 1),
    connectTimeout: milliseconds('connectTimeout', options.connectTimeout ?? 15_000, 1),
    emptyParentDelay: milliseconds('emptyParentDelay', options.emptyParentDelay ?? 60_000, 0),
  };
}

function source(options: ZooKeeperLockBackendOptions): ResolvedZooKeeperOptions['source'] {
  const { connectionString, client } = options;
  if ((connectionString === undefined) === (client === undefined)) {
    throw new LockConfigurationError(
      'connectionString',
      `${WHERE} need exactly one of "connectionString" (the backend opens its own client) or "client" (yours).`,
    );
  }
  if (client !== undefined) {
    if (typeof client !== 'object' || client === null || typeof client.getChildren !== 'function') {
      throw new LockConfigurationError('client', `Option "client" must be a node-zookeeper-client Client.`);
    }
    return { client };
  }
  if (typeof connectionString !== 'string' || !/^[^\s/,]+(,[^\s/,]+)*(\/\S*)?$/.test(connectionString)) {
    throw new LockConfigurationError(
      'connectionString',
      `Option "connectionString" must look like "host:port[,host:port…][/chroot]", got ${describe(connectionString)}.`,
    );
  }
  return { connectionString };
}

/** An absolute znode path, not the root itself, with no empty, `.`, `..` or `zookeeper` segment. */
function rootPath(value: unknown): string {
  const fail = (why: string): never => {
    throw new LockConfigurationError('rootPath', `Option "rootPath" ${why}, got ${describe(value)}.`);
  };
  if (typeof value !== 'string') return fail('must be a string');
  if (!value.startsWith('/') || value === '/' || value.endsWith('/')) {
    return fail('must be an absolute znode path like "/locks" (not "/" and without a trailing "/")');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]/.test(value)) {
    return fail('must not contain control or reserved characters');
  }
  for (const segment of value.slice(1).split('/')) {
    if (segment === '' || segment === '.' || segment === '..') return fail('must not contain empty, "." or ".." parts');
  }
  if (value === '/zookeeper' || value.startsWith('/zookeeper/')) return fail('must not be under /zookeeper');
  return value;
}

function milliseconds(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new LockConfigurationError(
      name,
      `Option "${name}" must be a whole number of milliseconds ≥ ${min}, got ${describe(value)}.`,
    );
  }
  return value;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}
