import type { Stat } from 'node-zookeeper-client';
import type {
  AcquireOutcome,
  AcquireRequest,
  ConnectionChange,
  LeaseRef,
  LockBackend,
  LockBackendCapabilities,
  StoreCall,
  WaitForRelease,
} from '../lock-backend';
import { NEVER_ABORTED } from '../../core/never-aborted';
import { BackgroundWork } from './background-work';
import { DeletionWatches } from './deletion-watches';
import { handOver, pause, settleWithin } from './waiting';
import { lifetimeController } from './lifetime';
import { EmptyParents } from './empty-parents';
import { encodeKey } from './key-encoding';
import { childPath, contenders, isCreatedWith, protectedPrefix } from './lock-recipe';
import { ZooKeeperConnection, type ZooKeeperDriver } from './zookeeper-connection';
import { backendError, closedError, KIND, ZooKeeperReplyError } from './zookeeper-errors';
import { resolveOptions, type ResolvedZooKeeperOptions, type ZooKeeperLockBackendOptions } from './zookeeper-options';

/** Our node for one (key, owner): queued in line, or holding the lock. */
interface Claim {
  readonly parent: string;
  readonly name: string;
  readonly path: string;
  /** The session it was created on: it lives exactly as long as that session. */
  readonly generation: number;
  held: boolean;
  onLost?: (reason: string) => void;
  /** The node just ahead of ours at the last listing: what waitForRelease watches. */
  predecessor?: string;
}

/** ephemeralOwner of a container node (Curator's lock parents): Long.MIN_VALUE. */
const CONTAINER_OWNER = 0x8000000000000000n;
/** How long close() waits for the deletes of our nodes on a user's client before it returns (they go on). */
const CLOSE_WAIT_MS = 1_000;

/**
 * The lock on ZooKeeper, as Apache Curator's InterProcessMutex takes it (see lock-recipe.ts): an
 * EPHEMERAL_SEQUENTIAL node per contender under `<rootPath>/<encoded key>`, the lowest sequence holds, each
 * waiter watches only its predecessor. A lock lives as long as this backend's ZooKeeper session: a crashed
 * holder frees it after the session timeout, with no ttl (capabilities: sessionBound, not expiring).
 *
 * Fencing token: the parent's `pzxid` (the zxid of the last change to its children) read by the listing that
 * found our node first. That listing happens after the previous holder's node was deleted, so it is at least
 * the zxid of that delete, which is above anything the previous holder's own listing could see. zxids rise
 * strictly across the whole ensemble's history, so tokens rise per key across owners, sessions, processes and
 * restarts — and it costs no request beyond the listing the recipe makes anyway.
 *
 * Not the public class: index.ts (the only module that loads node-zookeeper-client) subclasses it with the driver.
 */
export class ZooKeeperLockBackendBase implements LockBackend {
  readonly kind = KIND;
  readonly capabilities: LockBackendCapabilities = {
    expiring: false,
    sessionBound: true,
    nativeWait: true,
    queued: true,
  };
  private readonly options: ResolvedZooKeeperOptions;
  private readonly connection: ZooKeeperConnection;
  private readonly watches: DeletionWatches;
  private readonly emptyParents: EmptyParents;
  private readonly claims = new Map<string, Claim>();
  private readonly containers = new Set<string>();
  private readonly connectionListeners = new Set<(change: ConnectionChange) => void>();
  /** Ends on close: cancels waits, and frees callers still waiting for a create. */
  private readonly lifetime = lifetimeController();
  /** Creates in flight and deletes of nodes nobody waits for: on a user's client they outlive close() a while. */
  private readonly background = new BackgroundWork();
  /** The session is the user's: it outlives this backend, and so would every node we leave on it. */
  private readonly userClient: boolean;
  private initialized = false;
  private closed = false;

  constructor(
    options: ZooKeeperLockBackendOptions,
    private readonly driver: ZooKeeperDriver,
  ) {
    this.options = resolveOptions(options);
    this.userClient = 'client' in this.options.source;
    this.connection = new ZooKeeperConnection({
      driver,
      source: this.options.source,
      sessionTimeout: this.options.sessionTimeout,
      heartbeatPath: this.options.rootPath,
    });
    this.watches = new DeletionWatches(this.connection, driver.Exception.NO_NODE);
    this.emptyParents = new EmptyParents(this.connection, this.options.emptyParentDelay);
    this.connection.onChange((change, generation) => this.onSessionChange(change, generation));
  }

