import { driverError } from './dialect';
import { pause } from './abortable';

/** How long bootstrap keeps trying while SQLite refuses with SQLITE_BUSY; past it, init fails as before. */
export const SQLITE_BUSY_INIT_BUDGET_MS = 10_000;
const FIRST_PAUSE_MS = 10;
const LONGEST_PAUSE_MS = 200;

/**
 * Runs an idempotent bootstrap step (connecting, creating the table) again while SQLite answers SQLITE_BUSY.
 * Two processes that open one file at once (two instances of one app, with `enableWAL`) both ask to switch it
 * to WAL; SQLite refuses one of them at once, without waiting its busy timeout, because waiting could
 * deadlock. That refusal means "try again". Nothing is half-taken: a refused step changed nothing. The pauses
 * are jittered so two refused processes do not collide again; the signal stops the retries, and the last
 * refusal is what the caller sees.
 */
export async function retryWhileSqliteBusy<T>(step: () => Promise<T>, signal: AbortSignal): Promise<T> {
  const giveUpAt = Date.now() + SQLITE_BUSY_INIT_BUDGET_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (!isSqliteBusy(error) || signal.aborted || Date.now() >= giveUpAt) throw error;
      const ceiling = Math.min(LONGEST_PAUSE_MS, FIRST_PAUSE_MS * 2 ** attempt);
      await pause(ceiling / 2 + Math.random() * (ceiling / 2), signal).catch(() => {
        throw error;
      });
    }
  }
}

function isSqliteBusy(error: unknown): boolean {
  const code = driverError(error).code;
  // SQLITE_BUSY and its extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_RECOVERY, SQLITE_BUSY_TIMEOUT).
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}
