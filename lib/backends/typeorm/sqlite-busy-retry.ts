import { setTimeout as sleep } from 'node:timers/promises';
import type { DataSourceOptions } from 'typeorm';
import { driverError } from './dialect';

/** How long bootstrap keeps trying while SQLite refuses with SQLITE_BUSY; past it, init fails as before. */
export const SQLITE_BUSY_INIT_BUDGET_MS = 10_000;
const FIRST_PAUSE_MS = 10;
const LONGEST_PAUSE_MS = 200;

/**
 * Runs an idempotent bootstrap step (connecting, creating the table) again while SQLite answers SQLITE_BUSY.
 * Two processes that open one file at once (two instances of one app, with `enableWAL`) both ask to switch it
 * to WAL; SQLite refuses one of them at once, without waiting its busy timeout, because waiting could
 * deadlock. That refusal means "try again". Nothing is half-taken: a refused step changed nothing. The pauses
 * are jittered so two refused processes do not collide again, and keep the process alive: a plain script
 * awaiting init() must not exit in one. The signal stops the retries; the last refusal is what the caller sees.
 */
export async function retryWhileSqliteBusy<T>(step: () => Promise<T>, signal: AbortSignal): Promise<T> {
  const giveUpAt = performance.now() + SQLITE_BUSY_INIT_BUDGET_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (!isSqliteBusy(error) || signal.aborted || performance.now() >= giveUpAt) throw error;
      const ceiling = Math.min(LONGEST_PAUSE_MS, FIRST_PAUSE_MS * 2 ** attempt);
      await sleep(ceiling / 2 + Math.random() * (ceiling / 2), undefined, { signal }).catch(() => {
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

/** better-sqlite3's Database, as TypeORM's driver hands it to `prepareDatabase`. */
interface SqliteHandle {
  readonly open: boolean;
  close(): unknown;
}

/**
 * TypeORM's better-sqlite3 driver opens the file, then switches it to WAL; when that switch is refused it throws
 * without closing what it opened. Each refused start would leave a file handle behind, one per retry. This
 * remembers the handle the driver opened last (through `prepareDatabase`, which runs before the switch) so a
 * refused start can close it.
 */
export class SqliteHandles {
  private last: SqliteHandle | undefined;

  /** The options with the user's `prepareDatabase` (if any) still called, after the handle is noted. */
  track(options: DataSourceOptions): DataSourceOptions {
    if (options.type !== 'better-sqlite3') return options;
    const prepare = options.prepareDatabase;
    return {
      ...options,
      prepareDatabase: async (db: SqliteHandle) => {
        this.last = db;
        await prepare?.(db);
      },
    };
  }

  /** Closes the handle a refused start left open. */
  closeLeftOpen(): void {
    const left = this.last;
    this.last = undefined;
    if (left?.open) left.close();
  }
}
