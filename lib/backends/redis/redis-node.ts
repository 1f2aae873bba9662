import type { Cluster, Redis } from 'ioredis';
import type { RedlockClient } from './options';
import { scripts, type LuaScript } from './scripts';
import { WriteBatcher } from './write-batcher';

/** Releases kept for a disconnected node at most: beyond, their keys are left to expire. */
const MAX_KEPT_RELEASES = 1024;

/** A call that failed on one node, with what the node (or the lack of an answer) said. */
export class NodeCallError extends Error {}

/**
 * One Redlock node: a client, a label for errors (host:port, never credentials), and script calls that fail at
 * once when the node is not connected — a command would otherwise sit in ioredis's offline queue until the node
 * came back, and a quorum must be decided without it.
 */
export class RedisNode {
  readonly cluster: boolean;
  private readonly plainLabel: string;
  /** A Cluster's node connections this node loads the scripts on whenever they are (re)made. */
  private readonly clusterNodes = new Set<Redis>();
  /** Releases asked for while the client was not connected, sent once it is (see giveBack). */
  private readonly keptReleases: { readonly keys: readonly string[]; readonly args: readonly (string | number)[] }[] =
    [];
  /** Set from 'ready' until the kept releases are sent: calls made meanwhile go after them. */
  private sendingKept: Promise<void> | undefined;
  /** The last call of each owner on each key still unanswered (see run). */
  private readonly lastCalls = new Map<string, Promise<unknown>>();
  /** Gathers script calls made in one tick into few socket writes; a Cluster routes its commands itself. */
  private readonly batcher: WriteBatcher | undefined;

  constructor(
    readonly client: RedlockClient,
    /** Made by the backend from connection options: it closes it. */
    readonly owned: boolean,
  ) {
    this.cluster = client.isCluster;
    this.plainLabel = labelOf(client);
    this.batcher = isCluster(client) ? undefined : WriteBatcher.for(client);
    if (isCluster(client)) {
      // A Cluster's own SCRIPT LOAD reaches one node at random, and every master has a script cache of its own:
      // load on each node connection the Cluster makes, as it makes it (lazily, on learning the slots), so the
      // load is queued ahead of every call routed to that node.
      for (const node of client.nodes('all')) this.watchClusterNode(node);
      client.on('+node', this.watchClusterNode);
    }
    client.on('ready', this.onReady);
  }

  /** Stops listening to the client (the user's client outlives the backend). */
  detach(): void {
    this.client.off('ready', this.onReady);
    this.client.off('+node', this.watchClusterNode);
    for (const node of this.clusterNodes) node.off('ready', this.loadScriptsOnReady);
    this.clusterNodes.clear();
    this.keptReleases.length = 0;
  }

  /**
   * Runs the release script (compare-and-delete by owner, withdrawing its place); when the client is not
   * connected, fails like run() but keeps the release to send once it is back. ioredis sends the commands a
   * dropped connection left unanswered again on the new one — an acquire among them would take the key for an
   * owner that has given up, and nobody would free it before its ttl. It resends them right after emitting
   * 'ready'; the kept releases are sent on the next tick, after them, and calls made in between wait for that,
   * so a later acquire by the same owner (a multi-key round starting over) still comes after its release.
   */
  giveBack(keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    if (this.client.status !== 'ready' && this.keptReleases.length < MAX_KEPT_RELEASES) {
      this.keptReleases.push({ keys, args });
    }
    return this.run(scripts.release, keys, args);
  }

  private readonly onReady = (): void => {
    // A Cluster loads its scripts node by node (watchClusterNode); a plain client on each new connection.
    if (!this.cluster) this.loadScripts();
    if (this.keptReleases.length === 0) return;
    const kept = this.keptReleases.splice(0);
    this.sendingKept = new Promise<void>((resolve) =>
      process.nextTick(() => {
        this.sendingKept = undefined;
        for (const { keys, args } of kept) {
          // Sent now, whatever call of the owner is still unanswered: it is among those resent just before.
          const call = this.send(scripts.release, keys, args);
          this.track(orderId(keys, args), call);
          call.catch(() => undefined);
        }
        resolve();
      }),
    );
  };

  /**
   * Loads every script as soon as a connection is ready — sent before any other command on it, since calls
   * wait for 'ready'. Without this the first EVALSHA of each script after a (re)start would fail with NOSCRIPT
   * and be resent as EVAL after the reply, behind commands sent meanwhile: an undo of a vote could then run
   * before the vote itself. (A node that loses its scripts while connected — SCRIPT FLUSH — is covered by run(),
   * which keeps each owner's calls in order.)
   */
  loadScriptsNow(): void {
    if (isCluster(this.client)) for (const node of this.client.nodes('all')) loadScriptsOn(node);
    else this.loadScripts();
  }

  private readonly loadScripts = (): void => loadScriptsOn(this.client);

  private readonly loadScriptsOnReady = function (this: Redis): void {
    loadScriptsOn(this);
  };

  /** Loads now (queued first on a connection not made yet), and again whenever the node reconnects. */
  private readonly watchClusterNode = (node: Redis): void => {
    if (this.clusterNodes.has(node)) return;
    this.clusterNodes.add(node);
    node.on('ready', this.loadScriptsOnReady);
    // The Cluster drops a node's connection for good once it ends (a new one is made for the node later).
    node.once('end', () => {
      node.off('ready', this.loadScriptsOnReady);
      this.clusterNodes.delete(node);
    });
    loadScriptsOn(node);
  };

