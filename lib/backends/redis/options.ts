import type { Cluster, Redis, RedisOptions } from 'ioredis';
import { LockConfigurationError } from '../../core/errors';
import { MAX_DURATION_MS } from '../../core/options';

/** An ioredis client: one Redis master, or a whole Redis Cluster, which counts as one node. */
export type RedlockClient = Redis | Cluster;

export interface RedlockBackendOptions {
  /**
   * Your ioredis clients, one per independent Redis master (or one `Cluster`). One node is plain
   * single-instance locking; N nodes run Redlock with a quorum of ⌊N/2⌋+1. You close these clients.
   */
  readonly clients?: readonly RedlockClient[];
  /**
   * Connection options (or `redis://` URLs) of masters the backend connects to itself; it closes them in
   * `close()`. Counted after `clients`.
   */
  readonly nodes?: readonly (RedisOptions | string)[];
  /** ms one node may take to answer one call before it counts as failed. Default 500. */
  readonly nodeTimeout?: number;
  /**
   * ms the first waiter in line gets to take a key that was freed for it before its place lapses and the next
   * waiter's turn comes (a waiter that died, or gave up without withdrawing). Default 100.
   */
  readonly handoffTimeout?: number;
  /**
   * ms a waiter's place in line lasts without a new attempt. The core retries at least every `retry.maxDelay`,
   * which must stay below this. Default 60000.
   */
  readonly placeTtl?: number;
}

export interface ResolvedRedlockOptions {
  readonly clients: readonly RedlockClient[];
  readonly nodes: readonly (RedisOptions | string)[];
  readonly nodeTimeout: number;
  readonly handoffTimeout: number;
  readonly placeTtl: number;
}

const KNOWN = ['clients', 'nodes', 'nodeTimeout', 'handoffTimeout', 'placeTtl'] as const;
const WHERE = 'RedlockBackend options';

/** Checks everything before any connection is made; throws LockConfigurationError naming the option at fault. */
export function resolveOptions(options: RedlockBackendOptions): ResolvedRedlockOptions {
  if (typeof options !== 'object' || options === null) {
    throw new LockConfigurationError('options', `${WHERE} must be an object, e.g. { clients: [redis] }.`);
  }
  for (const name of Object.keys(options)) {
    if (!(KNOWN as readonly string[]).includes(name)) {
      throw new LockConfigurationError(name, `${WHERE} have no option "${name}". Known: ${KNOWN.join(', ')}.`);
    }
  }
  const clients = list(options.clients, 'clients');
  const nodes = list(options.nodes, 'nodes');
  clients.forEach((client, i) => {
    if (!looksLikeIoredis(client)) {
      throw new LockConfigurationError(`clients[${i}]`, `${WHERE}: clients[${i}] is not an ioredis Redis or Cluster.`);
    }
  });
  if (new Set(clients).size !== clients.length) {
    throw new LockConfigurationError(
      'clients',
      `${WHERE}: the same client is listed twice; each Redlock node must be a separate Redis master.`,
    );
  }
  nodes.forEach((node, i) => {
    if (typeof node !== 'string' && (typeof node !== 'object' || node === null)) {
      throw new LockConfigurationError(`nodes[${i}]`, `${WHERE}: nodes[${i}] must be ioredis options or a URL.`);
    }
  });
  if (clients.length + nodes.length === 0) {
    throw new LockConfigurationError(
      'clients',
      `${WHERE} need at least one Redis node: { clients: [new Redis()] } or { nodes: [{ host, port }] }.`,
    );
  }
  return {
    clients,
    nodes,
    nodeTimeout: positive(options.nodeTimeout, 'nodeTimeout', 500),
    handoffTimeout: positive(options.handoffTimeout, 'handoffTimeout', 100),
    placeTtl: positive(options.placeTtl, 'placeTtl', 60_000),
  };
}

function list<T>(value: readonly T[] | undefined, name: string): readonly T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new LockConfigurationError(name, `${WHERE}: "${name}" must be an array.`);
  return value;
}

/** Node runs a timer of 2^31 ms or more after 1 ms: a longer nodeTimeout would fail every call at once. */
function positive(value: number | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0 || value > MAX_DURATION_MS) {
    throw new LockConfigurationError(
      name,
      `${WHERE}: "${name}" must be a whole number of ms from 1 to ${MAX_DURATION_MS}, got ${String(value)}.`,
    );
  }
  return value;
}

/**
 * Each Redlock node must be a server of its own: one listed twice would count twice towards the quorum, so its
 * failure alone (a restart that empties it) could hand a held key to a second owner. Compares the addresses the
 * clients were given (ioredis has parsed URLs and defaults by now); aliases of one server (another host name,
 * a proxy) are caught by init, which compares the servers' run ids.
 */
export function assertDistinctAddresses(clients: readonly RedlockClient[], fromNodes: number): void {
  const seen = new Map<string, number>();
  clients.forEach((client, i) => {
    const address = addressOf(client);
    if (address === undefined) return;
    const first = seen.get(address);
    if (first === undefined) return void seen.set(address, i);
    const option = i >= clients.length - fromNodes ? 'nodes' : 'clients';
    throw new LockConfigurationError(
      option,
      `${WHERE}: ${address} is listed twice (${nameOf(first, clients.length, fromNodes)} and ` +
        `${nameOf(i, clients.length, fromNodes)}); each Redlock node must be a separate Redis master.`,
    );
  });
}

/** host:port or socket path of a plain client; undefined where it does not say (Cluster, Sentinel). */
function addressOf(client: RedlockClient): string | undefined {
  if (client.isCluster) return undefined;
  const { host, port, path, sentinels } = (client as Redis).options;
  if (sentinels && sentinels.length > 0) return undefined;
  return path ? path : `${host ?? 'localhost'}:${port ?? 6379}`;
}

function nameOf(index: number, total: number, fromNodes: number): string {
  const firstNode = total - fromNodes;
  return index >= firstNode ? `nodes[${index - firstNode}]` : `clients[${index}]`;
}

function looksLikeIoredis(value: unknown): value is RedlockClient {
  if (typeof value !== 'object' || value === null) return false;
  const client = value as Partial<Record<'evalsha' | 'duplicate' | 'status', unknown>>;
  return (
    typeof client.evalsha === 'function' && typeof client.duplicate === 'function' && typeof client.status === 'string'
  );
}
