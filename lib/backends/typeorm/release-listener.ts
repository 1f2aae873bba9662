import type { DataSource, QueryRunner } from 'typeorm';
import { connectUnlessAborted } from './sql-runner';

/** What a pg Client emits for NOTIFY and when its socket dies. */
interface NotifyingConnection {
  on(event: 'notification', listener: (message: { channel: string; payload?: string }) => void): unknown;
  on(event: 'error' | 'end', listener: () => void): unknown;
  removeListener(event: string, listener: (...args: never[]) => void): unknown;
}

interface Listening {
  readonly runner: QueryRunner;
  readonly detach: () => void;
}

/** How long the LISTEN connection stays open after the last waiter left, so bursts of waits reuse it. */
const IDLE_RELEASE_MS = 5_000;

/**
 * PostgreSQL LISTEN on the channel that releases NOTIFY, with the lock row's id as payload. One pool
 * connection listens while anyone waits (and IDLE_RELEASE_MS after); it is given back when idle. When it
 * breaks, every waiter is woken (to look again) and the next wait listens anew; if LISTEN fails, waiters
 * simply fall back to their polling timeout.
 */
export class ReleaseListener {
  private readonly waiters = new Map<string, Set<() => void>>();
  private listening?: Promise<Listening | undefined>;
  private idleTimer?: NodeJS.Timeout;
  private closed = false;
  /** Ends a wait for a pool connection to LISTEN on, at close: the pool may be exhausted by held locks. */
  private readonly closing = new AbortController();

  constructor(
    private readonly dataSource: DataSource,
    private readonly channel: string,
  ) {}

  /**
   * Calls `wake` when `id` is released, from now on. `ready` resolves once LISTEN is in place (or failed, or
   * the backend closed): only a look at the row after that cannot miss a release.
   */
  subscribe(id: string, wake: () => void): { ready: Promise<void>; unsubscribe: () => void } {
    let set = this.waiters.get(id);
    if (!set) this.waiters.set(id, (set = new Set()));
    set.add(wake);
    this.cancelIdleRelease();
    const unsubscribe = (): void => {
      const waiting = this.waiters.get(id);
      waiting?.delete(wake);
      if (waiting?.size === 0) this.waiters.delete(id);
      if (this.waiters.size === 0) this.scheduleIdleRelease();
    };
    return { ready: this.listen().then(() => undefined), unsubscribe };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort(new Error('the lock backend is closing'));
    this.cancelIdleRelease();
    this.wakeAll();
    await this.stop();
  }

  private listen(): Promise<Listening | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    this.listening ??= this.start().catch(() => {
      this.listening = undefined;
      return undefined;
    });
    return this.listening;
  }

  private async start(): Promise<Listening> {
    const runner = this.dataSource.createQueryRunner();
    const connection = (await connectUnlessAborted(runner, this.closing.signal)) as NotifyingConnection;
    const notified = (message: { channel: string; payload?: string }): void => {
      if (message.channel !== this.channel || message.payload === undefined) return;
      for (const wake of [...(this.waiters.get(message.payload) ?? [])]) wake();
    };
    const broken = (): void => {
      detach();
      this.listening = undefined;
      void runner.release().catch(() => undefined);
      this.wakeAll();
    };
    const detach = (): void => {
      connection.removeListener('notification', notified);
      connection.removeListener('error', broken);
      connection.removeListener('end', broken);
    };
    connection.on('notification', notified);
    connection.on('error', broken);
    connection.on('end', broken);
    try {
      await runner.query(`LISTEN ${this.dataSource.driver.escape(this.channel)}`);
    } catch (error) {
      detach();
      await runner.release().catch(() => undefined);
      throw error;
    }
    return { runner, detach };
  }

  private async stop(): Promise<void> {
    const pending = this.listening;
    this.listening = undefined;
    const listening = await pending;
    if (!listening) return;
    listening.detach();
    if (listening.runner.isReleased) return;
    // UNLISTEN before the connection goes back to the pool, or its next user would receive our notifications.
    await listening.runner.query('UNLISTEN *').catch(() => undefined);
    await listening.runner.release().catch(() => undefined);
  }

  private wakeAll(): void {
    for (const set of [...this.waiters.values()]) for (const wake of [...set]) wake();
  }

  private scheduleIdleRelease(): void {
    this.cancelIdleRelease();
    this.idleTimer = setTimeout(() => {
      if (this.waiters.size === 0) void this.stop();
    }, IDLE_RELEASE_MS);
    this.idleTimer.unref();
  }

  private cancelIdleRelease(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}