  /** The znode path Curator's InterProcessMutex must be given to share the lock on `key` (keyPrefix included). */
  lockPath(key: string): string {
    return childPath(this.options.rootPath, encodeKey(key));
  }

  async init(signal: AbortSignal = NEVER_ABORTED): Promise<void> {
    this.assertOpen('connect to ZooKeeper');
    if (this.initialized && this.connection.isConnected) return;
    const bounded = AbortSignal.any([signal, AbortSignal.timeout(this.options.connectTimeout)]);
    try {
      await this.connection.waitConnected(bounded);
      await this.ensurePath(this.options.rootPath, bounded);
      this.initialized = true;
    } catch (error) {
      const where =
        'connectionString' in this.options.source
          ? `at ${this.options.source.connectionString}`
          : 'through the given client';
      throw backendError(
        'connect to ZooKeeper',
        signal.aborted ? signal.reason : error,
        `No ZooKeeper session could be opened ${where} within ${this.options.connectTimeout} ms, or ` +
          `${this.options.rootPath} could not be created: check the address, that the ensemble has a quorum, and ` +
          `the ACLs on the root path.`,
      );
    }
  }

  async ping(signal: AbortSignal): Promise<void> {
    try {
      await this.connection.call<Stat>('answer a ping', signal, (client, reply) =>
        client.exists(this.options.rootPath, (error, stat) => reply(error, stat)),
      );
    } catch (error) {
      throw backendError('answer a ping', error);
    }
  }

  async acquire(request: AcquireRequest): Promise<AcquireOutcome> {
    this.assertOpen('acquire a lock');
    const id = claimId(request);
    const parent = this.lockPath(request.key);
    this.emptyParents.keep(parent);
    let claim = this.currentClaim(id);
    try {
      for (let attempt = 0; ; attempt++) {
        if (!claim) {
          claim = await this.enqueue(parent, request.signal);
          this.claims.set(id, claim);
          // close() came while the create was in flight and did not see this claim: it is ours to delete.
          this.assertOpen('acquire a lock');
        }
        const { children, stat } = await this.list(parent, request.signal);
        // close() deleted our node meanwhile (it took every claim): never report a lock that is gone.
        this.assertOpen('acquire a lock');
        const line = contenders(children);
        const place = line.indexOf(claim.name);
        if (place < 0 || claim.generation !== this.connection.generation) {
          // Our node is gone (its session ended, or someone deleted it), or it was made on a session we count as
          // lost — which, on a user's client, may live on: delete it then. Queue again, once or twice.
          this.claims.delete(id);
          if (place >= 0) this.removeInBackground(claim);
          claim = undefined;
          if (attempt < 2) continue;
          throw new Error('the lock node it had just created disappeared again and again');
        }
        if (place === 0) {
          claim.held = true;
          claim.onLost = request.onLost;
          return { acquired: true, fencingToken: stat!.pzxid.readBigUInt64BE(0) };
        }
        claim.predecessor = line[place - 1];
        if (request.keepPlace) return { acquired: false, queued: true };
        this.claims.delete(id);
        const leaving = claim;
        claim = undefined;
        await this.removeNode(leaving, request.signal).catch((error: unknown) => {
          // No longer in the claims, so the catch below would not see it: a node left here stays in line for
          // as long as our session lives, and everyone behind it waits.
          this.removeInBackground(leaving);
          throw error;
        });
        return { acquired: false };
      }
    } catch (error) {
      if (claim && (this.claims.get(id) === claim || this.closed)) {
        this.claims.delete(id);
        this.removeInBackground(claim);
      }
      throw backendError('acquire a lock', error);
    }
  }

  async release(lease: LeaseRef, call: StoreCall): Promise<boolean> {
    this.assertOpen('release a lock');
    const id = claimId(lease);
    const claim = this.currentClaim(id);
    if (!claim) return false;
    // Ours to delete from now on: a close() meanwhile must not delete it too and make this answer "not held".
    this.claims.delete(id);
    try {
      const removed = await this.removeNode(claim, call.signal);
      return removed && claim.held;
    } catch (error) {
      // Nobody may take the key while our node stays: keep trying after the caller gave up.
      this.removeInBackground(claim);
      throw backendError(
        'release a lock',
        error,
        'The backend keeps deleting its lock node in the background; at the latest it goes with the ZooKeeper ' +
          'session. Check that the ZooKeeper ensemble is up and reachable from this process.',
      );
    }
  }

