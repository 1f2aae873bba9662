import type { Redis } from 'ioredis';

/**
 * Commands held at most before a batch is written mid-tick: a batch written whole only at the end of the tick
 * would leave Redis idle while the client builds it, and the client idle while Redis answers it. 16 measured
 * best (8, 16, 32 and the whole tick tried) with 64 loops on one connection.
 */
export const MAX_BATCH = 16;

/**
 * The scheduler that ends a batch, taken when this module loads: a test that fakes timers afterwards
 * (jest.useFakeTimers() fakes process.nextTick too) would otherwise hold the user's socket corked until its
 * fake clock moves — their own commands on the shared client included.
 */
const endOfTick: (callback: () => void) => void = process.nextTick;
/** Faked already when this module loaded (@sinonjs/fake-timers marks what it fakes): then nothing is batched. */
const canBatch = !('clock' in endOfTick);

/** One per client: two backends on one client share its batches, so the cork count stays at one. */
const batchers = new WeakMap<Redis, WriteBatcher>();

/**
 * Gathers the commands one connection is asked to send in the same tick into few socket writes, as ioredis's
 * own auto-pipelining would, but for our calls only and on the user's client as it is configured. ioredis writes
 * each command to the socket at once, one system call each: with many locks taken at once over one connection
 * that, not Redis, is what limits a cycle.
 *
 * Nagle's rule decides when: a command sent while nothing is outstanding on the connection is written at once,
 * so a lone caller waits for nothing; one sent while replies are due (the connection is busy anyway) is held
 * with the rest of its tick, and written when the tick ends or MAX_BATCH are held. Nothing is reordered: the
 * socket keeps the order of writes, and every held write is flushed before the next I/O, so no command can
 * stay held.
 */
export class WriteBatcher {
  private open: { readonly stream: Redis['stream']; held: number } | undefined;

  static for(client: Redis): WriteBatcher {
    let batcher = batchers.get(client);
    if (!batcher) {
      batcher = new WriteBatcher(client);
      batchers.set(client, batcher);
    }
    return batcher;
  }

  private constructor(private readonly client: Redis) {}

  /** Called just before a command is handed to the client. */
  beforeSend(): void {
    const { stream } = this.client;
    const open = this.open;
    if (open !== undefined && open.stream === stream) {
      if (open.held === MAX_BATCH) {
        // Full: write what is held, and hold the rest of the tick in a new batch.
        stream.uncork();
        stream.cork();
        open.held = 0;
      }
      open.held++;
      return;
    }
    if (!canBatch || stream === undefined || this.client.commandQueue.length === 0) return;
    stream.cork();
    const batch = { stream, held: 1 };
    this.open = batch;
    endOfTick(() => {
      if (this.open === batch) this.open = undefined;
      stream.uncork();
    });
  }
}
