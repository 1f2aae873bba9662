import { setMaxListeners } from 'node:events';
import type { ZooKeeperConnection } from './zookeeper-connection';
import { lifetimeController } from './lifetime';

/**
 * Deletes lock parents this backend created once they have stayed unused for `delay` ms — what the server does
 * by itself for container nodes, which node-zookeeper-client cannot create. Using a key again within the delay
 * keeps its parent, so a hot key costs no extra request. The delete is a plain `delete` without version: the
 * server refuses it (NOT_EMPTY) while any contender's node is inside, and a contender that finds the parent gone
 * re-creates it (as it must for Curator's containers anyway).
 */
export class EmptyParents {
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private readonly lifetime = lifetimeController();

  constructor(
    private readonly connection: ZooKeeperConnection,
    private readonly delay: number,
  ) {}

  /** The parent is in use: keep it. */
  keep(parent: string): void {
    const timer = this.pending.get(parent);
    if (timer) clearTimeout(timer);
    this.pending.delete(parent);
  }

  /** The parent may be empty now: delete it later if it still is. */
  later(parent: string): void {
    this.keep(parent);
    const timer = setTimeout(() => {
      this.pending.delete(parent);
      void this.remove(parent);
    }, this.delay);
    timer.unref();
    this.pending.set(parent, timer);
  }

  /** Deletes every parent still waiting for its delay (on close), within `budgetMs`. */
  async flush(budgetMs: number): Promise<void> {
    const parents = [...this.pending.keys()];
    for (const parent of parents) this.keep(parent);
    const deadline = AbortSignal.timeout(budgetMs);
    setMaxListeners(0, deadline);
    await Promise.all(parents.map((parent) => this.remove(parent, deadline)));
    this.lifetime.abort();
  }

  private async remove(parent: string, signal = this.lifetime.signal): Promise<void> {
    try {
      await this.connection.call<void>('delete an empty lock parent', signal, (client, reply) =>
        client.remove(parent, -1, (error) => reply(error)),
      );
    } catch {
      // NOT_EMPTY (in use again), NO_NODE (gone already) or no connection: nothing to clean, or a later release will.
    }
  }
}
