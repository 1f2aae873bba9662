import type { ConnectionChange } from '../lock-backend';
import { quorumOf } from './quorum';
import type { RedisNode } from './redis-node';

/**
 * Turns the nodes' connection events into the core's connection states: `suspended` as soon as fewer than a
 * quorum of nodes are connected (no lock can be taken, extended or trusted to be extendable), `reconnected`
 * when a quorum is back. Nothing here can tell that a held lock is gone — keys expire on the server — so `lost`
 * is never reported; the core's validity timer and failed extensions cover that.
 */
export class ConnectionWatch {
  private readonly listeners = new Set<(change: ConnectionChange) => void>();
  private readonly detach: Array<() => void> = [];
  private suspended = false;

  constructor(private readonly nodes: readonly RedisNode[]) {
    for (const node of nodes) {
      const update = (): void => this.update();
      node.client.on('ready', update);
      node.client.on('close', update);
      node.client.on('end', update);
      this.detach.push(() => {
        node.client.off('ready', update);
        node.client.off('close', update);
        node.client.off('end', update);
      });
    }
  }

  watch(listener: (change: ConnectionChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    for (const off of this.detach.splice(0)) off();
    this.listeners.clear();
  }

  private update(): void {
    const down = this.nodes.filter((node) => !node.connected);
    const withoutQuorum = this.nodes.length - down.length < quorumOf(this.nodes.length);
    if (withoutQuorum === this.suspended) return;
    this.suspended = withoutQuorum;
    const change: ConnectionChange = withoutQuorum
      ? {
          state: 'suspended',
          reason:
            `${down.length} of ${this.nodes.length} Redis nodes are disconnected (${down.map((n) => n.label).join(', ')}); ` +
            `a quorum of ${quorumOf(this.nodes.length)} is needed.`,
        }
      : { state: 'reconnected' };
    for (const listener of [...this.listeners]) listener(change);
  }
}