  /** Session-bound: nothing to prolong; true while our node exists on our live session. */
  async extend(lease: LeaseRef, _ttl: number, call: StoreCall): Promise<boolean> {
    this.assertOpen('extend a lock');
    const claim = this.currentClaim(claimId(lease));
    if (!claim?.held) return false;
    try {
      const stat = await this.connection.call<Stat | null>('check a lock', call.signal, (client, reply) =>
        client.exists(claim.path, (error, found) => reply(error, found ?? null)),
      );
      return stat !== null && stat.ephemeralOwner.readBigUInt64BE(0) === this.connection.sessionId;
    } catch (error) {
      throw backendError('check a lock', error);
    }
  }

  async waitForRelease(wait: WaitForRelease): Promise<void> {
    if (this.closed || wait.signal.aborted) return;
    const parent = this.lockPath(wait.key);
    const claim = this.currentClaim(claimId(wait));
    try {
      let target = claim?.predecessor;
      if (claim) claim.predecessor = undefined;
      if (!target) {
        const line = contenders((await this.list(parent, wait.signal)).children);
        // A queued waiter watches the node just ahead of it; one without a place watches the holder.
        const place = claim ? line.indexOf(claim.name) : 0;
        target = claim ? (place > 0 ? line[place - 1] : undefined) : line[0];
      }
      if (target === undefined) return;
      await this.watches.untilDeleted(childPath(parent, target), wait.timeoutMs, wait.signal);
    } catch {
      // The store could not be asked: wait out the pause, then the core's next acquire reports the failure.
      if (!wait.signal.aborted) await pause(wait.timeoutMs, wait.signal);
    }
  }

  async isLocked(key: string, call: StoreCall): Promise<boolean> {
    this.assertOpen('read a lock');
    try {
      return contenders((await this.list(this.lockPath(key), call.signal)).children).length > 0;
    } catch (error) {
      throw backendError('read a lock', error);
    }
  }

  watchConnection(listener: (change: ConnectionChange) => void): () => void {
    this.connectionListeners.add(listener);
    return () => this.connectionListeners.delete(listener);
  }

  /**
   * An owned client's session is closed, and the server deletes our nodes with it. A user's client lives on, so
   * our nodes on it (held, queued, or made by a create still in flight) are deleted here; close() waits for that
   * up to CLOSE_WAIT_MS (a server that does not answer must not hang shutdown), and the deletes go on for at
   * most twice the session timeout afterwards.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    this.watches.close();
    this.connectionListeners.clear();
    const claims = [...this.claims.values()];
    this.claims.clear();
    if (!this.userClient) {
      this.background.stop();
      await this.emptyParents.flush(1_000);
      await this.connection.close();
      return;
    }
    for (const claim of claims) this.removeInBackground(claim);
    await settleWithin(CLOSE_WAIT_MS, this.finishOnUserClient());
  }

  /** Deletes what we left on the user's session (bounded), then its empty parents, then lets go of the client. */
  private async finishOnUserClient(): Promise<void> {
    try {
      await this.background.settle(AbortSignal.timeout(2 * this.connection.sessionTimeout));
      this.background.stop();
      await this.emptyParents.flush(1_000);
    } finally {
      await this.connection.close();
    }
  }

  /**
   * Creates our EPHEMERAL_SEQUENTIAL node in Curator's protected form. If the reply to the create is lost with
   * the connection, the node may exist all the same: it is found again by its uuid rather than leaked. A parent
   * that does not exist (new key, or a container the server just reaped) is created and the create retried.
   * When the caller gives up first (or close() frees it), the create is still seen through, and its node deleted.
   */
  private async enqueue(parent: string, signal: AbortSignal): Promise<Claim> {
    const { uuid, prefix } = protectedPrefix();
    // Not the lifetime signal: a create that close() cut short could still have made its node on a user's session.
    const work = this.background.signal;
    // A node lives on the session of the create that made it: a retry after a session loss makes it on the new
    // one, and tagging it with the old would leave it undeleted there (owned sessions' leftovers are skipped).
    const creating = (async (): Promise<{ path: string; generation: number }> => {
      for (let attempt = 0; ; attempt++) {
        const generation = this.connection.generation;
        try {
          const path = await this.connection.call<string>('create a lock node', work, (client, reply) =>
            client.create(childPath(parent, prefix), this.driver.CreateMode.EPHEMERAL_SEQUENTIAL, (error, made) =>
              reply(error, made),
            ),
          );
          return { path, generation };
        } catch (error) {
          if (attempt >= 3 || !(error instanceof ZooKeeperReplyError)) throw error;
          if (error.code === this.driver.Exception.NO_NODE) {
            await this.ensurePath(parent, work);
          } else if (error.code === this.driver.Exception.CONNECTION_LOSS) {
            // An owned session counted as lost is closed with its nodes; a user's client may still carry it.
            if (this.connection.generation !== generation && !this.userClient) throw error;
            const found = (await this.list(parent, work)).children.find((name) => isCreatedWith(name, uuid));
            if (found) return { path: childPath(parent, found), generation };
          } else {
            throw error;
          }
        }
      }
    })();
    const handed = handOver(creating, AbortSignal.any([signal, this.lifetime.signal]), (orphan) =>
      this.removeInBackground(orphan),
    );
    this.background.track(creating);
    const { path, generation } = await handed;
    const name = path.slice(path.lastIndexOf('/') + 1);
    return { parent, name, path, generation, held: false };
  }

