import type { ConnectionChange } from '../lock-backend';
import { describeCause, isConnectionError } from './errors';

/**
 * The backend's link to the database as its statements see it: the first statement that fails for want of a
 * connection reports `suspended`, the next one that succeeds `reconnected`. Failed statements that reached
 * the database (a constraint, a missing table) say nothing about the link and change nothing.
 */
export class ConnectionState {
  private readonly listeners = new Set<(change: ConnectionChange) => void>();
  private suspended = false;

  watch(listener: (change: ConnectionChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  succeeded(): void {
    if (!this.suspended) return;
    this.suspended = false;
    this.emit({ state: 'reconnected' });
  }

  failed(error: unknown): void {
    if (this.suspended || !isConnectionError(error)) return;
    this.suspended = true;
    this.emit({ state: 'suspended', reason: `the database cannot be reached (${describeCause(error)})` });
  }

  private emit(change: ConnectionChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch {
        // One listener's failure must not keep the others from hearing about the change.
      }
    }
  }
}
