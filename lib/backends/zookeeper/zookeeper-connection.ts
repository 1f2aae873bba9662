import type * as zookeeper from 'node-zookeeper-client';
import type { Client } from 'node-zookeeper-client';
import type { ConnectionChange } from '../lock-backend';
import { LockBackendError } from '../../core/errors';
import { messages } from '../../core/messages';
import { backendError, closedError, KIND, ZooKeeperReplyError } from './zookeeper-errors';

/** What this folder uses of node-zookeeper-client; index.ts passes the module in (the only file that loads it). */
export type ZooKeeperDriver = Pick<typeof zookeeper, 'createClient' | 'CreateMode' | 'Exception' | 'State'>;

export interface ConnectionSettings {
  readonly driver: ZooKeeperDriver;
  /** A connection string this backend opens and closes itself, or a client the user owns. */
  readonly source: { readonly connectionString: string } | { readonly client: Client };
  readonly sessionTimeout: number;
  /** Cheap path to read for heartbeats (the lock root). */
  readonly heartbeatPath: string;
}

/** One node-zookeeper-client callback: an error or a value. */
export type Reply<T> = (error: unknown, value?: T) => void;

/** A session change as the backend sees it: which session (generation) it concerns. */
export type SessionListener = (change: ConnectionChange, generation: number) => void;

type Phase = 'connecting' | 'connected' | 'suspended';

/**
 * One ZooKeeper session at a time, watched the way Curator watches it:
 * - connected → SUSPENDED when the client drops its connection, or when the server stops answering (a frozen
 *   or partitioned server keeps the TCP connection open, and node-zookeeper-client has no read timeout, so
 *   this class sends its own heartbeats and suspends after 2/3 of the session timeout without a reply);
 * - SUSPENDED → reconnected when the same session answers again;
 * - SUSPENDED → LOST once the session may have expired: `sessionTimeout` after the send time of the last
 *   request that got a reply — the server touched the session after that moment, so it cannot have expired it
 *   earlier. Also LOST at once when the server says EXPIRED.
 * After LOST the next call opens a new client (a node-zookeeper-client never recovers from expiry); a client the
 * user passed in cannot be replaced, so it is used again if it still works and reported otherwise.
 */
export class ZooKeeperConnection {
  private client: Client | undefined;
  private generationNumber = 0;
  private phase: Phase = 'connecting';
  /** Send time of the latest request that got a reply: the session lives at least until this + timeout. */
  private lastProof = 0;
  private heartbeatFrom = -1;
  private monitor: NodeJS.Timeout | undefined;
  private lostTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private userClientExpired = false;
  private readonly listeners = new Set<SessionListener>();
  private readonly connectedWaiters = new Set<() => void>();
  private readonly owned: boolean;
  private readonly detachers = new WeakMap<Client, () => void>();

  constructor(private readonly settings: ConnectionSettings) {
    this.owned = 'connectionString' in settings.source;
  }

  /** Which session calls run on now; it changes when a session is lost. */
  get generation(): number {
    return this.generationNumber;
  }

  get isConnected(): boolean {
    return this.phase === 'connected';
  }

  /** The negotiated session timeout once connected, else the one asked for. */
  get sessionTimeout(): number {
    const negotiated = this.client?.getSessionTimeout();
    return negotiated && negotiated > 0 ? negotiated : this.settings.sessionTimeout;
  }

  /** The session id (ephemeral owner of our nodes), or undefined before the first connection. */
  get sessionId(): bigint | undefined {
    const id = this.client?.getSessionId();
    return id && id.length === 8 ? id.readBigUInt64BE(0) : undefined;
  }

