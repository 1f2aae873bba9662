import { lifetimeController } from './lifetime';

/**
 * Work that must outlive the call that started it: creates whose caller left, and deletes of our nodes nobody
 * waits for any more. On a client the user passed in, our nodes outlive this backend (the user's session goes
 * on), so close() waits for this work instead of cutting it short; `signal` ends it once it is pointless (an
 * owned session closes, deleting its nodes) or past its deadline.
 */
export class BackgroundWork {
  private readonly running = new Set<Promise<void>>();
  private readonly controller = lifetimeController();

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Tracks `work` until it settles; its failure is its own business (it retries or gives up by itself). */
  track(work: Promise<unknown>): void {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    this.running.add(settled);
    void settled.finally(() => this.running.delete(settled));
  }

  /**
   * Resolves once no tracked work is left — work that ends by starting more (a create whose node must then be
   * deleted) is waited for as well — or when `deadline` aborts.
   */
  async settle(deadline: AbortSignal): Promise<void> {
    const expired = new Promise<void>((resolve) => {
      if (deadline.aborted) resolve();
      deadline.addEventListener('abort', () => resolve(), { once: true });
    });
    while (this.running.size > 0 && !deadline.aborted) {
      await Promise.race([Promise.allSettled([...this.running]), expired]);
    }
  }

  /** Ends the work: its calls are cancelled and its retries stop. */
  stop(): void {
    this.controller.abort();
  }
}
