import type { ZooKeeperConnection } from './zookeeper-connection';
import { lifetimeController } from './lifetime';
import { ZooKeeperReplyError } from './zookeeper-errors';

/**
 * Waits for znodes to be deleted, with at most one ZooKeeper watch per path however many waits ask for it.
 * node-zookeeper-client cannot remove a watch, so a wait that ends by timeout leaves its watch set; the next wait
 * on that path reuses it instead of piling up another (a contender re-waits on the same predecessor every time
 * its polling pause runs out).
 */
export class DeletionWatches {
  /** Paths with a live watch (or one being set), and who waits for each. Watches die with their session. */
  private readonly waiting = new Map<string, Set<() => void>>();
  private readonly lifetime = lifetimeController();
  private generation: number;

  constructor(
    private readonly connection: ZooKeeperConnection,
    private readonly notFound: number,
  ) {
    this.generation = connection.generation;
  }

  /**
   * Resolves when `path` is deleted or found gone, after `timeoutMs`, when `signal` aborts, or when the session
   * is lost (wakeAll). Never rejects: a failure to set the watch leaves the timeout as the way out.
   */
  untilDeleted(path: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    this.forgetOldSession();
    return new Promise<void>((resolve) => {
      let waiters = this.waiting.get(path);
      const setWatch = waiters === undefined;
      if (!waiters) {
        waiters = new Set();
        this.waiting.set(path, waiters);
      }
      const mine = waiters;
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        mine.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      signal.addEventListener('abort', done, { once: true });
      mine.add(done);
      if (setWatch) this.watch(path, mine);
    });
  }

  /** Wakes every wait: the session they watched on is gone, so their watches will never fire. */
  wakeAll(): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiters of all) for (const wake of [...waiters]) wake();
  }

  close(): void {
    this.lifetime.abort();
    this.wakeAll();
  }

  /** Sets the watch the way Curator does: getData with a watcher, which fails with NO_NODE if it is gone. */
  private watch(path: string, waiters: Set<() => void>): void {
    const fire = (): void => {
      if (this.waiting.get(path) === waiters) this.waiting.delete(path);
      for (const wake of [...waiters]) wake();
    };
    this.connection
      .call<Buffer>('watch the node ahead in line', this.lifetime.signal, (client, reply) =>
        client.getData(path, fire, (error, data) => reply(error, data)),
      )
      .catch((error: unknown) => {
        if (error instanceof ZooKeeperReplyError && error.code === this.notFound) {
          fire();
          return;
        }
        // No watch was set: later waits on this path must try again; these ones end by their timeout.
        if (this.waiting.get(path) === waiters) this.waiting.delete(path);
      });
  }

  private forgetOldSession(): void {
    if (this.generation === this.connection.generation) return;
    this.generation = this.connection.generation;
    this.wakeAll();
  }
}
