import type { Redis } from 'ioredis';

/**
 * Commands gathered into one socket write at most: a batch written whole only at the end of the tick would
 * leave Redis idle while the client builds it, and the client idle while Redis answers it. 16 measured best
 * (8, 16, 32 and the whole tick tried) with 64 loops on one connection.
 */
export const MAX_BATCH = 16;

/**
 * Gathers the commands one connection is asked to send in the same tick into few socket writes, as ioredis's
 * own auto-pipelining would, but for our calls only and on the user's client as it is configured. ioredis writes
 * each command to the socket at once, one system call each: with many locks taken at once over one connection
 * that, not Redis, is what limits a cycle.
 *
 * Nagle's rule decides when: a command sent while nothing is outstanding on the connection is written at once,
 * so a lone caller waits for nothing; one sent while replies are due (the connection is busy anyway) is held
 * with the rest of its tick, and written when the tick ends or the batch is full. Nothing is reordered: the
 * socket keeps the order of writes, and every held write is flushed before the next I/O, so no command can
 * stay held.
 */
export class WriteBatcher {
  private open: { readonly stream: Redis['stream']; written: number } | undefined;

  constructor(private readonly client: Redis) {}

  /** Called just before a command is handed to the client. */
  beforeSend(): void {
    const { stream } = this.client;
    const open = this.open;
    if (open !== undefined && open.stream === stream) {
      if (++open.written < MAX_BATCH) return;
      // Full: write what is held, and hold the rest of the tick in a new batch.
      stream.uncork();
      stream.cork();
      open.written = 1;
      return;
    }
    if (stream === undefined || this.client.commandQueue.length === 0) return;
    stream.cork();
    const batch = { stream, written: 1 };
    this.open = batch;
    process.nextTick(() => {
      if (this.open === batch) this.open = undefined;
      stream.uncork();
    });
  }
}