  /** A parent's children and its stat; none when the parent does not exist. Notes container parents. */
  private async list(parent: string, signal: AbortSignal): Promise<{ children: string[]; stat?: Stat }> {
    try {
      const [children, stat] = await this.connection.call<[string[], Stat]>(
        'list the contenders for a lock',
        signal,
        (client, reply) => client.getChildren(parent, (error, names, found) => reply(error, [names, found])),
      );
      if (stat.ephemeralOwner.readBigUInt64BE(0) === CONTAINER_OWNER) this.containers.add(parent);
      return { children, stat };
    } catch (error) {
      if (error instanceof ZooKeeperReplyError && error.code === this.driver.Exception.NO_NODE) return { children: [] };
      throw error;
    }
  }

  /** Deletes our node (compare-and-delete: its name carries our uuid); false if it was gone already. */
  private async removeNode(claim: Pick<Claim, 'path' | 'parent'>, signal: AbortSignal): Promise<boolean> {
    try {
      await this.connection.call<void>('delete a lock node', signal, (client, reply) =>
        client.remove(claim.path, -1, (error) => reply(error)),
      );
      return true;
    } catch (error) {
      if (error instanceof ZooKeeperReplyError && error.code === this.driver.Exception.NO_NODE) return false;
      throw error;
    } finally {
      if (!this.containers.has(claim.parent)) this.emptyParents.later(claim.parent);
    }
  }

  /**
   * Deletes a node nobody waits for any more, retrying a few times. An owned client's node dies with its session,
   * so retries stop when that session is lost or closed; a user's client may carry the session on, so they go on
   * until the background work ends (close() lets it run for a bounded time).
   */
  private removeInBackground(claim: { readonly path: string; readonly generation: number }): void {
    const parent = claim.path.slice(0, claim.path.lastIndexOf('/'));
    const work = this.background.signal;
    const attempt = async (): Promise<void> => {
      for (let i = 0; i < 10 && !work.aborted; i++) {
        if (!this.userClient && claim.generation !== this.connection.generation) return;
        try {
          await this.removeNode(
            { path: claim.path, parent },
            AbortSignal.any([work, AbortSignal.timeout(this.options.sessionTimeout)]),
          );
          return;
        } catch {
          await pause(Math.min(1_000, this.options.sessionTimeout / 3), work);
        }
      }
    };
    this.background.track(attempt());
  }

  private async ensurePath(path: string, signal: AbortSignal): Promise<void> {
    await this.connection.call<string>('create a lock parent', signal, (client, reply) =>
      client.mkdirp(path, (error, created) => reply(error, created)),
    );
  }

  /** Our claim for (key, owner), if it lives on the current session; one on a lost session is dropped. */
  private currentClaim(id: string): Claim | undefined {
    const claim = this.claims.get(id);
    if (claim && claim.generation !== this.connection.generation) {
      this.claims.delete(id);
      // A user's client may still carry that session, and the node on it.
      if (this.userClient) this.removeInBackground(claim);
      return undefined;
    }
    return claim;
  }

  private onSessionChange(change: ConnectionChange, generation: number): void {
    if (change.state === 'lost') {
      for (const [id, claim] of [...this.claims]) {
        if (claim.generation !== generation) continue;
        this.claims.delete(id);
        // A user's client may still hold the old session (we could only presume it lost): delete what was ours.
        if (this.userClient) this.removeInBackground(claim);
        if (claim.held) claim.onLost?.(change.reason);
      }
      this.watches.wakeAll();
    }
    for (const listener of [...this.connectionListeners]) {
      try {
        listener(change);
      } catch {
        // One listener's failure must not keep the others from hearing.
      }
    }
  }

  private assertOpen(operation: string): void {
    if (this.closed) throw closedError(operation);
  }
}

function claimId(lease: LeaseRef): string {
  return `${lease.owner}\u0000${lease.key}`;
}