  onChange(listener: SessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Sends one request on the current session. `run` gets the client and a node-zookeeper-client callback.
   * Rejects with ZooKeeperReplyError for an error code, with the signal's reason when it aborts (the reply, if
   * it comes, is dropped), and with LockBackendError when the backend is closed.
   */
  call<T>(operation: string, signal: AbortSignal, run: (client: Client, reply: Reply<T>) => void): Promise<T> {
    if (this.closed) return Promise.reject(closedError(operation));
    signal.throwIfAborted();
    const client = this.open();
    const generation = this.generationNumber;
    const sentAt = Date.now();
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      const reply: Reply<T> = (error, value) => {
        signal.removeEventListener('abort', onAbort);
        if (error) {
          const code = this.codeOf(error);
          // Any answer from the server proves the session alive, errors included — except a lost connection.
          if (code !== undefined && code !== this.settings.driver.Exception.CONNECTION_LOSS) {
            this.proof(sentAt, generation);
          }
          reject(code === undefined ? error : new ZooKeeperReplyError(code, this.nameOf(error), operation));
          return;
        }
        this.proof(sentAt, generation);
        resolve(value as T);
      };
      try {
        run(client, reply);
      } catch (error) {
        signal.removeEventListener('abort', onAbort);
        reject(backendError(operation, error));
      }
    });
  }

  /** Resolves once a session is established (init), or rejects when `signal` aborts first. */
  async waitConnected(signal: AbortSignal): Promise<void> {
    if (this.closed) throw closedError('connect');
    signal.throwIfAborted();
    this.open();
    if (this.phase === 'connected') return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.connectedWaiters.delete(finish);
        reject(signal.reason);
      };
      const finish = (): void => {
        this.connectedWaiters.delete(finish);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.connectedWaiters.add(finish);
    });
    // close() wakes the waiters: an init still connecting must not keep the closed backend busy for its timeout.
    if (this.closed) throw closedError('connect');
  }

  /** Closes a client this backend opened (its ephemeral nodes go with it); a user's client stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTimers();
    for (const wake of [...this.connectedWaiters]) wake();
    const client = this.client;
    this.client = undefined;
    if (client) await this.retire(client);
    this.listeners.clear();
  }

  /** The current client, opening (and connecting) an owned one when there is none. */
  private open(): Client {
    if (this.client) return this.client;
    const source = this.settings.source;
    if (this.userClientExpired) {
      throw new LockBackendError(
        KIND,
        `${messages.backendFailed(KIND, 'reach ZooKeeper')} The ZooKeeper client passed in has expired, and a ` +
          `node-zookeeper-client never recovers from that. Give the backend a connectionString (it then opens a ` +
          `new session by itself) or a new backend with a new client.`,
      );
    }
    const client =
      'client' in source
        ? source.client
        : this.settings.driver.createClient(source.connectionString, {
            sessionTimeout: this.settings.sessionTimeout,
            spinDelay: 200,
            retries: 0,
          });
    this.client = client;
    this.phase = 'connecting';
    const generation = this.generationNumber;
    const listener = (state: zookeeper.State): void => this.onState(client, state, generation);
    client.on('state', listener);
    this.detachers.set(client, () => client.removeListener('state', listener));
    if (this.owned) client.connect();
    else if (client.getState() === this.settings.driver.State.SYNC_CONNECTED) this.markConnected(generation);
    this.startMonitor();
    return client;
  }

  private onState(client: Client, state: zookeeper.State, generation: number): void {
    if (this.closed || client !== this.client || generation !== this.generationNumber) return;
    const { State } = this.settings.driver;
    if (state === State.SYNC_CONNECTED || state === State.CONNECTED_READ_ONLY) this.markConnected(generation);
    else if (state === State.DISCONNECTED) this.suspend('the connection to ZooKeeper dropped');
    else if (state === State.EXPIRED) this.lose('the ZooKeeper session expired');
    else if (state === State.AUTH_FAILED) this.lose('ZooKeeper refused the client credentials');
  }

  private markConnected(generation: number): void {
    this.proof(Date.now(), generation);
  }

  /** A reply sent at `sentAt` arrived: the session lives until at least sentAt + timeout. */
  private proof(sentAt: number, generation: number): void {
    if (this.closed || generation !== this.generationNumber) return;
    if (sentAt > this.lastProof) this.lastProof = sentAt;
    if (this.phase === 'connected') return;
    const was = this.phase;
    this.phase = 'connected';
    if (this.lostTimer) clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
    // A new session's first connection is no `reconnected`: that would claim earlier locks are still ours.
    if (was === 'suspended') this.emit({ state: 'reconnected' }, generation);
    for (const wake of [...this.connectedWaiters]) wake();
  }

  private suspend(reason: string): void {
    if (this.phase !== 'connected') return;
    this.phase = 'suspended';
    const validForMs = Math.max(0, this.lastProof + this.sessionTimeout - Date.now());
    this.emit({ state: 'suspended', reason, validForMs }, this.generationNumber);
    const generation = this.generationNumber;
    this.lostTimer = setTimeout(() => {
      if (generation === this.generationNumber && this.phase !== 'connected') {
        this.lose(`no answer from ZooKeeper within the session timeout (${this.sessionTimeout} ms) after ${reason}`);
      }
    }, validForMs);
    this.lostTimer.unref();
  }

  /** The session is gone (or may be): every lock and place in line on it is lost; the next call gets a new one. */
  private lose(reason: string): void {
    if (this.closed) return;
    const generation = this.generationNumber;
    this.generationNumber++;
    this.phase = 'connecting';
    this.lastProof = 0;
    this.heartbeatFrom = -1;
    if (this.lostTimer) clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
    const client = this.client;
    const { State } = this.settings.driver;
    // An owned client is replaced; a user's client is kept while it can still work (not expired).
    if (client && (this.owned || client.getState() === State.EXPIRED)) {
      this.client = undefined;
      if (!this.owned) this.userClientExpired = true;
      if (this.owned) void this.retire(client);
    }
    this.stopTimers();
    this.emit({ state: 'lost', reason }, generation);
    if (this.client) this.startMonitor();
  }

  /**
   * Heartbeats and the read timeout: every tenth of the session timeout, read the lock root if nothing got a
   * reply for a third of it, and suspend when nothing did for two thirds (as ZooKeeper's own Java client does).
   */
  private startMonitor(): void {
    if (this.monitor) return;
    const tick = Math.max(20, Math.floor(this.settings.sessionTimeout / 10));
    this.monitor = setInterval(() => this.checkLiveness(), tick);
    this.monitor.unref();
  }

  private checkLiveness(): void {
    const client = this.client;
    if (!client || this.closed || this.phase === 'connecting') return;
    const now = Date.now();
    const timeout = this.sessionTimeout;
    if (this.phase === 'connected' && now - this.lastProof > (timeout * 2) / 3) {
      this.suspend('ZooKeeper stopped answering');
      return;
    }
    const idle = now - Math.max(this.lastProof, this.heartbeatFrom);
    if (idle < timeout / 3) return;
    this.heartbeatFrom = now;
    const generation = this.generationNumber;
    client.exists(this.settings.heartbeatPath, (error) => {
      if (!error || this.codeOf(error) !== this.settings.driver.Exception.CONNECTION_LOSS) {
        this.proof(now, generation);
      }
    });
  }

  private stopTimers(): void {
    if (this.monitor) clearInterval(this.monitor);
    this.monitor = undefined;
    if (this.lostTimer) clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
  }

  /**
   * Closes an owned client and waits briefly for its socket to go. A client whose server is frozen never
   * hears the close: its socket is then destroyed so it cannot keep the process alive or reconnect later.
   */
  private async retire(client: Client): Promise<void> {
    this.detachers.get(client)?.();
    if (!this.owned) return;
    const { State } = this.settings.driver;
    const state = client.getState();
    if (state !== State.SYNC_CONNECTED && state !== State.CONNECTED_READ_ONLY) {
      // Nobody to say goodbye to: stop its reconnect attempts now.
      client.close();
      destroySocket(client);
      return;
    }
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.min(2_000, this.settings.sessionTimeout));
      timer.unref();
      client.once('disconnected', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    client.close();
    await done;
    destroySocket(client);
  }

  private emit(change: ConnectionChange, generation: number): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change, generation);
      } catch {
        // A listener's failure must not stop the others from hearing about the session.
      }
    }
  }

  private codeOf(error: unknown): number | undefined {
    return error instanceof this.settings.driver.Exception ? error.getCode() : undefined;
  }

  private nameOf(error: unknown): string {
    return error instanceof this.settings.driver.Exception ? error.getName() : 'an error';
  }
}

/** node-zookeeper-client keeps its socket on an internal connection manager; reached by duck typing. */
function destroySocket(client: Client): void {
  const manager = (client as unknown as { connectionManager?: { socket?: { destroy?: () => void } } })
    .connectionManager;
  manager?.socket?.destroy?.();
}