  /** host:port, or the masters a Cluster knows right now (it learns them on connecting). */
  get label(): string {
    const client = this.client;
    if (!isCluster(client)) return this.plainLabel;
    const masters = client.nodes('master').map((n) => labelOf(n));
    return masters.length > 0 ? `cluster(${masters.join(',')})` : 'cluster';
  }

  get connected(): boolean {
    return this.client.status === 'ready';
  }

  /**
   * Runs a script. One owner's calls on one key (its attempt, the undo of a failed round, its next attempt, its
   * release) are sent each after the previous one has answered: the EVAL fallback below is sent only when the
   * NOSCRIPT answer arrives, so a call sent behind it on the same connection — say the next attempt, finding
   * its own script cached — would run first, and the undo after it would delete the grant the owner now counts
   * on. Calls of different owners need no order: they are as independent as calls from different processes.
   */
  run(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    if (!script.ordered) return this.send(script, keys, args);
    const id = orderId(keys, args);
    const previous = this.lastCalls.get(id);
    const send = (): Promise<unknown> => this.send(script, keys, args);
    const call = previous === undefined ? send() : previous.then(send, send);
    this.track(id, call);
    return call;
  }

  /** Keeps `call` as the last of its owner on its key until it settles. */
  private track(id: string, call: Promise<unknown>): void {
    this.lastCalls.set(id, call);
    const forget = (): void => {
      if (this.lastCalls.get(id) === call) this.lastCalls.delete(id);
    };
    call.then(forget, forget);
  }

  /** EVALSHA, and EVAL when the node does not have the script cached (first use, or after a restart). */
  private send(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    // Not an async function: on the common path (nothing kept, connected) a call costs one promise, not three.
    if (this.sendingKept) return this.sendingKept.then(() => this.send(script, keys, args));
    if (this.client.status !== 'ready') {
      return Promise.reject(new NodeCallError(`${this.label} is not connected (${this.client.status})`));
    }
    let call: Promise<unknown>;
    try {
      this.batcher?.beforeSend();
      call = this.client.evalsha(script.sha, script.keys, ...keys, ...args);
    } catch (error) {
      // Callers chain .catch on the call: a throw here must reach them as a rejection.
      return Promise.reject(error instanceof Error ? error : new NodeCallError(String(error)));
    }
    return call.catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return this.client.eval(script.source, script.keys, ...keys, ...args);
    });
  }

  /** Connects a client that has not started (lazyConnect) and waits until it is ready, fails, or `signal` aborts. */
  async connect(signal: AbortSignal): Promise<void> {
    const client = this.client;
    if (client.status === 'ready') return;
    if (client.status === 'end') throw new NodeCallError(`${this.label}: the client was closed (quit/disconnect)`);
    await new Promise<void>((resolve, reject) => {
      const done = (error?: unknown): void => {
        client.off('ready', onReady);
        client.off('error', onError);
        client.off('end', onEnd);
        signal.removeEventListener('abort', onAbort);
        if (error === undefined) resolve();
        else reject(error instanceof Error ? error : new NodeCallError(String(error)));
      };
      const onReady = (): void => done();
      const onError = (error: unknown): void =>
        done(new NodeCallError(`${this.label}: ${error instanceof Error ? error.message : String(error)}`));
      const onEnd = (): void => done(new NodeCallError(`${this.label}: connection ended`));
      const onAbort = (): void => done(new NodeCallError(`${this.label}: no connection before the call was cancelled`));
      client.on('ready', onReady);
      client.on('error', onError);
      client.on('end', onEnd);
      signal.addEventListener('abort', onAbort, { once: true });
      if (client.status === 'wait') client.connect().catch(onError);
    });
  }

  /**
   * The server's run id (INFO server), which tells two addresses of one server apart from two servers; undefined
   * for a Cluster, whose nodes each have their own. Fails at once when not connected.
   */
  async serverId(): Promise<string | undefined> {
    if (isCluster(this.client)) return undefined;
    if (this.client.status !== 'ready') {
      throw new NodeCallError(`${this.label} is not connected (${this.client.status})`);
    }
    const info = await this.client.info('server');
    return /^run_id:(\w+)/m.exec(info)?.[1];
  }

  async ping(): Promise<void> {
    if (this.client.status !== 'ready') {
      throw new NodeCallError(`${this.label} is not connected (${this.client.status})`);
    }
    await this.client.ping();
  }
}

function loadScriptsOn(client: RedlockClient): void {
  for (const script of Object.values(scripts)) client.script('LOAD', script.source).catch(() => undefined);
}

/** Lock key and owner (ARGV[1]) of an ordered script call. */
function orderId(keys: readonly string[], args: readonly (string | number)[]): string {
  return `${keys[0]}\u0000${String(args[0])}`;
}

function isCluster(client: RedlockClient): client is Cluster {
  return client.isCluster;
}

function labelOf(client: RedlockClient): string {
  if (isCluster(client)) return 'cluster';
  const { host, port, path } = client.options;
  return path ? path : `${host ?? '127.0.0.1'}:${port ?? 6379}`;
}

/**
 * Closes a client the backend made: QUIT when connected (replies in flight still arrive), else at once — a
 * QUIT to a node that is down would wait in the offline queue for a reconnection that may never come.
 */
export async function closeClient(client: RedlockClient): Promise<void> {
  if (client.status !== 'ready') return client.disconnect();
  const timer = setTimeout(() => client.disconnect(), 1_000);
  timer.unref();
  try {
    await client.quit();
  } catch {
    client.disconnect();
  } finally {
    clearTimeout(timer);
  }
}
